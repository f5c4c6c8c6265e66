"""Principal names carry their kind: a URI SAN, ``dns:<DNS SAN>`` or ``apikey:<key id>``."""

from __future__ import annotations

import pytest

from vault.identity import (
    AuthMethod,
    Principal,
    PrincipalKind,
    dns_principal,
    principal_kind,
)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("spiffe://cvault.dev/backend-service", PrincipalKind.URI),
        ("urn:example:backend", PrincipalKind.URI),
        ("https://backend.acme.internal/", PrincipalKind.URI),
        ("dns:backend.acme.internal", PrincipalKind.DNS),
        # a DNS SAN spelled like a SPIFFE id stays a DNS principal
        ("dns:spiffe://cvault.dev/dpo", PrincipalKind.DNS),
        ("apikey:dev-dpo", PrincipalKind.API_KEY),
        ("apikey:spiffe://cvault.dev/dpo", PrincipalKind.API_KEY),
    ],
)
def test_kind_of_a_principal_name(name: str, kind: PrincipalKind) -> None:
    assert principal_kind(name) is kind


@pytest.mark.parametrize(
    "name",
    [
        "",
        "backend.acme.internal",  # a DNS name without dns:, or a URI without a scheme?
        "backend-service",
        "apikey:",
        "dns:",
        "spiffe:",
        "DNS:backend.acme.internal",  # reads as a DNS name, parses as a URI: neither
        "Dns:backend.acme.internal",
        "APIKEY:dev-dpo",
        "ApiKey:dev-dpo",
        ":backend",
        "1x:backend",  # a scheme starts with a letter
        "_x:backend",
    ],
)
def test_names_of_no_kind(name: str) -> None:
    assert principal_kind(name) is None
    assert Principal(name, AuthMethod.MTLS).kind is None


def test_kinds_say_how_the_caller_authenticated() -> None:
    assert PrincipalKind.URI.method is AuthMethod.MTLS
    assert PrincipalKind.DNS.method is AuthMethod.MTLS
    assert PrincipalKind.API_KEY.method is AuthMethod.API_KEY


def test_dns_principal() -> None:
    assert dns_principal("backend.acme.internal") == "dns:backend.acme.internal"
    assert principal_kind(dns_principal("spiffe://cvault.dev/dpo")) is PrincipalKind.DNS
