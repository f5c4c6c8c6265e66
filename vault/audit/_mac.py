"""The audit MAC and pseudonym formats (version 1), and the keys derived for them.

Every key made from the 32-byte audit key is derived here, with HKDF-SHA256 (no salt, distinct
``info``)::

    mac key       = HKDF(audit key, info="cvault/audit/mac/v1")
    pseudonym key = HKDF(audit key, info="cvault/audit/pseudonym/v1")
    row key       = HKDF(audit key, info="cvault/rows/mac/v1")

The row key is not the audit's: it MACs the grant and consent rows the service trusts
(formats in ``vault/crypto/_row_mac.py``), handed out by :meth:`AuditLog.row_key`.

Record pseudonym (``record_ref``, 32 characters, 192 bits)::

    base64url(HMAC-SHA256(pseudonym key,
                          "cvault/audit/record-ref/v1" | lp(tenant) | lp(record id)))[:32]

Row MAC (32 bytes), over every column but ``mac`` itself, in this order::

    HMAC-SHA256(mac key,
        "cvault/audit/v1"
        | prev_mac (32 bytes; 32 zero bytes for seq 1)
        | lp(chain) | seq (8 bytes, big-endian)
        | time (8 bytes, signed big-endian microseconds since 1970-01-01T00:00:00Z)
        | lp(principal) | lp(role) | lp(action) | lp(purpose) | lp(tenant)
        | record_ref: 0x00 when NULL, else 0x01 | lp(record_ref)
        | lp(field_classes: sorted, comma-joined) | lp(outcome) | lp(reason)
        | lp(request_id) | lp(audit_key_id))

``lp(x)`` is the 4-byte big-endian length of UTF-8 ``x`` followed by its bytes. The frozen test
vector is in ``tests/unit/audit/test_audit_format.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vault.crypto import lp

MAC_BYTES: Final = 32
ZERO_MAC: Final = bytes(MAC_BYTES)
REF_CHARS: Final = 32
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
_MAC_TAG: Final = b"cvault/audit/v1"
_REF_TAG: Final = b"cvault/audit/record-ref/v1"


@dataclass(frozen=True, slots=True)
class AuditKeys:
    """The keys derived from one audit key version (``key_id`` names its ``audit_keys`` row)."""

    key_id: str
    mac_key: bytes = field(repr=False)
    pseudonym_key: bytes = field(repr=False)
    row_key: bytes = field(repr=False)


def derive(key_id: str, audit_key: bytes) -> AuditKeys:
    """Derive the MAC, pseudonym and row keys from an audit key."""

    def one(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(audit_key)

    return AuditKeys(
        key_id,
        one(b"cvault/audit/mac/v1"),
        one(b"cvault/audit/pseudonym/v1"),
        one(b"cvault/rows/mac/v1"),
    )


def pseudonym(pseudonym_key: bytes, tenant: str, record_id: str) -> str:
    """The keyed pseudonym of a record id: stable per key, unlinkable without it."""
    digest = hmac.digest(pseudonym_key, _REF_TAG + lp(tenant) + lp(record_id), hashlib.sha256)
    return base64.urlsafe_b64encode(digest).decode("ascii")[:REF_CHARS]


def utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value (SQLite gives those back) is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def micros(value: datetime) -> int:
    """Microseconds since the Unix epoch (exact integer arithmetic)."""
    return (utc(value) - _EPOCH) // _US


def join_classes(classes: tuple[str, ...] | list[str]) -> str:
    """The stored form of field classes: distinct, sorted, comma-joined."""
    return ",".join(sorted(set(classes)))


def split_classes(joined: str) -> tuple[str, ...]:
    return tuple(joined.split(",")) if joined else ()


@dataclass(frozen=True, slots=True)
class RowContent:
    """Every MAC'd column of a row except ``chain`` and ``seq`` (so a row can be tried at
    another position while verifying)."""

    time: datetime
    principal: str
    role: str
    action: str
    purpose: str
    tenant: str
    record_ref: str | None
    field_classes: str
    outcome: str
    reason: str
    request_id: str
    audit_key_id: str
    on_behalf_of: str = ""
    peer: str = ""


class ChainMacer:
    """:func:`row_mac` for the many rows of one append, byte for byte: the parts of the
    message that rows share (a batch's thousand rows differ only in seq, record and classes)
    are encoded once. Holds the MAC key: never log or keep it beyond the append."""

    __slots__ = ("_before", "_chain", "_key", "_lp")

    def __init__(self, mac_key: bytes, chain: str) -> None:
        self._key = mac_key
        self._chain = lp(chain)
        self._lp: dict[str, bytes] = {}
        self._before: dict[tuple[datetime, str, str, str, str, str], bytes] = {}

    def mac(self, prev_mac: bytes, seq: int, row: RowContent) -> bytes:
        enc = self._lp.get
        head = (row.time, row.principal, row.role, row.action, row.purpose, row.tenant)
        before = self._before.get(head)
        if before is None:
            before = self._before[head] = micros(row.time).to_bytes(8, "big", signed=True) + (
                b"".join(lp(s) for s in head[1:])
            )
        tail = [row.field_classes, row.outcome, row.reason, row.request_id, row.audit_key_id]
        message = b"".join(
            (
                _MAC_TAG,
                prev_mac,
                self._chain,
                seq.to_bytes(8, "big"),
                before,
                b"\x00" if row.record_ref is None else b"\x01" + lp(row.record_ref),
                *(enc(s) or self._lp.setdefault(s, lp(s)) for s in tail),
                b"\x01" + lp(row.on_behalf_of) if row.on_behalf_of else b"",
                b"\x02" + lp(row.peer) if row.peer else b"",
            )
        )
        return hmac.digest(self._key, message, hashlib.sha256)


def row_mac(mac_key: bytes, prev_mac: bytes, chain: str, seq: int, row: RowContent) -> bytes:
    """The MAC of a row at ``(chain, seq)`` following a row whose MAC is ``prev_mac``."""
    ref = b"\x00" if row.record_ref is None else b"\x01" + lp(row.record_ref)
    message = b"".join(
        (
            _MAC_TAG,
            prev_mac,
            lp(chain),
            seq.to_bytes(8, "big"),
            micros(row.time).to_bytes(8, "big", signed=True),
            lp(row.principal),
            lp(row.role),
            lp(row.action),
            lp(row.purpose),
            lp(row.tenant),
            ref,
            lp(row.field_classes),
            lp(row.outcome),
            lp(row.reason),
            lp(row.request_id),
            lp(row.audit_key_id),
            # only when set, so rows from before this column keep their MACs
            b"\x01" + lp(row.on_behalf_of) if row.on_behalf_of else b"",
            b"\x02" + lp(row.peer) if row.peer else b"",
        )
    )
    return hmac.digest(mac_key, message, hashlib.sha256)
