"""SQL for key administration: which keys exist, what depends on them, and the rewrites of
rotation (compare-and-set, so it runs next to the service)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from vault.storage.models import (
    AuditKey,
    BlindIndexRow,
    DataKeyRow,
    Erasure,
    RecordValue,
    TenantKey,
)

_tk = cast(Table, TenantKey.__table__)
_dk = cast(Table, DataKeyRow.__table__)
_ak = cast(Table, AuditKey.__table__)
_er = cast(Table, Erasure.__table__)
_bi = cast(Table, BlindIndexRow.__table__)
_val = cast(Table, RecordValue.__table__)


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


@dataclass(frozen=True, slots=True)
class DataKeyToRewrap:
    id: str
    record_id: str  # the record, or the token pool, the key belongs to
    tenant_key_id: str
    wrapped: bytes = field(repr=False)


def tenant_classes(conn: Connection) -> list[tuple[str, str]]:
    """Every (tenant, field class) that has a tenant key."""
    rows = conn.execute(
        select(_tk.c.tenant, _tk.c.field_class).where(_tk.c.kind == "data").distinct()
    ).all()
    return sorted((r.tenant, r.field_class) for r in rows)


def data_keys_not_under(
    conn: Connection, tenant: str, field_class: str, tenant_key_id: str, limit: int
) -> list[DataKeyToRewrap]:
    """Up to ``limit`` data keys of (tenant, class) wrapped by another tenant key than
    ``tenant_key_id`` (an older version)."""
    rows = conn.execute(
        select(_dk.c.id, _dk.c.record_id, _dk.c.tenant_key_id, _dk.c.wrapped)
        .where(
            _dk.c.tenant == tenant,
            _dk.c.field_class == field_class,
            _dk.c.tenant_key_id != tenant_key_id,
        )
        .order_by(_dk.c.id)
        .limit(limit)
    ).all()
    return [DataKeyToRewrap(r.id, r.record_id, r.tenant_key_id, bytes(r.wrapped)) for r in rows]


def replace_data_key(
    conn: Connection, row: DataKeyToRewrap, tenant_key_id: str, wrapped: bytes
) -> bool:
    """Compare-and-set: store the re-wrapped data key if the row is still as read."""
    result = conn.execute(
        update(_dk)
        .where(
            _dk.c.id == row.id,
            _dk.c.tenant_key_id == row.tenant_key_id,
            _dk.c.wrapped == row.wrapped,
        )
        .values(tenant_key_id=tenant_key_id, wrapped=wrapped)
    )
    return result.rowcount == 1


def older_tenant_keys(
    conn: Connection, tenant: str, field_class: str, kind: str, version: int
) -> list[str]:
    """Ids of the (tenant, class, kind) key versions below ``version``."""
    return list(
        conn.execute(
            select(_tk.c.id).where(
                _tk.c.tenant == tenant,
                _tk.c.field_class == field_class,
                _tk.c.kind == kind,
                _tk.c.version < version,
            )
        ).scalars()
    )


def delete_unused_tenant_keys(conn: Connection, ids: list[str]) -> int:
    """Destroy these tenant-key rows where no data key references them any more."""
    if not ids:
        return 0
    used = select(_dk.c.id).where(_dk.c.tenant_key_id == _tk.c.id).exists()
    result = conn.execute(delete(_tk).where(_tk.c.id.in_(ids), ~used))
    return int(result.rowcount)


def erasures_since(conn: Connection, since: datetime) -> list[tuple[str, str, datetime]]:
    """(record id, tenant, erased at) of the records erased at or after ``since``."""
    rows = conn.execute(
        select(_er.c.record_id, _er.c.tenant, _er.c.erased_at)
        .where(_er.c.erased_at >= since)
        .order_by(_er.c.erased_at)
    ).all()
    return [(r.record_id, r.tenant, _utc(r.erased_at)) for r in rows]


def oldest_tenant_keys(conn: Connection, tenant: str) -> dict[str, datetime]:
    """field class -> when the oldest remaining tenant (``data``) key of ``tenant`` was made."""
    rows = conn.execute(
        select(_tk.c.field_class, func.min(_tk.c.created_at).label("oldest"))
        .where(_tk.c.tenant == tenant, _tk.c.kind == "data")
        .group_by(_tk.c.field_class)
    ).all()
    return {r.field_class: _utc(r.oldest) for r in rows}


def _utc(value: datetime) -> datetime:
    """SQLite gives naive datetimes back (they are stored as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def newest_tenant_keys(conn: Connection) -> dict[tuple[str, str], datetime]:
    """(tenant, class) -> when its newest tenant (``data``) key version was made."""
    rows = conn.execute(
        select(_tk.c.tenant, _tk.c.field_class, func.max(_tk.c.created_at).label("newest"))
        .where(_tk.c.kind == "data")
        .group_by(_tk.c.tenant, _tk.c.field_class)
    ).all()
    return {(r.tenant, r.field_class): _utc(r.newest) for r in rows}


def unindexed_values(
    conn: Connection, tenant: str, names: Sequence[str], index_key_id: str, limit: int
) -> list[tuple[str, str]]:
    """(record id, field name) of stored values of these fields with no blind-index row under
    ``index_key_id`` yet."""
    has = (
        select(_bi.c.id)
        .where(
            _bi.c.record_id == _val.c.record_id,
            _bi.c.field_name == _val.c.field_name,
            _bi.c.index_key_id == index_key_id,
        )
        .exists()
    )
    rows = conn.execute(
        select(_val.c.record_id, _val.c.field_name)
        .where(_val.c.tenant == tenant, _val.c.field_name.in_(list(names)), ~has)
        .order_by(_val.c.record_id)
        .limit(limit)
    ).all()
    return [(r.record_id, r.field_name) for r in rows]


def add_index_rows(conn: Connection, rows: Sequence[Mapping[str, object]]) -> int:
    """Insert blind-index rows one by one, skipping any that a concurrent writer already made."""
    n = 0
    for row in rows:
        try:
            with conn.begin_nested():
                conn.execute(insert(_bi), dict(row))
            n += 1
        except IntegrityError:
            pass
    return n


def index_rows_under(conn: Connection, index_key_ids: Sequence[str]) -> int:
    if not index_key_ids:
        return 0
    return int(
        conn.execute(
            select(func.count()).select_from(_bi).where(_bi.c.index_key_id.in_(list(index_key_ids)))
        ).scalar_one()
    )


def drop_index_keys(conn: Connection, index_key_ids: Sequence[str]) -> int:
    """Delete the blind-index rows under these index keys, then the keys. Returns rows."""
    if not index_key_ids:
        return 0
    ids = list(index_key_ids)
    n = conn.execute(delete(_bi).where(_bi.c.index_key_id.in_(ids))).rowcount
    conn.execute(delete(_tk).where(_tk.c.id.in_(ids)))
    return int(n)
