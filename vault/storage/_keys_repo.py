"""Read-only SQL for key administration: which keys exist and what depends on them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.engine import Connection

from vault.storage.models import AuditKey, DataKeyRow, TenantKey

_tk = cast(Table, TenantKey.__table__)
_dk = cast(Table, DataKeyRow.__table__)
_ak = cast(Table, AuditKey.__table__)


@dataclass(frozen=True, slots=True)
class WrappedKeyRow:
    """A tenant, index or audit key as stored: only its wrapped form (not secret by itself)."""

    id: str
    tenant: str  # "" for audit keys
    field_class: str  # "audit" for audit keys
    kind: str  # "data", "index" or "audit"
    version: int
    wrapped: str = field(repr=False)


def wrapped_keys(conn: Connection) -> list[WrappedKeyRow]:
    """Every tenant, index and audit key row."""
    rows = [
        WrappedKeyRow(r.id, r.tenant, r.field_class, r.kind, r.version, r.wrapped)
        for r in conn.execute(
            select(
                _tk.c.id, _tk.c.tenant, _tk.c.field_class, _tk.c.kind, _tk.c.version, _tk.c.wrapped
            )
        )
    ]
    rows += [
        WrappedKeyRow(r.id, "", "audit", "audit", r.version, r.wrapped)
        for r in conn.execute(select(_ak.c.id, _ak.c.version, _ak.c.wrapped))
    ]
    return rows


def data_keys_per_tenant_key(conn: Connection) -> dict[str, int]:
    """tenant key id -> how many data keys (records' and token pools') it wraps."""
    return {
        r.tenant_key_id: int(r.n)
        for r in conn.execute(
            select(_dk.c.tenant_key_id, func.count().label("n")).group_by(_dk.c.tenant_key_id)
        )
    }


def replace_wrapped(conn: Connection, row: WrappedKeyRow, new_wrapped: str) -> bool:
    """Store a re-wrapped form of ``row``'s key, if the row still holds what was read (a
    compare-and-set: a concurrent rotation or a deleted row leaves it alone). True if stored."""
    table = _ak if row.kind == "audit" else _tk
    result = conn.execute(
        update(table)
        .where(table.c.id == row.id, table.c.wrapped == row.wrapped)
        .values(wrapped=new_wrapped)
    )
    return result.rowcount == 1
