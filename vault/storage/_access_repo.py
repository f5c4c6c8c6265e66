"""Repository functions for consents and rate-limit counters (over the caller's connection)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from vault.storage.models_access import ConsentHistory, RateCounter, RecordConsent

_rc = cast(Table, RecordConsent.__table__)
_ch = cast(Table, ConsentHistory.__table__)
_cnt = cast(Table, RateCounter.__table__)


@dataclass(frozen=True, slots=True)
class ConsentState:
    version: int
    purposes: frozenset[str]
    source: str
    updated_at: datetime | None


NO_CONSENT = ConsentState(0, frozenset(), "", None)


def _join(purposes: Iterable[str]) -> str:
    return ",".join(sorted(set(purposes)))


def _split(text: str) -> frozenset[str]:
    return frozenset(p for p in text.split(",") if p)


def get_consent(conn: Connection, tenant: str, record_id: str) -> ConsentState:
    r = conn.execute(
        select(_rc).where(_rc.c.record_id == record_id, _rc.c.tenant == tenant)
    ).first()
    if r is None:
        return NO_CONSENT
    return ConsentState(r.version, _split(r.purposes), r.source, r.updated_at)


def set_consent(
    conn: Connection,
    tenant: str,
    record_id: str,
    purposes: Iterable[str],
    *,
    expected_version: int,
    source: str,
    now: datetime,
) -> ConsentState | None:
    """Replace the consented purposes if still at ``expected_version``; None when it moved on."""
    text = _join(purposes)
    new_version = expected_version + 1
    if expected_version == 0:
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(_rc).values(
                        record_id=record_id,
                        tenant=tenant,
                        version=1,
                        purposes=text,
                        source=source,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            return None
    else:
        res = conn.execute(
            update(_rc)
            .where(
                _rc.c.record_id == record_id,
                _rc.c.tenant == tenant,
                _rc.c.version == expected_version,
            )
            .values(version=new_version, purposes=text, source=source, updated_at=now)
        )
        if res.rowcount != 1:
            return None
    conn.execute(
        insert(_ch).values(
            tenant=tenant,
            record_id=record_id,
            version=new_version,
            purposes=text,
            source=source,
            changed_at=now,
        )
    )
    return ConsentState(new_version, _split(text), source, now)


def consent_history(conn: Connection, tenant: str, record_id: str) -> list[ConsentState]:
    rows = conn.execute(
        select(_ch)
        .where(_ch.c.record_id == record_id, _ch.c.tenant == tenant)
        .order_by(_ch.c.version)
    ).all()
    return [ConsentState(r.version, _split(r.purposes), r.source, r.changed_at) for r in rows]


def erase_consents(conn: Connection, record_id: str) -> None:
    conn.execute(delete(_rc).where(_rc.c.record_id == record_id))
    conn.execute(delete(_ch).where(_ch.c.record_id == record_id))


def add_to_counter(
    conn: Connection, principal: str, window: str, window_start: int, amount: int
) -> int:
    """Add ``amount`` to a shared counter and return its new value.

    The UPDATE takes the row lock (PostgreSQL) or runs inside the write transaction (SQLite),
    so concurrent replicas serialize on the same counter and none of them can overshoot.
    """
    where = (
        (_cnt.c.principal == principal)
        & (_cnt.c.window == window)
        & (_cnt.c.window_start == window_start)
    )
    for _attempt in range(3):
        res = conn.execute(update(_cnt).where(where).values(count=_cnt.c.count + amount))
        if res.rowcount == 1:
            return int(conn.execute(select(_cnt.c.count).where(where)).scalar_one())
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(_cnt).values(
                        principal=principal, window=window, window_start=window_start, count=amount
                    )
                )
            return amount
        except IntegrityError:
            continue  # another replica created the row first: update it instead
    raise RuntimeError("rate counter could not be updated")


def prune_counters(conn: Connection, window: str, before: int) -> int:
    res = conn.execute(delete(_cnt).where(_cnt.c.window == window, _cnt.c.window_start < before))
    return int(res.rowcount or 0)
