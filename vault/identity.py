"""Who is calling: the authenticated identity every layer below the API receives, and the one
rule that says what kind of credential a principal name stands for.

A principal name carries its kind, so that a name of one kind can never be read as another:

* ``<scheme>:<rest>``: a client certificate's URI SAN, the URI itself (e.g.
  ``spiffe://cvault.dev/backend-service``); a URI always has a scheme;
* ``dns:<name>``: a client certificate's DNS SAN (e.g. ``dns:backend.acme.internal``);
* ``apikey:<key id>``: an API key.

``dns`` and ``apikey`` are therefore reserved: a URI with one of these schemes (in any case) is
not a URI principal, and a name without a scheme is no principal at all. So a certificate whose
DNS SAN reads ``spiffe://cvault.dev/dpo`` is ``dns:spiffe://cvault.dev/dpo``, and matches no
URI entry of a policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class AuthMethod(StrEnum):
    MTLS = "mtls"
    API_KEY = "api_key"


class PrincipalKind(StrEnum):
    """What a principal name stands for (see the module docstring)."""

    URI = "uri"
    DNS = "dns"
    API_KEY = "apikey"

    @property
    def method(self) -> AuthMethod:
        """How a caller with a name of this kind authenticated."""
        return AuthMethod.API_KEY if self is PrincipalKind.API_KEY else AuthMethod.MTLS


#: Prefix of an API key's principal name.
API_KEY_PREFIX: Final = "apikey:"
#: Prefix of a principal named by a client certificate's DNS SAN.
DNS_PREFIX: Final = "dns:"

# RFC 3986 scheme, then at least one character: "spiffe:" alone names nothing.
_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):.", re.DOTALL)
_RESERVED_SCHEMES: Final = frozenset({API_KEY_PREFIX[:-1], DNS_PREFIX[:-1]})


def principal_kind(name: str) -> PrincipalKind | None:
    """The kind of a principal name, or None when it is of no kind (ambiguous or empty).

    ``apikey:`` and ``dns:`` count only in lower case and with something after them; any other
    name needs a URI scheme that is not ``apikey`` or ``dns`` in some other case (``DNS:x``
    would read as a DNS name to a person and as a URI to a parser, so it is neither).
    """
    for prefix, kind in ((API_KEY_PREFIX, PrincipalKind.API_KEY), (DNS_PREFIX, PrincipalKind.DNS)):
        if name.startswith(prefix):
            return kind if len(name) > len(prefix) else None
    match = _URI.match(name)
    if match is None or match.group(1).lower() in _RESERVED_SCHEMES:
        return None
    return PrincipalKind.URI


def dns_principal(dns_name: str) -> str:
    """The principal name of a client certificate's DNS SAN: ``dns:<dns_name>``."""
    return DNS_PREFIX + dns_name


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    ``name`` is what the policy file maps to roles (see the module docstring for its kinds):
    a URI SAN itself or ``dns:<DNS SAN>`` for mTLS, ``apikey:<key id>`` for API keys.
    """

    name: str
    method: AuthMethod

    @property
    def kind(self) -> PrincipalKind | None:
        """The kind of ``name``, or None when it has none (such a principal has no role)."""
        return principal_kind(self.name)
