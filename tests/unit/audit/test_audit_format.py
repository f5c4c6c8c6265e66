"""Frozen vectors for the audit formats (version 1): key derivation, pseudonym, row MAC.

Rows already written must verify forever: if one of these changes, the format changed, and old
chains would no longer verify. Add a new version instead.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import replace
from datetime import UTC, datetime

from vault.audit._mac import ZERO_MAC, RowContent, derive, pseudonym, row_mac

KEY_ID = "00000000-0000-4000-8000-000000000001"
AUDIT_KEY = bytes(range(32))
TIME = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
ROW1 = RowContent(
    time=TIME,
    principal="spiffe://acme/support-bot",
    role="support",
    action="record.read",
    purpose="customer_support",
    tenant="acme",
    record_ref="Jt1nYgqRcb5jYpBq2x1zXn6S0g3l9Wf0",
    field_classes="email,phone",
    outcome="allowed",
    reason="",
    request_id="req-1",
    audit_key_id=KEY_ID,
)
ROW2 = replace(ROW1, record_ref=None, outcome="denied", reason="no_consent", field_classes="")

MAC_KEY = "0848b24a731eac626941ceaa2e19801a7734b026f5efbe383b29578edbc3e8a2"
PSEUDONYM_KEY = "a3c1ea38e9ea19c0aa5171c7b6c59100a89479ba64d5da4001779c887c67182d"
REF = "F8TnrD1PGN0rBINTfXfodyLtJjg_L4gj"
MAC1 = "8796c5db5cce3bc026fe096a412451084f3cee8a83d6d87c7f9a185039f8aad3"
MAC2 = "85369712579f67a452b57d3fd9e6adc0866c9ececd61f157f4eff119e7532f7e"


def lp(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">I", len(raw)) + raw


def test_key_derivation_vector() -> None:
    keys = derive(KEY_ID, AUDIT_KEY)
    assert keys.mac_key.hex() == MAC_KEY
    assert keys.pseudonym_key.hex() == PSEUDONYM_KEY
    assert keys.mac_key != keys.pseudonym_key
    assert AUDIT_KEY.hex() not in repr(keys)
    assert MAC_KEY not in repr(keys)


def test_pseudonym_vector() -> None:
    key = bytes.fromhex(PSEUDONYM_KEY)
    ref = pseudonym(key, "acme", "0193a1b2-0000-7000-8000-000000000042")
    assert ref == REF
    assert len(ref) == 32


def test_row_mac_vectors() -> None:
    key = bytes.fromhex(MAC_KEY)
    assert row_mac(key, ZERO_MAC, "main", 1, ROW1).hex() == MAC1
    assert row_mac(key, bytes.fromhex(MAC1), "main", 2, ROW2).hex() == MAC2


def test_row_mac_layout_is_the_documented_one() -> None:
    """Rebuild the MAC input by hand from the layout in ``vault/audit/_mac.py``."""
    micros = (TIME - datetime(1970, 1, 1, tzinfo=UTC)) // TIME.resolution
    message = (
        b"cvault/audit/v1"
        + bytes.fromhex(MAC1)
        + lp("main")
        + (2).to_bytes(8, "big")
        + micros.to_bytes(8, "big", signed=True)
        + lp(ROW2.principal)
        + lp(ROW2.role)
        + lp(ROW2.action)
        + lp(ROW2.purpose)
        + lp(ROW2.tenant)
        + b"\x00"  # record_ref NULL
        + lp("")
        + lp("denied")
        + lp("no_consent")
        + lp("req-1")
        + lp(KEY_ID)
    )
    assert hmac.digest(bytes.fromhex(MAC_KEY), message, hashlib.sha256).hex() == MAC2


def test_null_and_empty_record_ref_differ() -> None:
    key = bytes.fromhex(MAC_KEY)
    assert row_mac(key, ZERO_MAC, "main", 1, replace(ROW1, record_ref=None)) != row_mac(
        key, ZERO_MAC, "main", 1, replace(ROW1, record_ref="")
    )


def test_every_input_changes_the_mac() -> None:
    key = bytes.fromhex(MAC_KEY)
    base = row_mac(key, ZERO_MAC, "main", 1, ROW1)
    variants = [
        row_mac(key, bytes(31) + b"\x01", "main", 1, ROW1),
        row_mac(key, ZERO_MAC, "main2", 1, ROW1),
        row_mac(key, ZERO_MAC, "main", 2, ROW1),
        row_mac(key, ZERO_MAC, "main", 1, replace(ROW1, time=TIME.replace(microsecond=0))),
    ]
    # Each string column in turn set to "x" (spelled out so that mypy checks the field names).
    for changed in (
        replace(ROW1, principal="x"),
        replace(ROW1, role="x"),
        replace(ROW1, action="x"),
        replace(ROW1, purpose="x"),
        replace(ROW1, tenant="x"),
        replace(ROW1, record_ref="x"),
        replace(ROW1, field_classes="x"),
        replace(ROW1, outcome="x"),
        replace(ROW1, reason="x"),
        replace(ROW1, request_id="x"),
        replace(ROW1, audit_key_id="x"),
        replace(ROW1, on_behalf_of="x"),
    ):
        variants.append(row_mac(key, ZERO_MAC, "main", 1, changed))
    assert base not in variants
    assert len(set(variants)) == len(variants)


def test_on_behalf_of_is_appended_only_when_set() -> None:
    """Rows from before the column keep their MACs (the vectors above); a set value is the
    layout plus ``0x01 || lp(on_behalf_of)``."""
    key = bytes.fromhex(MAC_KEY)
    row = replace(ROW2, on_behalf_of="apikey:test-admin")
    micros = (TIME - datetime(1970, 1, 1, tzinfo=UTC)) // TIME.resolution
    message = (
        b"cvault/audit/v1"
        + bytes.fromhex(MAC1)
        + lp("main")
        + (2).to_bytes(8, "big")
        + micros.to_bytes(8, "big", signed=True)
        + lp(ROW2.principal)
        + lp(ROW2.role)
        + lp(ROW2.action)
        + lp(ROW2.purpose)
        + lp(ROW2.tenant)
        + b"\x00"
        + lp("")
        + lp("denied")
        + lp("no_consent")
        + lp("req-1")
        + lp(KEY_ID)
        + b"\x01"
        + lp("apikey:test-admin")
    )
    expected = hmac.digest(bytes.fromhex(MAC_KEY), message, hashlib.sha256)
    assert row_mac(key, bytes.fromhex(MAC1), "main", 2, row) == expected
    assert row_mac(key, bytes.fromhex(MAC1), "main", 2, ROW2).hex() == MAC2


def test_stored_row_values_name_every_column_of_the_table_once() -> None:
    """Bulk inserts write ``row_values`` by ``_EVENT_COLUMNS`` (issue 13): a column added to the
    table but not there would be left NULL, or shift every value after it."""
    from vault.audit import _store

    columns = [c.name for c in _store.events.c]
    assert sorted(_store._EVENT_COLUMNS) == sorted(columns)
    row = _store.StoredRow("main", 2, ROW2, bytes.fromhex(MAC2))
    stored = _store.row_dict(row)
    assert stored["mac"] == bytes.fromhex(MAC2)
    assert stored["seq"] == 2
    assert {k: stored[k] for k in ("principal", "tenant", "outcome", "reason")} == {
        "principal": ROW2.principal,
        "tenant": ROW2.tenant,
        "outcome": ROW2.outcome,
        "reason": ROW2.reason,
    }


def test_the_chain_macer_gives_row_mac_byte_for_byte() -> None:
    """An append MACs its rows with ``ChainMacer`` (shared parts encoded once, issue 13): every
    row, whatever repeats or differs, gets the MAC of the format's reference function."""
    from datetime import timedelta

    from vault.audit._mac import ChainMacer

    key = bytes.fromhex(MAC_KEY)
    rows = [
        ROW1,
        ROW2,
        replace(ROW1, on_behalf_of="apikey:alice"),
        replace(ROW1, peer="ipv4:10.0.0.7:5123"),
        replace(ROW1, record_ref="x" * 32, time=TIME + timedelta(microseconds=1)),
        replace(ROW2, tenant="other", principal="é"),
        replace(ROW1, field_classes="email,phone", reason="", request_id=""),
        ROW1,
    ]
    macer = ChainMacer(key, "host-a-w1")
    prev_ref = prev = ZERO_MAC
    for seq, row in enumerate(rows, start=1):
        prev_ref = row_mac(key, prev_ref, "host-a-w1", seq, row)
        prev = macer.mac(prev, seq, row)
        assert prev == prev_ref
