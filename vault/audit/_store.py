"""SQL for the audit tables, over a connection the caller opened (reads, appends, heads)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Insert, Row, Table, bindparam, insert, select, union, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from vault.audit._event import AuditEntry
from vault.audit._mac import RowContent, split_classes, utc
from vault.storage import bulk_insert, db_time
from vault.storage.models import AuditChainHead, AuditEventRow, AuditKey

events = cast(Table, AuditEventRow.__table__)
heads = cast(Table, AuditChainHead.__table__)
keys = cast(Table, AuditKey.__table__)

#: rows fetched per round trip while streaming a chain
STREAM_BATCH = 1000


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    version: int
    wrapped: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    mac: bytes


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A row of ``audit_events`` as read back, ready to be MAC-checked."""

    chain: str
    seq: int
    content: RowContent
    mac: bytes


# --- keys ------------------------------------------------------------------------------------


def latest_key(conn: Connection) -> KeyRow | None:
    row = conn.execute(
        select(keys.c.id, keys.c.version, keys.c.wrapped).order_by(keys.c.version.desc()).limit(1)
    ).first()
    return None if row is None else KeyRow(row.id, row.version, row.wrapped)


def all_keys(conn: Connection) -> dict[str, KeyRow]:
    rows = conn.execute(select(keys.c.id, keys.c.version, keys.c.wrapped)).all()
    return {r.id: KeyRow(r.id, r.version, r.wrapped) for r in rows}


def insert_key(conn: Connection, row: KeyRow, created_at: datetime) -> bool:
    """Insert a key version; False when another process inserted that version first."""
    try:
        with conn.begin_nested():
            conn.execute(
                insert(keys).values(
                    id=row.id, version=row.version, wrapped=row.wrapped, created_at=created_at
                )
            )
    except IntegrityError:
        return False
    return True


# --- heads -----------------------------------------------------------------------------------


# Built once: on the reveal path, constructing these statements cost more than running them.
_LOCK_HEAD = (
    select(heads.c.seq, heads.c.mac).where(heads.c.chain == bindparam("chain")).with_for_update()
)
_SET_HEAD = (
    update(heads)
    .where(heads.c.chain == bindparam("chain_"))
    .values(seq=bindparam("seq_"), mac=bindparam("mac_"))
)


def lock_head(conn: Connection, chain: str) -> Head:
    """The chain's head, locked until the transaction ends (``FOR UPDATE`` on PostgreSQL; the
    SQLite write transaction is already exclusive). Creates the head row of a new chain."""
    query = _LOCK_HEAD
    row = conn.execute(query, {"chain": chain}).first()
    if row is None:
        # Two first appenders race here: ON CONFLICT DO NOTHING makes the second wait for the
        # first to commit and then do nothing, and the SELECT below sees the committed head.
        values = {"chain": chain, "seq": 0, "mac": b"\x00" * 32}
        if conn.dialect.name == "postgresql":
            conn.execute(pg_insert(heads).values(**values).on_conflict_do_nothing())
        elif conn.dialect.name == "sqlite":
            conn.execute(sqlite_insert(heads).values(**values).on_conflict_do_nothing())
        else:
            conn.execute(insert(heads).values(**values))
        row = conn.execute(query, {"chain": chain}).one()
    return Head(int(row.seq), bytes(row.mac))


def chains(conn: Connection) -> list[str]:
    """Every chain with a head row or a row of events (a head row may have been deleted)."""
    query = union(select(heads.c.chain), select(events.c.chain).distinct())
    return sorted(str(c) for c in conn.execute(query).scalars())


def read_head(conn: Connection, chain: str) -> Head | None:
    row = conn.execute(select(heads.c.seq, heads.c.mac).where(heads.c.chain == chain)).first()
    return None if row is None else Head(int(row.seq), bytes(row.mac))


def set_head(conn: Connection, chain: str, head: Head) -> None:
    conn.execute(_SET_HEAD, {"chain_": chain, "seq_": head.seq, "mac_": head.mac})


def _advance_and_insert() -> Insert:
    """``WITH moved AS (UPDATE heads ... WHERE seq = :old AND mac = :old RETURNING ...)
    INSERT INTO audit_events ... SELECT ... FROM moved``: the head moves and the first row is
    inserted in one round trip, and neither happens unless the head was still the one
    expected. PostgreSQL only (SQLite has no data-modifying CTEs)."""
    moved = (
        update(heads)
        .where(
            heads.c.chain == bindparam("h_chain", type_=heads.c.chain.type),
            heads.c.seq == bindparam("h_old_seq", type_=heads.c.seq.type),
            heads.c.mac == bindparam("h_old_mac", type_=heads.c.mac.type),
        )
        .values(
            seq=bindparam("h_seq", type_=heads.c.seq.type),
            mac=bindparam("h_mac", type_=heads.c.mac.type),
        )
        .returning(heads.c.seq)
        .cte("moved")
    )
    columns = list(events.c)
    row = select(*(bindparam(f"e_{c.name}", type_=c.type) for c in columns)).select_from(moved)
    # RETURNING rather than rowcount, which SQLAlchemy does not keep for an INSERT by default
    return insert(events).from_select([c.name for c in columns], row).returning(events.c.seq)


_ADVANCE_AND_INSERT = _advance_and_insert()


def advance_head(
    conn: Connection, chain: str, expected: Head, new: Head, rows: Sequence[StoredRow]
) -> bool:
    """Move ``chain``'s head from ``expected`` to ``new`` and insert ``rows`` (which chain
    from ``expected`` up to ``new``), if the head is still ``expected``; False (nothing
    written) when another transaction moved it first. One round trip for a single row.

    Without taking the head's lock first: the UPDATE takes it, and if a concurrent appender
    holds it, waits for that one to end and then re-checks ``expected`` against the head it
    committed (READ COMMITTED), so a stale ``expected`` never forks the chain."""
    params: dict[str, Any] = {f"e_{k}": v for k, v in row_dict(rows[0]).items()}
    params.update(
        h_chain=chain,
        h_old_seq=expected.seq,
        h_old_mac=expected.mac,
        h_seq=new.seq,
        h_mac=new.mac,
    )
    if conn.execute(_ADVANCE_AND_INSERT, params).first() is None:
        return False
    if len(rows) > 1:
        insert_events(conn, rows[1:])
    return True


# --- events ----------------------------------------------------------------------------------


#: the columns of :func:`row_values`, in its order
_EVENT_COLUMNS = (
    "chain",
    "seq",
    "time",
    "principal",
    "role",
    "action",
    "purpose",
    "tenant",
    "record_ref",
    "field_classes",
    "outcome",
    "reason",
    "request_id",
    "on_behalf_of",
    "peer",
    "audit_key_id",
    "mac",
)


def row_values(row: StoredRow, time: Any) -> tuple[Any, ...]:
    """The ``audit_events`` columns of ``row`` in ``_EVENT_COLUMNS`` order, its time given as
    the driver takes it."""
    c = row.content
    return (
        row.chain,
        row.seq,
        time,
        c.principal,
        c.role,
        c.action,
        c.purpose,
        c.tenant,
        c.record_ref,
        c.field_classes,
        c.outcome,
        c.reason,
        c.request_id,
        c.on_behalf_of,
        c.peer,
        c.audit_key_id,
        row.mac,
    )


def insert_events(conn: Connection, rows: Sequence[StoredRow]) -> None:
    """Insert event rows in one bulk insert (COPY on PostgreSQL): a batch write's thousand
    audit rows are one statement's work, not a thousand. Rows of one call share their time,
    converted for the driver once."""
    times: dict[datetime, Any] = {}
    values: list[tuple[Any, ...]] = []
    for row in rows:
        at = row.content.time
        stamp = times.get(at)
        if stamp is None:
            stamp = times[at] = db_time(conn, events, "time", at)
        values.append(row_values(row, stamp))
    bulk_insert(conn, events, _EVENT_COLUMNS, values)


def _stored(row: Row[Any]) -> StoredRow:
    return StoredRow(
        chain=row.chain,
        seq=int(row.seq),
        content=RowContent(
            time=row.time,
            principal=row.principal,
            role=row.role,
            action=row.action,
            purpose=row.purpose,
            tenant=row.tenant,
            record_ref=row.record_ref,
            field_classes=row.field_classes,
            outcome=row.outcome,
            reason=row.reason,
            request_id=row.request_id,
            audit_key_id=row.audit_key_id,
            on_behalf_of=row.on_behalf_of,
            peer=row.peer,
        ),
        mac=bytes(row.mac),
    )


def stream_rows(conn: Connection, chain: str, *, after_seq: int = 0) -> Iterator[StoredRow]:
    """Rows of ``chain`` with ``seq > after_seq`` in seq order, fetched in batches (bounded
    memory: a server-side cursor on PostgreSQL)."""
    result = conn.execution_options(yield_per=STREAM_BATCH).execute(
        select(events)
        .where(events.c.chain == chain, events.c.seq > after_seq)
        .order_by(events.c.seq)
    )
    for row in result:
        yield _stored(row)


def row_at(conn: Connection, chain: str, seq: int) -> StoredRow | None:
    row = conn.execute(select(events).where(events.c.chain == chain, events.c.seq == seq)).first()
    return None if row is None else _stored(row)


def rows_for_refs(
    conn: Connection, tenant: str, refs: Sequence[str], limit: int
) -> list[StoredRow]:
    """Rows about any of ``refs`` in ``tenant`` (every chain), newest first: by time, which is
    all that orders rows of different chains, then by chain and seq (a stable order for rows
    of the same microsecond)."""
    result = conn.execute(
        select(events)
        .where(events.c.tenant == tenant, events.c.record_ref.in_(list(refs)))
        .order_by(events.c.time.desc(), events.c.chain, events.c.seq.desc())
        .limit(limit)
    )
    return [_stored(r) for r in result]


def rows_with_action(conn: Connection, chain: str, action: str) -> list[StoredRow]:
    """Rows of ``chain`` with ``action`` (e.g. re-anchors), in seq order; unverified."""
    result = conn.execute(
        select(events)
        .where(events.c.chain == chain, events.c.action == action)
        .order_by(events.c.seq)
    )
    return [_stored(r) for r in result]


def entry_of(row: StoredRow) -> AuditEntry:
    """The entry a stored row gives back (its record pseudonym, never an id)."""
    c = row.content
    return AuditEntry(
        chain=row.chain,
        seq=row.seq,
        time=utc(c.time),
        principal=c.principal,
        role=c.role,
        action=c.action,
        purpose=c.purpose,
        tenant=c.tenant,
        record_ref=c.record_ref,
        field_classes=split_classes(c.field_classes),
        outcome=c.outcome,
        reason=c.reason,
        request_id=c.request_id,
        on_behalf_of=c.on_behalf_of,
        peer=c.peer,
    )


def row_dict(row: StoredRow) -> dict[str, Any]:
    """The ``audit_events`` columns of ``row``, for an insert."""
    return dict(zip(_EVENT_COLUMNS, row_values(row, row.content.time), strict=True))
