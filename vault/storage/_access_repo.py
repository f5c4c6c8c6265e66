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
    #: the row's MAC and the audit key its row key came from (None: written before they
    #: existed, or a history entry, which has none)
    mac: bytes | None = None
    mac_key_id: str | None = None


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
    mac = None if r.mac is None else bytes(r.mac)
    return ConsentState(r.version, _split(r.purposes), r.source, r.updated_at, mac, r.mac_key_id)


def set_consent(conn: Connection, tenant: str, record_id: str, new: ConsentState) -> bool:
    """Store ``new`` (its MAC too) and add it to the history, if the consent is still at the
    version before ``new.version``; False when it moved on meanwhile."""
    assert new.updated_at is not None
    expected_version = new.version - 1
    row = {
        "version": new.version,
        "purposes": _join(new.purposes),
        "source": new.source,
        "updated_at": new.updated_at,
        "mac": new.mac,
        "mac_key_id": new.mac_key_id,
    }
    if expected_version == 0:
        try:
            with conn.begin_nested():
                conn.execute(insert(_rc).values(record_id=record_id, tenant=tenant, **row))
        except IntegrityError:
            return False
    else:
        res = conn.execute(
            update(_rc)
            .where(
                _rc.c.record_id == record_id,
                _rc.c.tenant == tenant,
                _rc.c.version == expected_version,
            )
            .values(**row)
        )
        if res.rowcount != 1:
            return False
    conn.execute(
        insert(_ch).values(
            tenant=tenant,
            record_id=record_id,
            version=new.version,
            purposes=row["purposes"],
            source=new.source,
            changed_at=new.updated_at,
        )
    )
    return True


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
