"""The mTLS principal: taken from the verified peer certificate in the call's auth context."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vault.api._authn import ApiKeyStore, Authenticator, new_api_key, principal_from_auth_context
from vault.errors import Unauthenticated
from vault.identity import AuthMethod, Principal


def pem_with(sans: Sequence[x509.GeneralName] | None) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cn-is-not-the-identity")])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


class FakeContext:
    def __init__(self, auth: dict[str, Any], metadata: Sequence[tuple[str, str]] = ()) -> None:
        self._auth = auth
        self._metadata = tuple(metadata)

    def auth_context(self) -> dict[str, Any]:
        return self._auth

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


def as_context(fake: FakeContext) -> grpc.ServicerContext:
    # FakeContext has just the methods the code under test calls on a ServicerContext.
    return cast(grpc.ServicerContext, fake)


def ctx(pem: bytes | None, *metadata: tuple[str, str]) -> grpc.ServicerContext:
    auth: dict[str, Any] = {"transport_security_type": [b"ssl"]}
    if pem is not None:
        auth["x509_pem_cert"] = [pem]
    return as_context(FakeContext(auth, metadata))


URI = x509.UniformResourceIdentifier("spiffe://cvault.dev/dpo")
DNS = x509.DNSName("backend.acme.internal")
EMAIL = x509.RFC822Name("dpo@example.com")


@pytest.mark.parametrize(
    ("sans", "name"),
    [
        ([URI], "spiffe://cvault.dev/dpo"),
        ([DNS, URI], "spiffe://cvault.dev/dpo"),  # URI preferred wherever it is
        ([DNS], "backend.acme.internal"),
        ([EMAIL, DNS, x509.DNSName("second.example")], "backend.acme.internal"),
        ([URI, x509.UniformResourceIdentifier("spiffe://cvault.dev/x")], "spiffe://cvault.dev/dpo"),
    ],
)
def test_principal_is_the_first_uri_san_else_the_first_dns_san(
    sans: list[x509.GeneralName], name: str
) -> None:
    assert principal_from_auth_context(ctx(pem_with(sans))) == Principal(name, AuthMethod.MTLS)


def test_no_client_certificate_means_no_principal() -> None:
    assert principal_from_auth_context(ctx(None)) is None
    assert principal_from_auth_context(as_context(FakeContext({}))) is None


@pytest.mark.parametrize(
    "pem",
    [
        pytest.param(pem_with(None), id="no-san"),
        pytest.param(pem_with([EMAIL]), id="email-san-only"),
        pytest.param(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", id="junk"),
    ],
)
def test_unusable_certificates_are_refused(pem: bytes) -> None:
    with pytest.raises(Unauthenticated) as err:
        principal_from_auth_context(ctx(pem))
    assert err.value.reason == "bad_client_certificate"


def test_mtls_identity_wins_over_an_api_key() -> None:
    key, entry = new_api_key("dev")
    auth = Authenticator(api_keys=ApiKeyStore({"dev": entry}), allow_mtls=True)
    got = auth.authenticate(ctx(pem_with([URI]), ("x-api-key", key)))
    assert got == Principal("spiffe://cvault.dev/dpo", AuthMethod.MTLS)


def test_certificate_is_ignored_when_mtls_is_not_allowed() -> None:
    key, entry = new_api_key("dev")
    auth = Authenticator(api_keys=ApiKeyStore({"dev": entry}), allow_mtls=False)
    got = auth.authenticate(ctx(pem_with([URI]), ("x-api-key", key)))
    assert got == Principal("apikey:dev", AuthMethod.API_KEY)
    with pytest.raises(Unauthenticated) as err:
        auth.authenticate(ctx(pem_with([URI])))
    assert err.value.reason == "missing_credentials"


def test_unusable_certificate_is_reported_to_the_denial_hook() -> None:
    calls: list[tuple[str, str]] = []
    auth = Authenticator(
        api_keys=None, allow_mtls=True, on_denied=lambda r, p: calls.append((r, p))
    )
    with pytest.raises(Unauthenticated):
        auth.authenticate(ctx(pem_with(None)))
    assert calls == [("bad_client_certificate", "ipv4:127.0.0.1:1")]
