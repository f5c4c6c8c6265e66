"""Repository functions over one open connection; the service layer owns the transaction.

Every read that leads to a decrypt fetches the data-key row in the same query as the ciphertext
and left-joins the data-key tombstones, so a value whose key was destroyed can never be opened,
whatever any cache holds and even if an old copy of the key row was written back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    Join,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from vault.storage import _sync as sync
from vault.storage._bulk import bulk_insert, db_time
from vault.storage.models import (
    BlindIndexRow,
    DataKeyRow,
    ErasedDataKey,
    Erasure,
    Record,
    RecordValue,
    Tenant,
    TenantKey,
)

_tk = cast(Table, TenantKey.__table__)
_rec = cast(Table, Record.__table__)
_dk = cast(Table, DataKeyRow.__table__)
_val = cast(Table, RecordValue.__table__)
_bi = cast(Table, BlindIndexRow.__table__)
_er = cast(Table, Erasure.__table__)
_edk = cast(Table, ErasedDataKey.__table__)
_ten = cast(Table, Tenant.__table__)


@dataclass(frozen=True, slots=True)
class TenantKeyRow:
    id: str
    tenant: str
    field_class: str
    kind: str
    version: int
    wrapped: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class RecordRow:
    id: str
    tenant: str
    version: int


@dataclass(frozen=True, slots=True)
class StoredValue:
    """A sealed value joined with its data-key row (None when the key is gone or tombstoned)."""

    field_name: str
    field_class: str
    token: str
    ciphertext: bytes = field(repr=False)
    data_key_id: str
    wrapped_dek: bytes | None = field(repr=False)
    tenant_key_id: str | None
    dek_erased: bool


class NewDataKey(NamedTuple):
    """A new ``data_keys`` row (a record's or a token pool's data key), in column order: a
    batch write hands these tuples to the bulk insert as they are."""

    id: str
    tenant: str
    record_id: str
    field_class: str
    tenant_key_id: str
    wrapped: bytes


class NewValue(NamedTuple):
    """A new ``record_values`` row, in column order."""

    record_id: str
    field_name: str
    field_class: str
    data_key_id: str
    ciphertext: bytes
    token: str


class NewIndex(NamedTuple):
    """A new ``blind_index`` row, in column order."""

    record_id: str
    field_name: str
    index_key_id: str
    digest: bytes


@dataclass(frozen=True, slots=True)
class NewRecord:
    """Everything one created record writes, sealed before the transaction opens."""

    id: str
    tenant: str
    schema_version: int
    idempotency_key: str | None
    data_keys: Sequence[NewDataKey]
    values: Sequence[NewValue]
    index_rows: Sequence[NewIndex]


# --- tenant and index keys -------------------------------------------------------------------


def current_tenant_keys(
    conn: Connection, tenant: str, classes: Iterable[str]
) -> dict[tuple[str, str], TenantKeyRow]:
    """Newest version per (class, kind) for these classes of one tenant."""
    out: dict[tuple[str, str], TenantKeyRow] = {}
    for r in tenant_key_rows(conn, tenant, classes):
        k = (r.field_class, r.kind)
        if k not in out or out[k].version < r.version:
            out[k] = r
    return out


def tenant_key_rows(conn: Connection, tenant: str, classes: Iterable[str]) -> list[TenantKeyRow]:
    """Every tenant and index key row (all versions) of these classes of one tenant: what the
    keyring caches for Tokenize (``Keyring.cached_current``)."""
    rows = conn.execute(
        select(_tk).where(_tk.c.tenant == tenant, _tk.c.field_class.in_(sorted(set(classes))))
    ).all()
    return [TenantKeyRow(r.id, r.tenant, r.field_class, r.kind, r.version, r.wrapped) for r in rows]


def tenant_key_ids(conn: Connection, tenant: str, classes: Iterable[str]) -> frozenset[str]:
    """The ids of those rows: one small index read, made inside a Tokenize write transaction
    to check that the cached keys are still the tenant's current ones."""
    return frozenset(
        conn.execute(
            select(_tk.c.id).where(
                _tk.c.tenant == tenant, _tk.c.field_class.in_(sorted(set(classes)))
            )
        ).scalars()
    )


def tenant_keys_by_id(conn: Connection, ids: Iterable[str]) -> dict[str, TenantKeyRow]:
    rows = conn.execute(select(_tk).where(_tk.c.id.in_(sorted(set(ids))))).all()
    return {
        r.id: TenantKeyRow(r.id, r.tenant, r.field_class, r.kind, r.version, r.wrapped)
        for r in rows
    }


def index_keys(conn: Connection, tenant: str, field_class: str) -> list[TenantKeyRow]:
    """Every index-key version of a class: searches look under all of them during a rotation."""
    rows = conn.execute(
        select(_tk).where(
            _tk.c.tenant == tenant, _tk.c.field_class == field_class, _tk.c.kind == "index"
        )
    ).all()
    return [TenantKeyRow(r.id, r.tenant, r.field_class, r.kind, r.version, r.wrapped) for r in rows]


def insert_tenant_keys(conn: Connection, rows: Sequence[Mapping[str, object]]) -> bool:
    """Insert new key rows; False when another process created the same versions first."""
    try:
        with conn.begin_nested():
            conn.execute(insert(_tk), list(rows))
    except IntegrityError:
        return False
    return True


# --- records ---------------------------------------------------------------------------------


def records_by_idempotency_key(
    conn: Connection, tenant: str, keys: Iterable[str]
) -> dict[str, str]:
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = conn.execute(
        select(_rec.c.idempotency_key, _rec.c.id).where(
            _rec.c.tenant == tenant, _rec.c.idempotency_key.in_(wanted)
        )
    ).all()
    return {r.idempotency_key: r.id for r in rows}


_REC_COLUMNS = (
    "id",
    "tenant",
    "version",
    "schema_version",
    "idempotency_key",
    "created_at",
    "updated_at",
)
#: a record's data keys: no ``created_at`` (NULL), nothing reads a record key's age


def insert_records(conn: Connection, records: Sequence[NewRecord], now: datetime) -> None:
    """Write records with their data keys, ciphertexts and blind indexes (one transaction):
    one bulk insert per table (COPY on PostgreSQL), whatever the number of records.

    Raises:
        IntegrityError: an idempotency key was taken concurrently (the caller re-reads).
    """
    when = db_time(conn, _rec, "created_at", now)
    bulk_insert(
        conn,
        _rec,
        _REC_COLUMNS,
        [(r.id, r.tenant, 1, r.schema_version, r.idempotency_key, when, when) for r in records],
    )
    bulk_insert(conn, _dk, NewDataKey._fields, [d for r in records for d in r.data_keys])
    bulk_insert(conn, _val, NewValue._fields, [v for r in records for v in r.values])
    bulk_insert(conn, _bi, NewIndex._fields, [i for r in records for i in r.index_rows])


def insert_data_keys(conn: Connection, rows: Sequence[NewDataKey], now: datetime) -> None:
    """Data keys made outside a record write (token pools, a linked record's new class).

    Raises:
        IntegrityError: a data key for that (record, class) was made concurrently.
    """
    if rows:
        conn.execute(insert(_dk), [dict(r._asdict(), created_at=now) for r in rows])


def get_record(conn: Connection, tenant: str, record_id: str) -> RecordRow | None:
    r = conn.execute(
        select(_rec.c.id, _rec.c.tenant, _rec.c.version).where(
            _rec.c.id == record_id, _rec.c.tenant == tenant
        )
    ).first()
    return RecordRow(r.id, r.tenant, r.version) if r else None


def tenant_exists(conn: Connection, tenant: str) -> bool:
    return conn.execute(select(_ten.c.name).where(_ten.c.name == tenant)).first() is not None


def create_tenant(conn: Connection, tenant: str, created_by: str, now: datetime) -> bool:
    """Create ``tenant`` unless it exists; whether this call created it."""
    if tenant_exists(conn, tenant):
        return False
    conn.execute(insert(_ten).values(name=tenant, created_at=now, created_by=created_by[:256]))
    return True


def tenant_names(conn: Connection) -> list[tuple[str, datetime, str]]:
    """(name, created at, created by) of every tenant, by name."""
    rows = conn.execute(select(_ten).order_by(_ten.c.name)).all()
    return [(r.name, r.created_at, r.created_by) for r in rows]


def is_erased(conn: Connection, tenant: str, record_id: str) -> bool:
    return (
        conn.execute(
            select(_er.c.record_id).where(_er.c.record_id == record_id, _er.c.tenant == tenant)
        ).first()
        is not None
    )


def value_keys(values: Join, tenant: Any, record_id: Any) -> Join:
    """``values`` (a join holding ``record_values``) with each value's data-key row (only its
    record's own, of ``tenant`` and its class: a row moved elsewhere does not match) and the
    tombstones of that key and of ``record_id``: what opening a stored value needs."""
    return (
        values.outerjoin(
            _dk,
            and_(
                _dk.c.id == _val.c.data_key_id,
                _dk.c.record_id == _val.c.record_id,
                _dk.c.tenant == tenant,
                _dk.c.field_class == _val.c.field_class,
            ),
        )
        .outerjoin(_edk, _edk.c.data_key_id == _val.c.data_key_id)
        .outerjoin(_er, _er.c.record_id == record_id)
    )


def _read_record_query(with_names: bool) -> Select[Any]:
    """Built once: statement construction costs more than running it on the hot read path."""
    on_values = _val.c.record_id == _rec.c.id
    if with_names:
        on_values = and_(on_values, _val.c.field_name.in_(bindparam("names", expanding=True)))
    return (
        select(
            _rec.c.version,
            _val.c.field_name,
            _val.c.field_class,
            _val.c.token,
            _val.c.ciphertext,
            _val.c.data_key_id,
            _dk.c.wrapped,
            _dk.c.tenant_key_id,
            _edk.c.data_key_id.label("erased_key"),
            _er.c.record_id.label("erased_record"),
        )
        .select_from(value_keys(_rec.outerjoin(_val, on_values), _rec.c.tenant, _rec.c.id))
        .where(_rec.c.tenant == bindparam("tenant"), _rec.c.id == bindparam("record_id"))
        .order_by(_val.c.field_name)
    )


_READ_ALL = _read_record_query(with_names=False)
_READ_NAMED = _read_record_query(with_names=True)


def read_record(
    conn: Connection, tenant: str, record_id: str, names: Sequence[str] | None = None
) -> tuple[RecordRow | None, list[StoredValue]]:
    """The record's version and its ciphertexts joined with their data-key rows and tombstones,
    in one query (None when there is no such live record)."""
    params: dict[str, object] = {"tenant": tenant, "record_id": record_id}
    if names is not None:
        params["names"] = list(names)
    rows = conn.execute(_READ_NAMED if names is not None else _READ_ALL, params).all()
    if not rows:
        return None, []
    record = RecordRow(record_id, tenant, rows[0].version)
    return record, [
        StoredValue(
            field_name=r.field_name,
            field_class=r.field_class,
            token=r.token,
            ciphertext=r.ciphertext,
            data_key_id=r.data_key_id,
            wrapped_dek=r.wrapped,
            tenant_key_id=r.tenant_key_id,
            dek_erased=r.erased_key is not None or r.erased_record is not None,
        )
        for r in rows
        if r.field_name is not None
    ]


def record_tokens(conn: Connection, tenant: str, record_id: str) -> dict[str, str]:
    rows = conn.execute(
        select(_val.c.field_name, _val.c.token)
        .select_from(_val.join(_rec, _rec.c.id == _val.c.record_id))
        .where(_rec.c.tenant == tenant, _val.c.record_id == record_id)
    ).all()
    return {r.field_name: r.token for r in rows}


def record_data_keys(
    conn: Connection, tenant: str, record_id: str
) -> dict[str, tuple[str, bytes, str]]:
    """field class -> (data key id, wrapped key, tenant key id) for one live record."""
    rows = conn.execute(
        select(_dk.c.id, _dk.c.field_class, _dk.c.wrapped, _dk.c.tenant_key_id)
        .select_from(_dk.outerjoin(_edk, _edk.c.data_key_id == _dk.c.id))
        .where(_dk.c.tenant == tenant, _dk.c.record_id == record_id, _edk.c.data_key_id.is_(None))
    ).all()
    return {r.field_class: (r.id, r.wrapped, r.tenant_key_id) for r in rows}


def bump_version(
    conn: Connection, tenant: str, record_id: str, expected: int, now: datetime
) -> bool:
    """Compare-and-set the record version; False when it is no longer ``expected``."""
    res = conn.execute(
        update(_rec)
        .where(_rec.c.id == record_id, _rec.c.tenant == tenant, _rec.c.version == expected)
        .values(version=expected + 1, updated_at=now)
    )
    return res.rowcount == 1


def replace_values(
    conn: Connection,
    record_id: str,
    *,
    new_data_keys: Sequence[NewDataKey],
    values: Sequence[NewValue],
    index_rows: Sequence[NewIndex],
    cleared: Sequence[str],
    now: datetime,
) -> None:
    """Replace the named fields' ciphertexts and blind indexes; drop the cleared fields."""
    names = sorted({v.field_name for v in values} | set(cleared))
    if new_data_keys:
        conn.execute(insert(_dk), [d._asdict() for d in new_data_keys])  # record keys: no age
    if names:
        conn.execute(
            delete(_val).where(_val.c.record_id == record_id, _val.c.field_name.in_(names))
        )
        conn.execute(delete(_bi).where(_bi.c.record_id == record_id, _bi.c.field_name.in_(names)))
    if values:
        conn.execute(insert(_val), [v._asdict() for v in values])
    if index_rows:
        conn.execute(insert(_bi), [i._asdict() for i in index_rows])


def erase_record(
    conn: Connection,
    tenant: str,
    record_id: str,
    now: datetime,
    *,
    tokens_erased: int = 0,
    token_key_ids: Sequence[str] = (),
) -> list[str]:
    """Crypto-shred: tombstone and delete the data keys, drop ciphertexts, indexes and the record.

    Returns the destroyed data-key ids (sorted). The tombstones are written first so that a
    concurrent reader that still sees a key row also sees its tombstone. ``tokens_erased`` and
    ``token_key_ids`` (what the erasure did to tokens, see ``tokens_repo.erase_tokens``) are
    kept with the receipt.
    """
    dek_ids = sorted(
        conn.execute(
            select(_dk.c.id).where(_dk.c.tenant == tenant, _dk.c.record_id == record_id)
        ).scalars()
    )
    if dek_ids:
        conn.execute(
            insert(_edk),
            [
                {"data_key_id": d, "record_id": record_id, "tenant": tenant, "erased_at": now}
                for d in dek_ids
            ],
        )
    conn.execute(
        insert(_er),
        {
            "record_id": record_id,
            "tenant": tenant,
            "erased_at": now,
            "data_key_ids": json.dumps(dek_ids),
            "tokens_erased": tokens_erased,
            "token_key_ids": json.dumps(sorted(token_key_ids)),
        },
    )
    conn.execute(delete(_bi).where(_bi.c.record_id == record_id))
    conn.execute(delete(_val).where(_val.c.record_id == record_id))
    conn.execute(delete(_dk).where(_dk.c.record_id == record_id))
    conn.execute(delete(_rec).where(_rec.c.id == record_id))
    sync.record_event(conn, tenant, sync.DATA_KEYS, dek_ids, now)
    return dek_ids


def find_records(
    conn: Connection,
    tenant: str,
    conditions: Mapping[str, Sequence[bytes]],
    limit: int,
) -> list[str]:
    """Record ids whose blind index matches every condition (field -> candidate digests)."""
    clauses = [
        and_(_bi.c.field_name == name, _bi.c.digest.in_(list(digests)))
        for name, digests in conditions.items()
    ]

    q = (
        select(_bi.c.record_id)
        .select_from(_bi.join(_rec, _rec.c.id == _bi.c.record_id))
        .where(_rec.c.tenant == tenant, or_(*clauses))
        .group_by(_bi.c.record_id)
        .having(func.count(func.distinct(_bi.c.field_name)) == len(conditions))
        .order_by(_bi.c.record_id)
        .limit(limit)
    )
    return list(conn.execute(q).scalars())


@dataclass(frozen=True, slots=True)
class ErasureRow:
    """What an erased record's tombstone says (its receipt)."""

    erased_at: datetime
    data_key_ids: tuple[str, ...]
    tokens_erased: int
    token_key_ids: tuple[str, ...]


def erasure(conn: Connection, tenant: str, record_id: str) -> ErasureRow | None:
    """An erased record's tombstone (None: not erased in this tenant)."""
    r = conn.execute(
        select(_er.c.erased_at, _er.c.data_key_ids, _er.c.tokens_erased, _er.c.token_key_ids).where(
            _er.c.record_id == record_id, _er.c.tenant == tenant
        )
    ).first()
    if r is None:
        return None
    return ErasureRow(
        r.erased_at,
        tuple(json.loads(r.data_key_ids)),
        int(r.tokens_erased),
        tuple(json.loads(r.token_key_ids)),
    )


def record_ids_of_tenant(conn: Connection, tenant: str) -> list[str]:
    return list(
        conn.execute(select(_rec.c.id).where(_rec.c.tenant == tenant).order_by(_rec.c.id)).scalars()
    )


def destroy_data_keys(
    conn: Connection, tenant: str, record_id: str, dek_ids: Sequence[str], now: datetime
) -> None:
    """Tombstone and delete these data keys of a live record (rekey: the record keeps living
    under new keys; a restored copy of an old key row is refused)."""
    if not dek_ids:
        return
    conn.execute(
        insert(_edk),
        [
            {"data_key_id": d, "record_id": record_id, "tenant": tenant, "erased_at": now}
            for d in dek_ids
        ],
    )
    conn.execute(delete(_dk).where(_dk.c.id.in_(list(dek_ids))))
    sync.record_event(conn, tenant, sync.DATA_KEYS, dek_ids, now)


def records_not_updated_since(
    conn: Connection, before: datetime, limit: int
) -> list[tuple[str, str]]:
    """(tenant, record id) of up to ``limit`` live records last written before ``before``."""
    rows = conn.execute(
        select(_rec.c.tenant, _rec.c.id)
        .where(_rec.c.updated_at < before)
        .order_by(_rec.c.updated_at, _rec.c.id)
        .limit(limit)
    ).all()
    return [(r.tenant, r.id) for r in rows]


def class_keys_not_updated_since(
    conn: Connection, field_class: str, before: datetime, limit: int
) -> list[tuple[str, str, str]]:
    """(tenant, record id, data key id) of records last written before ``before`` that still
    hold a data key of ``field_class``."""
    rows = conn.execute(
        select(_rec.c.tenant, _rec.c.id, _dk.c.id.label("dek"))
        .select_from(_rec.join(_dk, _dk.c.record_id == _rec.c.id))
        .where(_dk.c.field_class == field_class, _rec.c.updated_at < before)
        .order_by(_rec.c.updated_at, _rec.c.id)
        .limit(limit)
    ).all()
    return [(r.tenant, r.id, r.dek) for r in rows]


def shred_class_values(
    conn: Connection, tenant: str, record_id: str, dek_id: str, now: datetime
) -> int:
    """Crypto-shred one class of a record's values: tombstone and delete its data key, drop the
    values sealed under it and their blind indexes. Returns how many values went."""
    names = list(
        conn.execute(
            select(_val.c.field_name).where(
                _val.c.record_id == record_id, _val.c.data_key_id == dek_id
            )
        ).scalars()
    )
    conn.execute(
        insert(_edk),
        {"data_key_id": dek_id, "record_id": record_id, "tenant": tenant, "erased_at": now},
    )
    if names:
        conn.execute(delete(_bi).where(_bi.c.record_id == record_id, _bi.c.field_name.in_(names)))
        conn.execute(
            delete(_val).where(_val.c.record_id == record_id, _val.c.data_key_id == dek_id)
        )
    conn.execute(delete(_dk).where(_dk.c.id == dek_id))
    sync.record_event(conn, tenant, sync.DATA_KEYS, [dek_id], now)
    return len(names)


def touch_record(conn: Connection, tenant: str, record_id: str, expected: int) -> bool:
    """A new version of a record whose fields changed outside an update (retention), if it is
    still at ``expected`` (False: it is not). The write time stays: it is what record
    retention counts from."""
    res = conn.execute(
        update(_rec)
        .where(_rec.c.id == record_id, _rec.c.tenant == tenant, _rec.c.version == expected)
        .values(version=expected + 1)
    )
    return res.rowcount == 1
