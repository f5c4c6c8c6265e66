"""SQL for key administration: which keys exist, what depends on them, and the rewrites of
rotation (compare-and-set, so it runs next to the service)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Exists,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from vault.storage import _sync as sync
from vault.storage._bulk import bulk_insert
from vault.storage._repo import NewIndex, value_keys
from vault.storage._types import is_uuid_id
from vault.storage.models import (
    AuditKey,
    BlindIndexRow,
    DataKeyRow,
    ErasedDataKey,
    Erasure,
    FieldKeyFloor,
    KeyRotation,
    Record,
    RecordValue,
    TenantKey,
)

_tk = cast(Table, TenantKey.__table__)
_dk = cast(Table, DataKeyRow.__table__)
_ak = cast(Table, AuditKey.__table__)
_er = cast(Table, Erasure.__table__)
_edk = cast(Table, ErasedDataKey.__table__)
_bi = cast(Table, BlindIndexRow.__table__)
_val = cast(Table, RecordValue.__table__)
_rec = cast(Table, Record.__table__)


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


def _cas_wrapped(table: Table) -> Update:
    return (
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.wrapped == bindparam("b_old"))
        .values(wrapped=bindparam("b_new"))
    )


# Built once: on a rotation's hot path, building a statement per row cost more than running it.
_CAS_TENANT_KEY = _cas_wrapped(_tk)
_CAS_AUDIT_KEY = _cas_wrapped(_ak)


def replace_wrapped(conn: Connection, changes: Sequence[tuple[WrappedKeyRow, str]]) -> int:
    """Store re-wrapped forms of keys, each only if its row still holds what was read (a
    compare-and-set: a concurrent rotation or a deleted row leaves it alone), one executemany
    per table. Returns how many were stored."""
    stored = 0
    for kind_is_audit, statement in ((False, _CAS_TENANT_KEY), (True, _CAS_AUDIT_KEY)):
        params = [
            {"b_id": r.id, "b_old": r.wrapped, "b_new": new}
            for r, new in changes
            if (r.kind == "audit") == kind_is_audit
        ]
        if params:
            stored += int(conn.execute(statement, params).rowcount)
    return stored


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


def data_keys_under(
    conn: Connection, tenant_key_ids: Sequence[str], limit: int, skip: Sequence[str] = ()
) -> list[DataKeyToRewrap]:
    """Up to ``limit`` data keys wrapped by any of these tenant keys (the index on
    ``tenant_key_id`` finds them; progress needs no order: a re-wrapped key leaves the set),
    but those of ``skip`` (rows of erased records a restore brought back, found once by
    :func:`vault.storage._restored.erased_rows_under`: never re-wrapped)."""
    if not tenant_key_ids:
        return []
    where = [_dk.c.tenant_key_id.in_(list(tenant_key_ids))]
    if skip:
        where.append(_dk.c.id.not_in(list(skip)))
    rows = conn.execute(
        select(_dk.c.id, _dk.c.record_id, _dk.c.tenant_key_id, _dk.c.wrapped)
        .where(*where)
        .limit(limit)
    ).all()
    return [DataKeyToRewrap(r.id, r.record_id, r.tenant_key_id, bytes(r.wrapped)) for r in rows]


_CAS_DATA_KEY = (
    update(_dk)
    .where(
        _dk.c.id == bindparam("b_id"),
        _dk.c.tenant_key_id == bindparam("b_old_tk"),
        _dk.c.wrapped == bindparam("b_old"),
    )
    .values(tenant_key_id=bindparam("b_tk"), wrapped=bindparam("b_new"))
)


def replace_data_keys(
    conn: Connection, changes: Sequence[tuple[DataKeyToRewrap, str, bytes]]
) -> int:
    """Compare-and-set re-wrapped data keys (row, new tenant key id, new wrapped), one
    executemany. Returns how many rows were still as read and got stored."""
    if not changes:
        return 0
    params = [
        {"b_id": r.id, "b_old_tk": r.tenant_key_id, "b_old": r.wrapped, "b_tk": tk, "b_new": w}
        for r, tk, w in changes
    ]
    return int(conn.execute(_CAS_DATA_KEY, params).rowcount)


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


def delete_unused_tenant_keys(conn: Connection, ids: list[str], now: datetime) -> int:
    """Destroy these tenant-key rows where no data key references them any more (a key event
    tells every server to drop them from its cache)."""
    if not ids:
        return 0
    used = select(_dk.c.id).where(_dk.c.tenant_key_id == _tk.c.id).exists()
    return _destroy_tenant_keys(conn, [_tk.c.id.in_(ids), ~used], now)


def _destroy_tenant_keys(conn: Connection, where: Sequence[Any], now: datetime) -> int:
    """Delete the tenant-key rows ``where`` selects, with a key event per tenant."""
    rows = conn.execute(select(_tk.c.id, _tk.c.tenant).where(*where)).all()
    if not rows:
        return 0
    conn.execute(delete(_tk).where(_tk.c.id.in_([r.id for r in rows])))
    by_tenant: dict[str, list[str]] = {}
    for r in rows:
        by_tenant.setdefault(str(r.tenant), []).append(str(r.id))
    for tenant, ids in by_tenant.items():
        sync.record_event(conn, tenant, sync.TENANT_KEYS, ids, now)
    return len(rows)


def erasures_since(conn: Connection, since: datetime) -> list[tuple[str, str, datetime]]:
    """(record id, tenant, erased at) of the records erased at or after ``since``."""
    rows = conn.execute(
        select(_er.c.record_id, _er.c.tenant, _er.c.erased_at)
        .where(_er.c.erased_at >= since)
        .order_by(_er.c.erased_at)
    ).all()
    return [(r.record_id, r.tenant, r.erased_at) for r in rows]


def erased_token_keys_since(conn: Connection, since: datetime) -> dict[str, dict[str, str]]:
    """record id -> {data key id: class} of the token-pool data keys, still live, that held
    standalone tokens of the values of a record erased at or after ``since``: a backup copy
    of such a token's row opens with the live key (rotations re-wrap it, they do not change
    it)."""
    rows = conn.execute(
        select(_er.c.record_id, _er.c.token_key_ids).where(
            _er.c.erased_at >= since, _er.c.tokens_erased > 0
        )
    ).all()
    wanted = {r.record_id: list(json.loads(r.token_key_ids)) for r in rows}
    ids = sorted({k for keys in wanted.values() for k in keys})
    live: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        live.update(
            (r.id, r.field_class)
            for r in conn.execute(
                select(_dk.c.id, _dk.c.field_class).where(
                    _dk.c.id.in_(ids[i : i + 500]),
                    _dk.c.id.not_in(select(_edk.c.data_key_id)),
                )
            )
        )
    return {rid: {k: live[k] for k in keys if k in live} for rid, keys in wanted.items()}


@dataclass(frozen=True, slots=True)
class PoolKeyRow:
    """A token pool's data key as stored (its owner is the pool, not a record)."""

    pool_id: str
    field_class: str
    tenant_key_id: str
    wrapped: bytes = field(repr=False)
    created_at: datetime = field(compare=False)


def add_key_uses(conn: Connection, tenant_key_id: str, n: int) -> int:
    """Count ``n`` more data keys wrapped under a tenant key; the new total."""
    conn.execute(update(_tk).where(_tk.c.id == tenant_key_id).values(wraps=_tk.c.wraps + n))
    total = conn.execute(select(_tk.c.wraps).where(_tk.c.id == tenant_key_id)).scalar_one_or_none()
    return int(total or 0)


def add_data_key_seals(conn: Connection, per_key: Mapping[str, int]) -> int:
    """Count values sealed under data keys (linked tokens); the largest new total."""
    for key_id, n in sorted(per_key.items()):  # one order: no deadlock between writers
        conn.execute(
            update(_dk).where(_dk.c.id == key_id).values(seals=func.coalesce(_dk.c.seals, 0) + n)
        )
    totals = conn.execute(select(func.max(_dk.c.seals)).where(_dk.c.id.in_(sorted(per_key))))
    return int(totals.scalar_one() or 0)


def pool_key(conn: Connection, tenant: str, data_key_id: str) -> PoolKeyRow | None:
    """The live data key ``data_key_id`` of ``tenant`` when it is a token pool's (its owner is
    no record, live or erased); None otherwise."""
    if not is_uuid_id(data_key_id):
        return None
    r = conn.execute(
        select(_dk).where(
            _dk.c.id == data_key_id,
            _dk.c.tenant == tenant,
            _dk.c.record_id.not_in(select(_rec.c.id)),
            _dk.c.record_id.not_in(select(_er.c.record_id)),
        )
    ).first()
    if r is None or r.created_at is None:  # a record's key (no age): not a pool's
        return None
    return PoolKeyRow(r.record_id, r.field_class, r.tenant_key_id, bytes(r.wrapped), r.created_at)


def destroyed_keys_since(conn: Connection, since: datetime) -> list[tuple[str, str, datetime]]:
    """(record id, tenant, when) of live records some of whose data keys were destroyed at or
    after ``since`` (fields cleared or replaced, a class past its retention, a rekey), one row
    per record and time."""
    rows = conn.execute(
        select(_edk.c.record_id, _edk.c.tenant, _edk.c.erased_at)
        .where(
            _edk.c.erased_at >= since,
            _edk.c.record_id.not_in(select(_er.c.record_id)),
        )
        .distinct()
        .order_by(_edk.c.erased_at, _edk.c.record_id)
    ).all()
    return [(r.record_id, r.tenant, r.erased_at) for r in rows]


def oldest_tenant_keys(conn: Connection, tenant: str) -> dict[str, datetime]:
    """field class -> when the oldest remaining tenant (``data``) key of ``tenant`` was made."""
    rows = conn.execute(
        select(_tk.c.field_class, func.min(_tk.c.created_at).label("oldest"))
        .where(_tk.c.tenant == tenant, _tk.c.kind == "data")
        .group_by(_tk.c.field_class)
    ).all()
    return {r.field_class: r.oldest for r in rows}


def newest_tenant_keys(conn: Connection) -> dict[tuple[str, str], datetime]:
    """(tenant, class) -> when its newest tenant (``data``) key version was made."""
    rows = conn.execute(
        select(_tk.c.tenant, _tk.c.field_class, func.max(_tk.c.created_at).label("newest"))
        .where(_tk.c.kind == "data")
        .group_by(_tk.c.tenant, _tk.c.field_class)
    ).all()
    return {(r.tenant, r.field_class): r.newest for r in rows}


def _indexed_under(index_key_id: object) -> Exists:
    """Whether the outer ``record_values`` row has a blind-index row under this key: a probe of
    the primary key per value. ``OFFSET 0`` keeps PostgreSQL from turning it into an anti-join
    planned from the table's statistics, which know nothing of a new index key's rows: it
    chose a nested loop over a sequential scan of ``blind_index``, quadratic in the values."""
    return (
        select(_bi.c.record_id)
        .where(
            _bi.c.record_id == _val.c.record_id,
            _bi.c.field_name == _val.c.field_name,
            _bi.c.index_key_id == index_key_id,
        )
        .offset(0)
        .exists()
    )


def _unindexed(tenant: str, names: Sequence[str], index_key_id: str) -> Select[Any]:
    return (
        select(_val.c.record_id, _val.c.field_name)
        .select_from(_val.join(_rec, _rec.c.id == _val.c.record_id))
        .where(
            _rec.c.tenant == tenant,
            _val.c.field_name.in_(list(names)),
            ~_indexed_under(index_key_id),
        )
    )


def unindexed_values(
    conn: Connection, tenant: str, names: Sequence[str], index_key_id: str, limit: int
) -> list[tuple[str, str]]:
    """(record id, field name) of stored values of these fields with no blind-index row under
    ``index_key_id`` yet (from the start: what the drop check asks)."""
    rows = conn.execute(
        _unindexed(tenant, names, index_key_id).order_by(_val.c.record_id).limit(limit)
    ).all()
    return [(r.record_id, r.field_name) for r in rows]


def count_unindexed_values(
    conn: Connection, tenant: str, names: Sequence[str], index_key_id: str
) -> int:
    """How many values :func:`unindexed_values` would list without a limit (for progress)."""
    inner = _unindexed(tenant, names, index_key_id).subquery()
    return int(conn.execute(select(func.count()).select_from(inner)).scalar_one())


@dataclass(frozen=True, slots=True)
class ValueToIndex:
    """A stored value with no blind-index row under the index key being built, joined with its
    data-key row (``wrapped_dek`` None: the row is gone or belongs elsewhere) and whether its
    key or its record was erased."""

    record_id: str
    field_name: str
    field_class: str
    ciphertext: bytes = field(repr=False)
    data_key_id: str
    wrapped_dek: bytes | None = field(repr=False)
    tenant_key_id: str | None
    erased: bool


def _values_to_index_query(after: bool, sqlite: bool = False) -> Select[Any]:
    """Built once (statement construction costs more than running it, batch after batch): the
    next ``limit`` values of a tenant's fields in primary-key order not indexed under ``ik``,
    then their data-key rows joined as ``repo.read_record`` joins them. The batch is chosen in
    a subquery (a LIMIT the planner keeps), so the joins run on its rows only, and both scans
    start at the cursor (``records.id`` bounded too), not at the first record. SQLite (no
    statistics) would rather scan the tenant's every record through the ``tenant`` index and
    sort them, each batch: there the tenant is compared as an expression no index serves."""
    tenant = _rec.c.tenant.concat("") if sqlite else _rec.c.tenant
    where = [
        tenant == bindparam("tenant"),
        _val.c.field_name.in_(bindparam("names", expanding=True)),
        ~_indexed_under(bindparam("ik")),
    ]
    if after:
        cursor = bindparam("after_record", type_=_val.c.record_id.type)
        where += [
            tuple_(_val.c.record_id, _val.c.field_name) > tuple_(cursor, bindparam("after_name")),
            _rec.c.id >= cursor,
        ]
    batch = (
        select(_val.c.record_id, _val.c.field_name, _rec.c.tenant)
        .select_from(_val.join(_rec, _rec.c.id == _val.c.record_id))
        .where(*where)
        .order_by(_val.c.record_id, _val.c.field_name)
        .limit(bindparam("limit"))
        .subquery("batch")
    )
    return (
        select(
            _val.c.record_id,
            _val.c.field_name,
            _val.c.field_class,
            _val.c.ciphertext,
            _val.c.data_key_id,
            _dk.c.wrapped,
            _dk.c.tenant_key_id,
            _edk.c.data_key_id.label("erased_key"),
            _er.c.record_id.label("erased_record"),
        )
        .select_from(
            value_keys(
                batch.join(
                    _val,
                    and_(
                        _val.c.record_id == batch.c.record_id,
                        _val.c.field_name == batch.c.field_name,
                    ),
                ),
                batch.c.tenant,
                batch.c.record_id,
            )
        )
        .order_by(_val.c.record_id, _val.c.field_name)
    )


_VALUES_TO_INDEX_FIRST = _values_to_index_query(after=False)
_VALUES_TO_INDEX_AFTER = _values_to_index_query(after=True)
_VALUES_TO_INDEX_AFTER_SQLITE = _values_to_index_query(after=True, sqlite=True)


def values_to_index(
    conn: Connection,
    tenant: str,
    names: Sequence[str],
    index_key_id: str,
    after: tuple[str, str] | None,
    limit: int,
) -> list[ValueToIndex]:
    """Up to ``limit`` stored values of these fields with no blind-index row under
    ``index_key_id``, after ``after`` (record id, field name) in primary-key order, each with
    what opening it needs: one query a batch, and a batch starts where the last one ended
    (keyset pagination: no rescan of the rows done before)."""
    params: dict[str, object] = {
        "tenant": tenant,
        "names": list(names),
        "ik": index_key_id,
        "limit": limit,
    }
    statement = _VALUES_TO_INDEX_FIRST
    if after is not None:
        statement = (
            _VALUES_TO_INDEX_AFTER
            if conn.dialect.name == "postgresql"
            else _VALUES_TO_INDEX_AFTER_SQLITE
        )
        params |= {"after_record": after[0], "after_name": after[1]}
    return [
        ValueToIndex(
            r.record_id,
            r.field_name,
            r.field_class,
            bytes(r.ciphertext),
            r.data_key_id,
            None if r.wrapped is None else bytes(r.wrapped),
            r.tenant_key_id,
            r.erased_key is not None or r.erased_record is not None,
        )
        for r in conn.execute(statement, params)
    ]


def live_data_keys(
    conn: Connection, tenant: str, ids: Sequence[str]
) -> dict[str, tuple[str, bytes]]:
    """data key id -> (tenant key id, wrapped key) of these data keys of ``tenant`` as they
    are now and not tombstoned (re-read after a tenant-key rotation re-wrapped them)."""
    out: dict[str, tuple[str, bytes]] = {}
    wanted = sorted(set(ids))
    for i in range(0, len(wanted), 500):
        rows = conn.execute(
            select(_dk.c.id, _dk.c.tenant_key_id, _dk.c.wrapped)
            .select_from(_dk.outerjoin(_edk, _edk.c.data_key_id == _dk.c.id))
            .where(
                _dk.c.id.in_(wanted[i : i + 500]),
                _dk.c.tenant == tenant,
                _edk.c.data_key_id.is_(None),
            )
        )
        out.update((r.id, (r.tenant_key_id, bytes(r.wrapped))) for r in rows)
    return out


#: the rows returned are the ones inserted (an executemany of it goes out as a few multi-row
#: statements: SQLAlchemy's insertmanyvalues)
_INSERT_INDEX_PG = postgresql.insert(_bi).on_conflict_do_nothing().returning(_bi.c.record_id)
_INSERT_INDEX_SQLITE = (
    f"INSERT INTO {_bi.name} ({', '.join(NewIndex._fields)}) VALUES (?, ?, ?, ?)"  # noqa: S608
    " ON CONFLICT DO NOTHING"
)


def add_index_rows(conn: Connection, rows: Sequence[NewIndex]) -> int:
    """Insert blind-index rows in bulk, skipping any that a concurrent writer already made.
    Returns how many were inserted.

    PostgreSQL: one COPY (``bulk_insert``) in a savepoint; only when a row already exists does
    the batch go again as ``INSERT .. ON CONFLICT DO NOTHING`` (multi-row statements). SQLite:
    one tuple ``executemany`` of ``INSERT .. ON CONFLICT DO NOTHING`` (its rowcount sums)."""
    if not rows:
        return 0
    if conn.dialect.name != "postgresql":
        return int(conn.exec_driver_sql(_INSERT_INDEX_SQLITE, list(rows)).rowcount)
    try:
        with conn.begin_nested():
            bulk_insert(conn, _bi, NewIndex._fields, rows)
        return len(rows)
    except IntegrityError:
        return len(conn.execute(_INSERT_INDEX_PG, [r._asdict() for r in rows]).all())


def index_rows_under(conn: Connection, index_key_ids: Sequence[str]) -> int:
    if not index_key_ids:
        return 0
    return int(
        conn.execute(
            select(func.count()).select_from(_bi).where(_bi.c.index_key_id.in_(list(index_key_ids)))
        ).scalar_one()
    )


def drop_index_keys(conn: Connection, index_key_ids: Sequence[str], now: datetime) -> int:
    """Delete the blind-index rows under these index keys, then the keys. Returns rows."""
    if not index_key_ids:
        return 0
    ids = list(index_key_ids)
    n = conn.execute(delete(_bi).where(_bi.c.index_key_id.in_(ids))).rowcount
    _destroy_tenant_keys(conn, [_tk.c.id.in_(ids)], now)
    return int(n)


# --- floors and runs ---------------------------------------------------------------------------

_floors = cast(Table, FieldKeyFloor.__table__)
_runs = cast(Table, KeyRotation.__table__)


def field_key_floors(conn: Connection, classes: Sequence[str]) -> dict[str, int]:
    """class -> the lowest field-key version a new wrapped key may be stored under; read with a
    share lock on PostgreSQL, so a rotation raising a floor waits for this transaction."""
    rows = conn.execute(
        select(_floors.c.field_class, _floors.c.min_version)
        .where(_floors.c.field_class.in_(list(classes)))
        .with_for_update(read=True)
    ).all()
    return {r.field_class: int(r.min_version) for r in rows}


def raise_field_key_floor(conn: Connection, field_class: str, version: int) -> None:
    updated = conn.execute(
        update(_floors)
        .where(_floors.c.field_class == field_class, _floors.c.min_version < version)
        .values(min_version=version)
    ).rowcount
    if not updated:
        exists = conn.execute(
            select(_floors.c.field_class).where(_floors.c.field_class == field_class)
        ).first()
        if exists is None:
            conn.execute(insert(_floors).values(field_class=field_class, min_version=version))


def last_run(conn: Connection, scope: str) -> tuple[int, bool] | None:
    """(version, finished) of the newest rotation run of ``scope``."""
    row = conn.execute(
        select(_runs.c.version, _runs.c.finished_at)
        .where(_runs.c.scope == scope)
        .order_by(_runs.c.version.desc())
        .limit(1)
    ).first()
    return None if row is None else (int(row.version), row.finished_at is not None)


def finished_in_campaign(conn: Connection, scope: str, campaign: str) -> int | None:
    """The version ``scope`` was rotated to by ``campaign``, if that run finished."""
    row = conn.execute(
        select(_runs.c.version).where(
            _runs.c.scope == scope, _runs.c.campaign == campaign, _runs.c.finished_at.is_not(None)
        )
    ).first()
    return None if row is None else int(row.version)


def unfinished_campaign(conn: Connection, scope_prefix: str) -> str | None:
    """The campaign of an unfinished run among scopes starting with ``scope_prefix`` (a
    command over many units that was stopped), if any."""
    row = conn.execute(
        select(_runs.c.campaign)
        .where(_runs.c.scope.startswith(scope_prefix), _runs.c.finished_at.is_(None))
        .order_by(_runs.c.started_at.desc())
        .limit(1)
    ).first()
    return None if row is None else str(row.campaign)


def start_run(conn: Connection, scope: str, version: int, now: datetime, campaign: str) -> None:
    conn.execute(
        insert(_runs).values(scope=scope, version=version, started_at=now, campaign=campaign)
    )


def finish_run(conn: Connection, scope: str, version: int, now: datetime) -> None:
    conn.execute(
        update(_runs)
        .where(_runs.c.scope == scope, _runs.c.version == version)
        .values(finished_at=now)
    )


def count_data_keys(conn: Connection, tenant: str, field_class: str) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(_dk)
            .where(_dk.c.tenant == tenant, _dk.c.field_class == field_class)
        ).scalar_one()
    )
