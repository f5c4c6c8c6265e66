"""Request validators shared by every service: tenants, record and grant ids, scopes and the
other short strings a request carries.

Every pattern is matched whole with ``fullmatch``. A ``$``-anchored ``match`` lets one final
newline through (``"demo\\n"`` passed as a tenant), which then failed deeper down (in the audit
event) as an internal error instead of being refused here as bad input.
"""

from __future__ import annotations

import re
import uuid
from typing import Final

from vault.errors import InvalidInput
from vault.policy import TENANT_RE

IDEMPOTENCY_RE: Final = re.compile(r"[\x21-\x7e]{1,128}")
SCOPE_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
SOURCE_RE: Final = re.compile(r"[\x20-\x7e]{1,128}")
GRANT_RE: Final = re.compile(r"grt_[0-9A-Za-z]{22}")
#: a principal name as a grant names its grantee (a SAN URI, a DNS name or ``apikey:<id>``)
PRINCIPAL_RE: Final = re.compile(r"[\x21-\x7e]{1,256}")


def matches(pattern: re.Pattern[str], value: object) -> bool:
    """Whether ``value`` is a string that ``pattern`` matches as a whole."""
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def check_tenant(tenant: str) -> str:
    """Raises: InvalidInput naming ``tenant`` (never echoing it)."""
    if not tenant:
        raise InvalidInput("tenant", "is required")
    if not matches(TENANT_RE, tenant):
        raise InvalidInput("tenant", "must be 1-64 characters of A-Z a-z 0-9 _ . - ")
    return tenant


def check_record_id(record_id: str, field: str = "record_id") -> str:
    """A record id in its canonical form (lower-case hyphenated UUID).

    Raises: InvalidInput naming ``field``.
    """
    if not record_id:
        raise InvalidInput(field, "is required")
    try:
        parsed = uuid.UUID(record_id)
    except ValueError:
        raise InvalidInput(field, "is not a record id") from None
    if str(parsed) != record_id:
        raise InvalidInput(field, "is not a record id")
    return record_id


def check_scope(scope: str, field: str = "scope") -> str:
    """An optional token scope (empty: none).

    Raises: InvalidInput naming ``field``.
    """
    if scope and not matches(SCOPE_RE, scope):
        raise InvalidInput(field, "must be 1-64 of A-Z a-z 0-9 _ . : -")
    return scope
