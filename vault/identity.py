"""Who is calling: the authenticated identity every layer below the API receives."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AuthMethod(StrEnum):
    MTLS = "mtls"
    API_KEY = "api_key"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    ``name`` is what the policy file maps to roles: the client certificate's SAN (a URI such as
    ``spiffe://acme/backend`` or a DNS name) for mTLS, or ``apikey:<key id>`` for API keys.
    """

    name: str
    method: AuthMethod
