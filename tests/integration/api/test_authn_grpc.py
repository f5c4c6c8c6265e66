"""Authentication over a real gRPC server: mTLS principals, TLS refusals, API keys, exemptions.

No OpenBao or database: a tiny generic service answers with ``current_principal().name`` (and
its role under the test policy, for the certificates with several SANs).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.pki_support import issue, spiffe
from vault.api._authn import (
    DEFAULT_EXEMPT,
    ApiKeyStore,
    Authenticator,
    AuthInterceptor,
    channel_credentials,
    current_principal,
    new_api_key,
    server_credentials,
)
from vault.devcerts import DevPki, generate_dev_pki
from vault.errors import PermissionDenied
from vault.policy import load_policy

ROLES = ("backend-service", "support-agent", "ai-pipeline", "fraud-analyst", "dpo", "key-admin")
TIMEOUT = 5.0
#: the test policy: spiffe://cvault.dev/<role> has <role>; the mTLS server picks among SANs by it
POLICY = load_policy(Path(__file__).resolve().parents[2] / "data" / "policy.yaml")


# --- a tiny service ---------------------------------------------------------------------------


def _name() -> bytes:
    return current_principal().name.encode()


def who(request: bytes, context: grpc.ServicerContext) -> bytes:
    return _name()


def who_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    # A generator: its body runs lazily while grpcio iterates the response stream.
    yield _name()
    yield _name()


def who_client_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    return b"%s x%d" % (_name(), sum(1 for _ in requests))


def who_bidi(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    for _ in requests:
        yield _name()


def parsed(request: tuple[str, bytes], context: grpc.ServicerContext) -> str:
    return f"{request[0]}:{request[1].decode()}:{current_principal().name}"


def role(request: bytes, context: grpc.ServicerContext) -> bytes:
    """``<principal> <its role under POLICY, or the reason it has none>``."""
    try:
        held = POLICY.role_of(current_principal()).name
    except PermissionDenied as exc:
        held = exc.reason
    return f"{current_principal().name} {held}".encode()


def peek(request: bytes, context: grpc.ServicerContext) -> bytes:
    try:
        return b"set:" + _name()
    except Exception:
        return b"unset"


def _handlers() -> tuple[grpc.GenericRpcHandler[Any, Any], ...]:
    echo = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Who": grpc.unary_unary_rpc_method_handler(who),
            "Role": grpc.unary_unary_rpc_method_handler(role),
            "WhoStream": grpc.unary_stream_rpc_method_handler(who_stream),
            "WhoClientStream": grpc.stream_unary_rpc_method_handler(who_client_stream),
            "WhoBidi": grpc.stream_stream_rpc_method_handler(who_bidi),
            "Parsed": grpc.unary_unary_rpc_method_handler(
                parsed,
                request_deserializer=lambda b: ("custom", b),
                response_serializer=lambda s: s.encode(),
            ),
        },
    )
    opened = grpc.method_handlers_generic_handler(
        "test.Open", {"Peek": grpc.unary_unary_rpc_method_handler(peek)}
    )
    return echo, opened


@dataclass
class Denials:
    calls: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, reason: str, peer: str) -> None:
        self.calls.append((reason, peer))


@dataclass
class Served:
    server: grpc.Server
    port: int
    denials: Denials

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def serve(
    authenticator: Authenticator, denials: Denials, creds: grpc.ServerCredentials | None
) -> Served:
    # One worker: consecutive calls run on the same thread (see
    # test_principal_does_not_leak_into_the_next_call).
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=1),
        interceptors=[AuthInterceptor(authenticator, exempt=(*DEFAULT_EXEMPT, "/test.Open/"))],
    )
    server.add_generic_rpc_handlers(_handlers())
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    listen = "127.0.0.1:0"
    port = server.add_secure_port(listen, creds) if creds else server.add_insecure_port(listen)
    server.start()
    return Served(server, port, denials)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return generate_dev_pki(tmp_path_factory.mktemp("pki"), roles=ROLES)


@pytest.fixture(scope="module")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    """Same role names and trust domain, another CA."""
    return generate_dev_pki(tmp_path_factory.mktemp("foreign"), roles=ROLES)


def _server_creds(pki: DevPki, *, require_client_auth: bool) -> grpc.ServerCredentials:
    return server_credentials(
        cert_chain=pki.server.cert.read_bytes(),
        private_key=pki.server.key.read_bytes(),
        client_ca=pki.ca.cert.read_bytes(),
        require_client_auth=require_client_auth,
    )


@pytest.fixture(scope="module")
def mtls_server(pki: DevPki) -> Iterator[Served]:
    """As vault.app builds it: the policy picks among a certificate's several SANs."""
    denials = Denials()
    auth = Authenticator(
        api_keys=None,
        allow_mtls=True,
        known_principals=lambda: POLICY.principals,
        on_denied=denials,
    )
    served = serve(auth, denials, _server_creds(pki, require_client_auth=True))
    yield served
    served.server.stop(0).wait()


@pytest.fixture(scope="module")
def tls_server(pki: DevPki) -> Iterator[Served]:
    """TLS, but client certificates not required (so grpcio does not ask for them)."""
    denials = Denials()
    auth = Authenticator(api_keys=None, allow_mtls=True, on_denied=denials)
    served = serve(auth, denials, _server_creds(pki, require_client_auth=False))
    yield served
    served.server.stop(0).wait()


@pytest.fixture(scope="module")
def api_key() -> tuple[str, dict[str, str]]:
    return new_api_key("ci-runner")


@pytest.fixture(scope="module")
def apikey_server(api_key: tuple[str, dict[str, str]]) -> Iterator[Served]:
    denials = Denials()
    store = ApiKeyStore({"ci-runner": api_key[1], "other": new_api_key("other")[1]})
    auth = Authenticator(api_keys=store, allow_mtls=False, on_denied=denials)
    served = serve(auth, denials, None)
    yield served
    served.server.stop(0).wait()


@pytest.fixture(autouse=True)
def _fresh_denials(request: pytest.FixtureRequest) -> None:
    for name in ("mtls_server", "tls_server", "apikey_server"):
        if name in request.fixturenames:
            request.getfixturevalue(name).denials.calls.clear()


def tls_channel(served: Served, pki: DevPki, client: DevPki | None, role: str) -> grpc.Channel:
    pair = client.clients[role] if client is not None else None
    creds = channel_credentials(
        ca=pki.ca.cert.read_bytes(),
        client_cert=pair.cert.read_bytes() if pair else None,
        client_key=pair.key.read_bytes() if pair else None,
    )
    return grpc.secure_channel(served.address, creds)


# Calls send and receive raw bytes. The ``None, None`` after each method name are the request
# serializer and response deserializer: grpcio defaults them to None, but grpc-stubs requires them.
def call(
    channel: grpc.Channel,
    method: str = "/test.Echo/Who",
    metadata: tuple[tuple[str, str], ...] = (),
) -> bytes:
    reply: bytes = channel.unary_unary(method, None, None)(b"", timeout=TIMEOUT, metadata=metadata)
    return reply


def all_kinds(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> list[bytes]:
    """One call of each RPC kind; returns their responses."""
    return [
        channel.unary_unary("/test.Echo/Who", None, None)(b"", timeout=TIMEOUT, metadata=metadata),
        *channel.unary_stream("/test.Echo/WhoStream", None, None)(
            b"", timeout=TIMEOUT, metadata=metadata
        ),
        channel.stream_unary("/test.Echo/WhoClientStream", None, None)(
            iter([b"a", b"b"]), timeout=TIMEOUT, metadata=metadata
        ),
        *channel.stream_stream("/test.Echo/WhoBidi", None, None)(
            iter([b"a", b"b"]), timeout=TIMEOUT, metadata=metadata
        ),
    ]


def invoke(channel: grpc.Channel, method: str, metadata: tuple[tuple[str, str], ...]) -> None:
    """Call ``method`` with the multi-callable of its kind and drain any response stream."""
    if method.endswith("Who"):
        channel.unary_unary(method, None, None)(b"", timeout=TIMEOUT, metadata=metadata)
    elif method.endswith("WhoStream"):
        list(channel.unary_stream(method, None, None)(b"", timeout=TIMEOUT, metadata=metadata))
    elif method.endswith("ClientStream"):
        channel.stream_unary(method, None, None)(iter([b"x"]), timeout=TIMEOUT, metadata=metadata)
    else:
        list(
            channel.stream_stream(method, None, None)(
                iter([b"x"]), timeout=TIMEOUT, metadata=metadata
            )
        )


# --- mTLS -------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_role_certificate_authenticates_as_its_spiffe_id(
    mtls_server: Served, pki: DevPki, role: str
) -> None:
    with tls_channel(mtls_server, pki, pki, role) as ch:
        assert call(ch) == f"spiffe://cvault.dev/{role}".encode()
    assert mtls_server.denials.calls == []


def test_every_rpc_kind_sees_the_principal(mtls_server: Served, pki: DevPki) -> None:
    name = b"spiffe://cvault.dev/dpo"
    with tls_channel(mtls_server, pki, pki, "dpo") as ch:
        assert all_kinds(ch) == [name, name, name, name + b" x2", name, name]


def test_custom_deserializer_and_serializer_are_kept(mtls_server: Served, pki: DevPki) -> None:
    with tls_channel(mtls_server, pki, pki, "dpo") as ch:
        assert ch.unary_unary("/test.Echo/Parsed", None, None)(b"hi", timeout=TIMEOUT) == (
            b"custom:hi:spiffe://cvault.dev/dpo"
        )


def test_certificate_from_another_ca_is_refused_by_tls(
    mtls_server: Served, pki: DevPki, foreign_pki: DevPki
) -> None:
    with (
        tls_channel(mtls_server, pki, foreign_pki, "dpo") as ch,
        pytest.raises(grpc.RpcError) as err,
    ):
        call(ch)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # Refused in the handshake: no handler ran, so there is nothing to audit at this layer.
    assert mtls_server.denials.calls == []


def test_no_client_certificate_is_refused_by_tls_when_required(
    mtls_server: Served, pki: DevPki
) -> None:
    with tls_channel(mtls_server, pki, None, "dpo") as ch, pytest.raises(grpc.RpcError) as err:
        call(ch)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_health_check_needs_no_client_credentials_beyond_tls(
    mtls_server: Served, pki: DevPki
) -> None:
    # With require_client_auth the handshake itself needs a certificate; exemption only skips
    # the principal check.
    with tls_channel(mtls_server, pki, pki, "dpo") as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# --- several SANs, and SAN types ---------------------------------------------------------------


def call_with(served: Served, pki: DevPki, sans: Sequence[x509.GeneralName]) -> bytes:
    """Call ``Role`` presenting a certificate with ``sans``."""
    cert, key = issue(pki, sans)
    creds = channel_credentials(ca=pki.ca.cert.read_bytes(), client_cert=cert, client_key=key)
    with grpc.secure_channel(served.address, creds) as ch:
        return call(ch, "/test.Echo/Role")


def test_two_uri_sans_both_in_the_policy_are_refused(mtls_server: Served, pki: DevPki) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call_with(mtls_server, pki, [spiffe("dpo"), spiffe("backend-service")])
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == "unauthenticated: ambiguous_identity"
    [(reason, peer)] = mtls_server.denials.calls
    assert reason == "ambiguous_identity"
    assert peer.startswith("ipv4:127.0.0.1:")


@pytest.mark.parametrize("stranger_first", [True, False], ids=["stranger-first", "dpo-first"])
def test_of_two_uri_sans_the_one_in_the_policy_gets_its_role(
    mtls_server: Served, pki: DevPki, stranger_first: bool
) -> None:
    sans = [spiffe("stranger"), spiffe("dpo")]
    assert "spiffe://cvault.dev/stranger" not in POLICY.principals
    reply = call_with(mtls_server, pki, sans if stranger_first else sans[::-1])
    assert reply == b"spiffe://cvault.dev/dpo dpo"
    assert mtls_server.denials.calls == []


def test_a_dns_san_spelled_like_a_spiffe_id_does_not_get_that_role(
    mtls_server: Served, pki: DevPki
) -> None:
    reply = call_with(mtls_server, pki, [x509.DNSName("spiffe://cvault.dev/dpo")])
    assert reply == b"dns:spiffe://cvault.dev/dpo unknown_principal"


def test_a_uri_and_a_dns_san_spelled_alike_are_two_principals(
    mtls_server: Served, pki: DevPki
) -> None:
    # The URI is in the policy, the DNS name (dns:spiffe://...) is not: the URI is chosen.
    reply = call_with(mtls_server, pki, [x509.DNSName("spiffe://cvault.dev/dpo"), spiffe("dpo")])
    assert reply == b"spiffe://cvault.dev/dpo dpo"


@pytest.mark.parametrize(
    ("sans", "reason"),
    [
        pytest.param(
            [spiffe("stranger"), x509.DNSName("stranger.example")],
            "ambiguous_identity",
            id="several-none-in-policy",
        ),
        pytest.param(
            [x509.UniformResourceIdentifier("apikey:dev-dpo")],
            "bad_client_certificate",
            id="uri-san-spelled-like-an-api-key",
        ),
        pytest.param(
            [spiffe("dpo"), x509.UniformResourceIdentifier("dns:backend.acme.internal")],
            "bad_client_certificate",
            id="uri-san-spelled-like-a-dns-principal",
        ),
    ],
)
def test_certificates_naming_no_clear_principal_are_refused_and_reported(
    mtls_server: Served, pki: DevPki, sans: list[x509.GeneralName], reason: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call_with(mtls_server, pki, sans)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == f"unauthenticated: {reason}"
    assert [r for r, _ in mtls_server.denials.calls] == [reason]


# --- TLS without client certificates ----------------------------------------------------------


@pytest.mark.parametrize("with_cert", [False, True], ids=["no-cert", "cert-not-requested"])
def test_tls_without_client_auth_and_without_api_key_is_unauthenticated(
    tls_server: Served, pki: DevPki, with_cert: bool
) -> None:
    # grpcio's require_client_auth=False does not request a client certificate at all, so one
    # configured on the channel is never sent and cannot identify the caller.
    with (
        tls_channel(tls_server, pki, pki if with_cert else None, "dpo") as ch,
        pytest.raises(grpc.RpcError) as err,
    ):
        call(ch)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == "unauthenticated: missing_credentials"
    [(reason, peer)] = tls_server.denials.calls
    assert reason == "missing_credentials"
    assert peer.startswith("ipv4:127.0.0.1:")


# --- API keys ---------------------------------------------------------------------------------


def test_good_api_key_authenticates_every_rpc_kind(
    apikey_server: Served, api_key: tuple[str, dict[str, str]]
) -> None:
    name = b"apikey:ci-runner"
    with grpc.insecure_channel(apikey_server.address) as ch:
        got = all_kinds(ch, metadata=(("x-api-key", api_key[0]),))
    assert got == [name, name, name, name + b" x2", name, name]
    assert apikey_server.denials.calls == []


@pytest.mark.parametrize(
    "method",
    ["/test.Echo/Who", "/test.Echo/WhoStream", "/test.Echo/WhoClientStream", "/test.Echo/WhoBidi"],
)
def test_bad_api_key_is_unauthenticated_and_reported(
    apikey_server: Served, api_key: tuple[str, dict[str, str]], method: str
) -> None:
    wrong = api_key[0][:-1] + ("A" if api_key[0][-1] != "A" else "B")
    md = (("x-api-key", wrong),)
    with grpc.insecure_channel(apikey_server.address) as ch, pytest.raises(grpc.RpcError) as err:
        invoke(ch, method, md)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == "unauthenticated: bad_api_key"
    assert wrong not in str(err.value)
    [(reason, peer)] = apikey_server.denials.calls
    assert reason == "bad_api_key"
    assert peer.startswith("ipv4:127.0.0.1:")


def test_no_api_key_is_unauthenticated(apikey_server: Served) -> None:
    with grpc.insecure_channel(apikey_server.address) as ch, pytest.raises(grpc.RpcError) as err:
        call(ch)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == "unauthenticated: missing_credentials"
    assert apikey_server.denials.calls[0][0] == "missing_credentials"


def test_health_check_is_exempt(apikey_server: Served) -> None:
    with grpc.insecure_channel(apikey_server.address) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert apikey_server.denials.calls == []


def test_unknown_method_is_unimplemented_not_authenticated(apikey_server: Served) -> None:
    with grpc.insecure_channel(apikey_server.address) as ch, pytest.raises(grpc.RpcError) as err:
        call(ch, "/test.Echo/Nope")
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_principal_does_not_leak_into_the_next_call(
    apikey_server: Served, api_key: tuple[str, dict[str, str]]
) -> None:
    md = (("x-api-key", api_key[0]),)
    with grpc.insecure_channel(apikey_server.address) as ch:
        for kind in ("/test.Echo/Who", "/test.Echo/WhoStream"):
            if kind.endswith("Stream"):
                assert list(ch.unary_stream(kind, None, None)(b"", timeout=TIMEOUT, metadata=md))
            else:
                assert call(ch, kind, metadata=md) == b"apikey:ci-runner"
            # Same (single) worker thread, exempt method: no principal may be visible. grpcio 1.85
            # also runs each RPC in a fresh contextvars.Context; the wrapper resets the variable
            # anyway (tests/unit/api/test_authn_interceptor.py checks that in one thread).
            assert call(ch, "/test.Open/Peek") == b"unset"
