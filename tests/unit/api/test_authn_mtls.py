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

from vault.api._authn import (
    ApiKeyStore,
    Authenticator,
    certificate_principals,
    choose_principal,
    new_api_key,
    principal_from_auth_context,
)
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
URI_2 = x509.UniformResourceIdentifier("spiffe://cvault.dev/backend-service")
DNS = x509.DNSName("backend.acme.internal")
EMAIL = x509.RFC822Name("dpo@example.com")
#: a DNS SAN spelled like a SPIFFE id: it must not pass for the URI
DNS_LIKE_URI = x509.DNSName("spiffe://cvault.dev/dpo")


@pytest.mark.parametrize(
    ("sans", "name"),
    [
        ([URI], "spiffe://cvault.dev/dpo"),
        ([DNS], "dns:backend.acme.internal"),
        ([DNS_LIKE_URI], "dns:spiffe://cvault.dev/dpo"),
        ([EMAIL, DNS], "dns:backend.acme.internal"),  # other SAN types are ignored
        ([URI, URI], "spiffe://cvault.dev/dpo"),  # a repeat is one name
    ],
)
def test_a_certificate_with_one_principal_is_that_principal_with_its_san_type(
    sans: list[x509.GeneralName], name: str
) -> None:
    assert principal_from_auth_context(ctx(pem_with(sans))) == Principal(name, AuthMethod.MTLS)


def test_certificate_principals_are_uri_sans_then_dns_sans() -> None:
    pem = pem_with([DNS, EMAIL, URI, DNS_LIKE_URI, URI_2, DNS])
    assert certificate_principals(pem) == (
        "spiffe://cvault.dev/dpo",
        "spiffe://cvault.dev/backend-service",
        "dns:backend.acme.internal",
        "dns:spiffe://cvault.dev/dpo",
    )


NAMES = ("spiffe://cvault.dev/dpo", "dns:backend.acme.internal")


@pytest.mark.parametrize(
    ("in_policy", "chosen"),
    [
        ({"spiffe://cvault.dev/dpo", "apikey:dpo"}, "spiffe://cvault.dev/dpo"),
        ({"dns:backend.acme.internal"}, "dns:backend.acme.internal"),
        # the bare DNS name, or the URI as a DNS name, is not the certificate's principal
        ({"backend.acme.internal", "dns:spiffe://cvault.dev/dpo"}, None),
        (set(), None),
        (set(NAMES), None),
    ],
)
def test_of_several_principals_only_the_one_the_policy_names_is_chosen(
    in_policy: set[str], chosen: str | None
) -> None:
    if chosen is not None:
        assert choose_principal(NAMES, lambda: in_policy) == chosen
        return
    with pytest.raises(Unauthenticated) as err:
        choose_principal(NAMES, lambda: in_policy)
    assert err.value.reason == "ambiguous_identity"


def test_several_principals_without_a_policy_to_choose_by_are_refused() -> None:
    with pytest.raises(Unauthenticated) as err:
        principal_from_auth_context(ctx(pem_with([URI, URI_2])))
    assert err.value.reason == "ambiguous_identity"


def test_one_principal_needs_no_policy_to_choose_by() -> None:
    # Whether it has a role is the policy's decision later (unknown_principal), as before.
    assert choose_principal(["spiffe://x/y"], lambda: ()) == "spiffe://x/y"


def test_no_client_certificate_means_no_principal() -> None:
    assert principal_from_auth_context(ctx(None)) is None
    assert principal_from_auth_context(as_context(FakeContext({}))) is None


@pytest.mark.parametrize(
    "pem",
    [
        pytest.param(pem_with(None), id="no-san"),
        pytest.param(pem_with([EMAIL]), id="email-san-only"),
        # URI SANs that would pass for another kind of principal, or for none
        pytest.param(pem_with([x509.UniformResourceIdentifier("dns:backend")]), id="uri-dns"),
        pytest.param(pem_with([x509.UniformResourceIdentifier("DNS:backend")]), id="uri-DNS"),
        pytest.param(pem_with([x509.UniformResourceIdentifier("apikey:dev-dpo")]), id="uri-key"),
        pytest.param(pem_with([x509.UniformResourceIdentifier("backend")]), id="uri-no-scheme"),
        pytest.param(pem_with([URI, x509.UniformResourceIdentifier("dns:x")]), id="uri-and-dns"),
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


@pytest.mark.parametrize(
    ("sans", "reason"),
    [([], "bad_client_certificate"), ([URI, URI_2], "ambiguous_identity")],
    ids=["no-san", "two-uris-both-in-policy"],
)
def test_unusable_certificate_is_reported_to_the_denial_hook(
    sans: list[x509.GeneralName], reason: str
) -> None:
    calls: list[tuple[str, str]] = []
    auth = Authenticator(
        api_keys=None,
        allow_mtls=True,
        known_principals=lambda: {URI.value, URI_2.value},
        on_denied=lambda r, p: calls.append((r, p)),
    )
    with pytest.raises(Unauthenticated):
        auth.authenticate(ctx(pem_with(sans or None)))
    assert calls == [(reason, "ipv4:127.0.0.1:1")]


def test_the_policy_is_asked_on_every_call() -> None:
    # A reload between two calls changes which SAN is the principal.
    in_policy = {URI.value}
    auth = Authenticator(api_keys=None, allow_mtls=True, known_principals=lambda: in_policy)
    pem = pem_with([URI, URI_2])
    assert auth.authenticate(ctx(pem)).name == URI.value
    in_policy = {URI_2.value}
    assert auth.authenticate(ctx(pem)).name == URI_2.value
