"""The MACs of rows the service trusts for access decisions: reveal grants and consents (v1).

An insider who can write the database but cannot use the audit transit key cannot make one: the
key (the **row key**, 32 bytes) is derived from the audit key by :mod:`vault.audit`. Each MAC is
HMAC-SHA256 under it, over a tag naming the row kind and every column the decision reads::

    grant:   "cvault/row/grant/v1"
             | lp(id) | lp(tenant) | lp(grantor) | lp(grantor_role) | lp(grantee)
             | lp(record_ids: distinct, sorted, comma-joined) | lp(scope)
             | lp(field_classes: distinct, sorted, comma-joined) | lp(purpose)
             | lp(expires_at) | lp(max_uses) | lp(max_values)
    consent: "cvault/row/consent/v1"
             | lp(tenant) | lp(record_id) | lp(version)
             | lp(purposes: distinct, sorted, comma-joined) | lp(source) | lp(updated_at)

``lp(x)`` is the 4-byte big-endian length of UTF-8 ``x`` followed by its bytes; integers are
written in decimal and times as decimal microseconds since 1970-01-01T00:00:00Z (a naive time
is taken to be UTC), so no value is out of range for the encoding. A grant's use counters and
revocation (``uses``, ``values_used``, ``revoked_at``) and its ``created_at`` are not covered:
why, in :mod:`vault.service._row_macs`. Frozen test vectors: ``tests/unit/crypto/test_row_mac.py``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Final

from vault.crypto._encoding import lp

ROW_MAC_BYTES: Final = 32
_GRANT_TAG: Final = b"cvault/row/grant/v1"
_CONSENT_TAG: Final = b"cvault/row/consent/v1"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)


def grant_mac(
    key: bytes,
    *,
    grant_id: str,
    tenant: str,
    grantor: str,
    grantor_role: str,
    grantee: str,
    record_ids: Iterable[str],
    scope: str,
    field_classes: Iterable[str],
    purpose: str,
    expires_at: datetime,
    max_uses: int,
    max_values: int,
) -> bytes:
    """The MAC of a reveal grant row (layout in the module docstring)."""
    return _mac(
        key,
        _GRANT_TAG,
        (
            grant_id,
            tenant,
            grantor,
            grantor_role,
            grantee,
            _joined(record_ids),
            scope,
            _joined(field_classes),
            purpose,
            _micros(expires_at),
            str(max_uses),
            str(max_values),
        ),
    )


def consent_mac(
    key: bytes,
    *,
    tenant: str,
    record_id: str,
    version: int,
    purposes: Iterable[str],
    source: str,
    updated_at: datetime,
) -> bytes:
    """The MAC of a record's consent row (layout in the module docstring)."""
    return _mac(
        key,
        _CONSENT_TAG,
        (tenant, record_id, str(version), _joined(purposes), source, _micros(updated_at)),
    )


def row_mac_matches(expected: bytes, stored: bytes | None) -> bool:
    """Whether a stored MAC is the expected one (constant time; a missing one never is)."""
    return stored is not None and hmac.compare_digest(expected, stored)


def _mac(key: bytes, tag: bytes, fields: Iterable[str]) -> bytes:
    return hmac.digest(key, tag + b"".join(lp(f) for f in fields), hashlib.sha256)


def _joined(names: Iterable[str]) -> str:
    return ",".join(sorted(set(names)))


def _micros(value: datetime) -> str:
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return str((aware - _EPOCH) // _US)
