"""Small gRPC servers for the SDK tests: a fake vault service answering what a test scripts, and
a forwarding proxy in front of the real server that can lose an answer.

Both speak the real ``vault.v1`` wire (the generated messages), so the SDK cannot tell them
from the vault.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from typing import Any

import grpc

#: grpcio passes the client's own metadata plus these; a forward sends only the caller's key
FORWARDED_METADATA = ("x-api-key", "x-request-id")


class FakeServer:
    """A gRPC server on loopback whose handlers the test gives, by full method name
    (``/vault.v1.Records/GetRecord``), as grpcio method handlers."""

    def __init__(self, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((_ByName(handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(0).wait(5)

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# grpc-stubs makes GenericRpcHandler generic; grpcio's runtime class cannot be subscripted.
class _ByName(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def __init__(self, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]) -> None:
        self._handlers = dict(handlers)

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._handlers.get(handler_call_details.method)


def unary(
    behave: Callable[[Any, grpc.ServicerContext], Any], request_type: Any, response_type: Any
) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        behave,
        request_deserializer=request_type.FromString,
        response_serializer=response_type.SerializeToString,
    )


def stalling_stream(released: threading.Event) -> grpc.RpcMethodHandler[Any, Any]:
    """A bidirectional handler that reads nothing and answers nothing until the call ends (its
    deadline, a cancel) or ``released`` is set: a server that stalls."""

    def stall(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        while context.is_active() and not released.wait(0.05):
            pass
        yield from ()

    return grpc.stream_stream_rpc_method_handler(stall)


class LosingProxy:
    """Forwards unary calls to ``target`` as bytes; the first call of ``lose`` (a method name
    such as ``CreateRecord``) is forwarded, answered by the server, and then failed with
    UNAVAILABLE towards the client: an answer lost after the server committed."""

    def __init__(self, target: str, lose: str) -> None:
        self._channel = grpc.insecure_channel(target)
        self._lose = lose
        self._lost = False
        self.forwarded: list[tuple[str, bytes]] = []
        handler = _Forwarding(self)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def forward(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = tuple(
            (k, v) for k, v in context.invocation_metadata() if k in FORWARDED_METADATA
        )
        # no serializers: the bytes pass through as they came
        call = self._channel.unary_unary(method, None, None)
        try:
            response: bytes = call(request, metadata=metadata, timeout=context.time_remaining())
        except grpc.RpcError as exc:
            context.abort(exc.code(), exc.details() or "")
        self.forwarded.append((method, response))
        if method.endswith(f"/{self._lose}") and not self._lost:
            self._lost = True
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection lost (test proxy)")
        return response

    def close(self) -> None:
        self.server.stop(0).wait(5)
        self._channel.close()


class _Forwarding(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def __init__(self, proxy: LosingProxy) -> None:
        self._proxy = proxy

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: self._proxy.forward(method, request, context)
        )
