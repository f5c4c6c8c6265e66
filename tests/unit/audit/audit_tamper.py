"""Test helpers for the audit tests: tamper with the tables as an attacker with DB access would.

``audit_events`` refuses UPDATE and DELETE through triggers (migration 0002); an attacker who can
run DDL gets past them, and so do these helpers, inside one transaction. :func:`remac` goes
further, as an insider who also holds the service's key-server credential: it unwraps the audit
key and recomputes every MAC and the head, so the chain agrees with itself again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from vault.audit import AUDIT_KEY_CLASS, AuditEvent, audit_key_aad
from vault.audit._mac import ZERO_MAC, derive, row_mac
from vault.audit._store import all_keys, stream_rows
from vault.deadline import Deadline
from vault.keys import KeyManager, WrappedRef
from vault.storage import Database

GUARD = "audit_events_append_only"


def tamper(db: Database, *statements: str | tuple[str, Mapping[str, Any]]) -> None:
    """Run SQL statements with the append-only guard of ``audit_events`` switched off."""
    with db.engine.begin() as conn:
        restore = _guard_off(conn)
        for stmt in statements:
            sql, params = (stmt, {}) if isinstance(stmt, str) else stmt
            conn.execute(text(sql), dict(params))
        for sql in restore:
            conn.execute(text(sql))


def remac(db: Database, keys: KeyManager, chain: str, *, deadline: Deadline) -> dict[int, bytes]:
    """Recompute every MAC of ``chain`` over its rows as they are now, and move the head to
    match: what an insider does after editing rows, with ``keys`` unwrapping the audit key
    under the credential it was given. Returns the new MACs by seq."""
    with db.engine.connect() as conn:
        key_rows = list(all_keys(conn).values())
        rows = list(stream_rows(conn, chain))
    plain = keys.unwrap(
        AUDIT_KEY_CLASS,
        [
            WrappedRef(f"insider:{r.id}", r.wrapped, audit_key_aad(r.id, r.version))
            for r in key_rows
        ],
        deadline=deadline,
    )
    mac_keys = {r.id: derive(r.id, plain[f"insider:{r.id}"]).mac_key for r in key_rows}
    macs: dict[int, bytes] = {}
    prev = ZERO_MAC
    for row in rows:
        prev = row_mac(mac_keys[row.content.audit_key_id], prev, chain, row.seq, row.content)
        macs[row.seq] = prev
    update = "UPDATE audit_events SET mac = :m WHERE chain = :c AND seq = :s"
    tamper(
        db,
        *[(update, {"m": mac, "c": chain, "s": seq}) for seq, mac in macs.items()],
        (
            "UPDATE audit_chain_heads SET seq = :s, mac = :m WHERE chain = :c",
            {"s": rows[-1].seq, "m": prev, "c": chain},
        ),
    )
    return macs


def _guard_off(conn: Connection) -> list[str]:
    if conn.dialect.name == "sqlite":
        triggers = conn.execute(
            text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE :p"),
            {"p": f"{GUARD}%"},
        ).all()
        for name, _ in triggers:
            conn.execute(text(f"DROP TRIGGER {name}"))
        return [sql for _, sql in triggers]
    conn.execute(text(f"ALTER TABLE audit_events DISABLE TRIGGER {GUARD}"))
    return [f"ALTER TABLE audit_events ENABLE TRIGGER {GUARD}"]


def event(i: int = 0, **overrides: Any) -> AuditEvent:
    """A plausible reveal event; ``record_id`` is unique to ``i``."""
    fields: dict[str, Any] = {
        "action": "record.read",
        "outcome": "allowed",
        "principal": "spiffe://acme/support-bot",
        "role": "support",
        "purpose": "customer_support",
        "tenant": "acme",
        "record_id": f"0193a1b2-0000-7000-8000-{i:012d}",
        "field_classes": ("email", "phone"),
        "request_id": f"req-{i}",
    }
    fields.update(overrides)
    return AuditEvent(**fields)
