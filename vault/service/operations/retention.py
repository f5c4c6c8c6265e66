"""Retention: crypto-shred what the schema's retention periods say is past them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from vault.audit import AuditEvent
from vault.deadline import Deadline
from vault.service._core import Core
from vault.service._erasure import RecordChanged, erase_with_tokens, value_prints
from vault.storage import repo, tokens_repo

#: ``event(action, tenant, record_id)``: the operator's audit event of one erasure
EventOf = Callable[[str, str, str], AuditEvent]

#: a dry run counts everything at once
_ALL = 10**9
#: each purge transaction's deadline
_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What a retention purge erased (or, in a dry run, would erase): whole records, and data
    keys of a class (in a dry run) or values (otherwise) past their class's period."""

    records: int
    values: int


def purge_expired(
    core: Core,
    *,
    now: datetime,
    event: EventOf,
    batch: int = 100,
    dry_run: bool = False,
) -> PurgeReport:
    """Crypto-shred what the schema's retention says is past it: whole records not written
    for ``record_retention_days`` (the same erasure as DeleteRecord, with its tombstones and
    the tokens of its values),
    and, per class with a period, that class's values (its data key destroyed and
    tombstoned, the fields dropped, the standalone tokens of those values tombstoned as an
    erasure does; the record lives on with a new version). ``batch`` per
    transaction; each erasure is audited with ``event(action, tenant, record_id)``.
    ``dry_run`` only counts."""
    records = values = 0
    days = core.schema.record_retention_days
    if days is not None:
        records = _purge_records(core, now - timedelta(days=days), now, event, batch, dry_run)
    for field_class, class_days in sorted(core.schema.class_retention_days.items()):
        before = now - timedelta(days=class_days)
        values += _purge_class(core, field_class.value, before, now, event, batch, dry_run)
    return PurgeReport(records, values)


def _purge_records(
    core: Core,
    before: datetime,
    now: datetime,
    event: EventOf,
    batch: int,
    dry_run: bool,
) -> int:
    """Erase the records not written since ``before``; how many (a dry run: would be)."""
    done = 0
    while True:
        with core.db.begin(write=False) as conn:
            due = repo.records_not_updated_since(conn, before, _ALL if dry_run else batch)
        if dry_run:
            return len(due)
        if not due:
            return done
        deadline = Deadline.after(_SECONDS)
        # each record's values fingerprinted first (its tokens are erased with it)
        prints = {(t, r): value_prints(core, t, r, deadline=deadline) for t, r in due}
        live = {k: p for k, p in prints.items() if p is not None}
        events = [event("retention.erase", t, r) for t, r in live]
        shredded: list[str] = []
        try:
            with core.audited_write(events, deadline=deadline) as conn:
                for (tenant, rid), p in live.items():
                    shredded += erase_with_tokens(conn, tenant, rid, p, now).data_key_ids
        except RecordChanged:
            continue  # one was written meanwhile (so maybe no longer due): look again
        core.data_keys.forget(shredded)
        done += len(live)


def _purge_class(
    core: Core,
    field_class: str,
    before: datetime,
    now: datetime,
    event: EventOf,
    batch: int,
    dry_run: bool,
) -> int:
    """Shred the values of a class whose data key was not written since ``before``: how many
    values (a dry run: how many data keys would go)."""
    done = 0
    while True:
        with core.db.begin(write=False) as conn:
            keys = repo.class_keys_not_updated_since(
                conn, field_class, before, _ALL if dry_run else batch
            )
        if dry_run:
            return len(keys)
        if not keys:
            return done
        deadline = Deadline.after(_SECONDS)
        # the class's values fingerprinted first (their standalone tokens go with them)
        prints = {
            (t, r, k): value_prints(core, t, r, deadline=deadline, data_key_id=k)
            for t, r, k in keys
        }
        live = {k: p for k, p in prints.items() if p is not None}
        events = [event(f"retention.shred.{field_class}", t, r) for t, r, _ in live]
        shredded = 0
        try:
            with core.audited_write(events, deadline=deadline) as conn:
                for (tenant, rid, dek), p in live.items():
                    if not repo.touch_record(conn, tenant, rid, p.version):
                        raise RecordChanged
                    shredded += repo.shred_class_values(conn, tenant, rid, dek, now)
                    tokens_repo.tombstone_fingerprints(conn, tenant, rid, p.fingerprints, now)
        except RecordChanged:
            continue  # one was written meanwhile (so maybe no longer due): look again
        core.data_keys.forget(dek for _, _, dek in live)
        done += shredded
        if not live:
            return done
