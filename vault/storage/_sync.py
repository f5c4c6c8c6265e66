"""Key events and replica heartbeats: how a step that takes key material out of use (an
erasure, a rekey, a rotation destroying old versions) reaches every running server's caches.

The step writes a ``key_events`` row in its own transaction; every server polls the rows after
the last one it applied, evicts their ids and records how far it got in ``replica_sync``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, cast

from sqlalchemy import Table, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from vault.storage.models import KeyEvent, ReplicaSync

_ev = cast(Table, KeyEvent.__table__)
_rs = cast(Table, ReplicaSync.__table__)

#: the kinds of key event: which cache their ids leave
DATA_KEYS = "data_keys"
TENANT_KEYS = "tenant_keys"


class Event(NamedTuple):
    seq: int
    kind: str
    ids: list[str]


class Replica(NamedTuple):
    replica: str
    applied_seq: int
    seen_at: datetime


def record_event(
    conn: Connection, tenant: str, kind: str, ids: Sequence[str], now: datetime
) -> None:
    """Record that these keys left use (nothing when there are none)."""
    if ids:
        conn.execute(
            insert(_ev).values(tenant=tenant, kind=kind, ids=json.dumps(sorted(ids)), at=now)
        )


def events_after(
    conn: Connection, seq: int, also: Sequence[int] = (), limit: int = 1000
) -> list[Event]:
    """The events after ``seq`` (and those of ``also``: seqs seen missing before, which a
    transaction still open may yet commit), in order, at most ``limit``."""
    where = _ev.c.seq > seq
    if also:
        where = or_(where, _ev.c.seq.in_(list(also)))
    rows = conn.execute(
        select(_ev.c.seq, _ev.c.kind, _ev.c.ids).where(where).order_by(_ev.c.seq).limit(limit)
    ).all()
    return [Event(int(r.seq), str(r.kind), list(json.loads(r.ids))) for r in rows]


def newest_seq(conn: Connection, tenant: str | None = None) -> int:
    """The seq of the newest event (of ``tenant``'s, if given); 0 when there is none."""
    query = select(func.max(_ev.c.seq))
    if tenant is not None:
        query = query.where(_ev.c.tenant == tenant)
    return int(conn.execute(query).scalar_one() or 0)


def beat(conn: Connection, replica: str, applied_seq: int, now: datetime) -> None:
    """Record that ``replica`` has applied every event up to ``applied_seq``, now."""
    done = conn.execute(
        update(_rs).where(_rs.c.replica == replica).values(applied_seq=applied_seq, seen_at=now)
    ).rowcount
    if not done:
        conn.execute(insert(_rs).values(replica=replica, applied_seq=applied_seq, seen_at=now))


def replicas(conn: Connection) -> list[Replica]:
    """Every server's last heartbeat."""
    rows = conn.execute(select(_rs.c.replica, _rs.c.applied_seq, _rs.c.seen_at)).all()
    return [Replica(str(r.replica), int(r.applied_seq), r.seen_at) for r in rows]
