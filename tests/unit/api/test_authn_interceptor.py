"""AuthInterceptor: which handlers it wraps, what the wrapper keeps, and when the principal is set.

The behaviors are called directly in this thread, so these tests see exactly what the wrapper
sets and resets (grpcio additionally gives each RPC a fresh ``contextvars.Context``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from vault.api._authn import (
    ApiKeyStore,
    Authenticator,
    AuthInterceptor,
    current_principal,
    new_api_key,
)
from vault.errors import Unauthenticated

KEY, ENTRY = new_api_key("unit")


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self, key: str | None) -> None:
        self._md = (("x-api-key", key),) if key is not None else ()
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._md

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def peer(self) -> str:
        return "ipv4:127.0.0.1:9"

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise Aborted

    def abort_with_status(self, status: grpc.Status) -> None:
        self.abort(status.code, status.details)


class Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def deserialize(b: bytes) -> str:
    return b.decode()


def serialize(s: str) -> bytes:
    return s.encode()


def who(request: Any, context: Any) -> str:
    return current_principal().name


def who_many(request: Any, context: Any) -> Iterator[str]:
    yield current_principal().name
    yield current_principal().name


FACTORIES: dict[str, tuple[Callable[..., grpc.RpcMethodHandler[Any, Any]], Callable[..., Any]]] = {
    "unary_unary": (grpc.unary_unary_rpc_method_handler, who),
    "unary_stream": (grpc.unary_stream_rpc_method_handler, who_many),
    "stream_unary": (grpc.stream_unary_rpc_method_handler, who),
    "stream_stream": (grpc.stream_stream_rpc_method_handler, who_many),
}


@pytest.fixture
def interceptor() -> AuthInterceptor:
    auth = Authenticator(api_keys=ApiKeyStore({"unit": ENTRY}), allow_mtls=False)
    return AuthInterceptor(auth)


def wrapped(interceptor: AuthInterceptor, kind: str, method: str = "/x.Y/Z") -> Any:
    factory, behavior = FACTORIES[kind]
    original = factory(behavior, request_deserializer=deserialize, response_serializer=serialize)
    handler = interceptor.intercept_service(lambda _: original, Details(method))  # type: ignore[arg-type]
    assert handler is not None
    return original, handler


@pytest.mark.parametrize("kind", FACTORIES)
def test_wrapper_keeps_kind_and_serializers(interceptor: AuthInterceptor, kind: str) -> None:
    original, handler = wrapped(interceptor, kind)
    assert handler is not original
    assert (handler.request_streaming, handler.response_streaming) == (
        original.request_streaming,
        original.response_streaming,
    )
    assert handler.request_deserializer is deserialize
    assert handler.response_serializer is serialize
    assert getattr(handler, kind) is not None


@pytest.mark.parametrize("kind", FACTORIES)
def test_principal_is_set_during_the_call_and_reset_after(
    interceptor: AuthInterceptor, kind: str
) -> None:
    _, handler = wrapped(interceptor, kind)
    result = getattr(handler, kind)(iter(["r"]), FakeContext(KEY))
    if kind.endswith("stream"):
        result = list(result)  # generator bodies run here, step by step
        assert result == ["apikey:unit", "apikey:unit"]
    else:
        assert result == "apikey:unit"
    with pytest.raises(Unauthenticated):
        current_principal()


def test_principal_is_reset_when_the_handler_raises(interceptor: AuthInterceptor) -> None:
    def boom(request: Any, context: Any) -> str:
        assert current_principal().name == "apikey:unit"
        raise RuntimeError("handler failed")

    original = grpc.unary_unary_rpc_method_handler(boom)
    handler = interceptor.intercept_service(lambda _: original, Details("/x.Y/Z"))  # type: ignore[arg-type]
    assert handler is not None
    assert handler.unary_unary is not None
    with pytest.raises(RuntimeError):
        handler.unary_unary(b"", FakeContext(KEY))  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated):
        current_principal()


def test_abandoned_stream_leaves_no_principal_behind(interceptor: AuthInterceptor) -> None:
    _, handler = wrapped(interceptor, "unary_stream")
    stream = handler.unary_stream(b"", FakeContext(KEY))
    assert next(stream) == "apikey:unit"  # a cancelled call stops iterating here
    with pytest.raises(Unauthenticated):
        current_principal()


@pytest.mark.parametrize("kind", FACTORIES)
@pytest.mark.parametrize(
    ("key", "reason"), [(None, "missing_credentials"), ("cvk_unit_" + "A" * 43, "bad_api_key")]
)
def test_refusal_aborts_unauthenticated_before_the_handler_runs(
    interceptor: AuthInterceptor, kind: str, key: str | None, reason: str
) -> None:
    _, handler = wrapped(interceptor, kind)
    context = FakeContext(key)
    with pytest.raises(Aborted):
        getattr(handler, kind)(iter(["r"]), context)
    assert context.aborted == (grpc.StatusCode.UNAUTHENTICATED, f"unauthenticated: {reason}")


@pytest.mark.parametrize(
    "method",
    [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    ],
)
def test_exempt_methods_pass_through_untouched(interceptor: AuthInterceptor, method: str) -> None:
    original, handler = wrapped(interceptor, "unary_unary", method)
    assert handler is original


def test_prefix_must_match_from_the_start(interceptor: AuthInterceptor) -> None:
    original, handler = wrapped(interceptor, "unary_unary", "/evil.grpc.health.v1.Health/Check")
    assert handler is not original


def test_unknown_method_stays_unknown(interceptor: AuthInterceptor) -> None:
    assert interceptor.intercept_service(lambda _: None, Details("/x.Y/Z")) is None  # type: ignore[arg-type]


def test_exempt_must_be_a_sequence_of_prefixes() -> None:
    auth = Authenticator(api_keys=ApiKeyStore({}), allow_mtls=False)
    with pytest.raises(TypeError):
        AuthInterceptor(auth, exempt="/grpc.health.v1.Health/")
