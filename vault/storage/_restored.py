"""Rows of erased records that a backup restore brought back.

An erasure tombstones a record (``erasures``) and its data keys (``erased_data_keys``) and
deletes its rows; a rekey tombstones the data keys it replaced. A table restored from an older
backup brings such rows back: a data key whose id is tombstoned, whose record is tombstoned, or
(a record's key, not a token pool's) whose record is gone, with the values and index rows that
go with it. The service refuses to write them (the ``refuse_erased_*`` triggers), so a rotation
that would re-wrap them stops; the rotations find them here instead, and skip them (the old
key version they reference then stays) or, asked to, delete them as the erasure did.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, cast

from sqlalchemy import ColumnElement, Table, and_, delete, exists, or_, select
from sqlalchemy.engine import Connection

from vault.storage import _sync as sync
from vault.storage.models import (
    BlindIndexRow,
    DataKeyRow,
    ErasedDataKey,
    Erasure,
    Record,
    RecordValue,
)

_dk = cast(Table, DataKeyRow.__table__)
_edk = cast(Table, ErasedDataKey.__table__)
_er = cast(Table, Erasure.__table__)
_rec = cast(Table, Record.__table__)
_val = cast(Table, RecordValue.__table__)
_bi = cast(Table, BlindIndexRow.__table__)


class ErasedRow(NamedTuple):
    """A data-key row of an erased record (ids only: never printed by a command)."""

    data_key_id: str
    record_id: str
    tenant: str


def _erased_data_key() -> ColumnElement[bool]:
    """True for a ``data_keys`` row that belongs to an erased record (see the module)."""
    return or_(
        exists().where(_edk.c.data_key_id == _dk.c.id),
        exists().where(_er.c.record_id == _dk.c.record_id),
        and_(_dk.c.created_at.is_(None), ~exists().where(_rec.c.id == _dk.c.record_id)),
    )


def erased_rows_under(conn: Connection, tenant_key_ids: Sequence[str]) -> list[ErasedRow]:
    """The data-key rows of erased records wrapped by any of these tenant keys."""
    if not tenant_key_ids:
        return []
    rows = conn.execute(
        select(_dk.c.id, _dk.c.record_id, _dk.c.tenant).where(
            _dk.c.tenant_key_id.in_(list(tenant_key_ids)), _erased_data_key()
        )
    ).all()
    return [ErasedRow(str(r.id), str(r.record_id), str(r.tenant)) for r in rows]


def purge_erased(conn: Connection, rows: Sequence[ErasedRow], now: datetime) -> int:
    """Delete these data-key rows and, of records that are tombstoned or gone, every value,
    index row and record row left: what the erasure deleted. A live record's values are left
    alone (a rekey's tombstoned key row goes; what a restore put back under it stays unreadable
    and is the operator's to judge). Returns how many data-key rows were deleted."""
    if not rows:
        return 0
    key_ids = sorted({r.data_key_id for r in rows})
    gone = list(
        conn.execute(
            select(_dk.c.record_id)
            .where(_dk.c.id.in_(key_ids))
            .where(
                or_(
                    exists().where(_er.c.record_id == _dk.c.record_id),
                    ~exists().where(_rec.c.id == _dk.c.record_id),
                )
            )
            .distinct()
        ).scalars()
    )
    conn.execute(delete(_val).where(_val.c.record_id.in_(gone)))
    conn.execute(delete(_bi).where(_bi.c.record_id.in_(gone)))
    deleted = conn.execute(delete(_dk).where(_dk.c.id.in_(key_ids))).rowcount
    conn.execute(
        delete(_rec).where(_rec.c.id.in_(gone), exists().where(_er.c.record_id == _rec.c.id))
    )
    for tenant in sorted({r.tenant for r in rows}):  # a server may have cached them since
        ids = [r.data_key_id for r in rows if r.tenant == tenant]
        sync.record_event(conn, tenant, sync.DATA_KEYS, ids, now)
    return int(deleted)
