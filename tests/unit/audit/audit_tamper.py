"""Test helpers for the audit tests: tamper with the tables as an attacker with DB access would.

``audit_events`` refuses UPDATE and DELETE through triggers (migration 0002); an attacker who can
run DDL gets past them, and so do these helpers, inside one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from vault.audit import AuditEvent
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
