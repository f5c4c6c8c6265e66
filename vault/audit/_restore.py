"""After a database restore: verifying a chain that was re-anchored, and the re-anchor itself.

**The problem.** A restored database ends at an older seq than the write-once checkpoints in
the key server, which is exactly what a truncation looks like (``truncated tail``), and the
chain's next seqs would land on checkpoint documents that already exist (and never change).

**The re-anchor** (``cvault audit re-anchor --reason TEXT``, :meth:`AuditLog.reanchor`), run
with every server stopped, once the restored database is migrated:

1. reads every checkpoint of the chain; a deleted or malformed one refuses the re-anchor;
2. verifies the restored rows among themselves (MACs, seqs, head): a broken row refuses it,
   since a restore loses rows at the end and breaks none;
3. finds the **anchor**, the last checkpoint the rows still match (in seq order, the
   checkpoints a previous re-anchor accounts for left out), and the first that does not: none
   failing refuses it (nothing to explain);
4. appends one row, action ``audit.reanchor`` (``vault/audit/_epochs.py``), with the anchor, the
   chain's end (``head``), the highest checkpointed seq and the new **epoch**, under the
   operator's principal and reason, after checking the head did not move;
5. writes that row's checkpoint as the first of the new epoch (``e<epoch>-<seq>``), so it is
   pinned outside the database too and the servers' checkpoints continue in that epoch.

If step 5 fails (key server down), running the command again writes the missing checkpoint.

**Verification** compares the rows with every checkpoint except the ones a re-anchor row
excuses (an earlier epoch's, after its anchor, up to its highest checkpointed seq), and reports
each re-anchor. A re-anchor row must verify like any other, so deleting rows and adding a
re-anchor needs the audit key; whoever has it and does that leaves the row, its principal and
reason in the chain, and the checkpoints of the lost rows stay in the key server.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.engine import Connection

from vault.audit import _store as store
from vault.audit._checkpoint import (
    Checkpoint,
    CheckpointStore,
    checkpoint_document,
    checkpoint_name,
    parse_checkpoint,
)
from vault.audit._epochs import REANCHOR_ACTION, Reanchor, parse_reanchor
from vault.audit._errors import ReanchorRefused
from vault.audit._event import ALLOWED, AuditEvent
from vault.audit._mac import AuditKeys, utc
from vault.audit._readback import Found, read_all
from vault.audit._verify import MISSING_CHECKPOINT, VerifyReport, walk
from vault.deadline import Deadline

if TYPE_CHECKING:
    from collections.abc import Callable

    from vault.audit._event import AuditEntry
    from vault.storage import Database

    Lookup = Callable[[str], AuditKeys | None]


def reanchors(conn: Connection, chain: str) -> list[Reanchor]:
    """The well-formed re-anchor rows of ``chain`` in seq order (unverified: only a walk that
    gets past them vouches for them)."""
    found = []
    for row in store.rows_with_action(conn, chain, REANCHOR_ACTION):
        c = row.content
        parsed = parse_reanchor(
            row.seq, c.request_id, principal=c.principal, reason=c.reason, time=utc(c.time)
        )
        if parsed is not None:
            found.append(parsed)
    return found


def _pins(checkpoints: Sequence[Checkpoint], anchors: Sequence[Reanchor]) -> list[Checkpoint]:
    """The checkpoints no re-anchor accounts for."""
    return [c for c in checkpoints if not any(a.excuses(c) for a in anchors)]


def verify_rows(
    conn: Connection, chain: str, lookup: Lookup, found: Found, *, with_store: bool
) -> VerifyReport:
    """Walk ``chain`` against its checkpoints in ``found`` less those its re-anchor rows
    account for; each re-anchor must have its own checkpoint when a store is configured."""
    # The head is read before the rows: rows appended meanwhile only extend the chain.
    head = store.read_head(conn, chain)
    anchors = reanchors(conn, chain)
    pins = _pins(found.checkpoints, anchors)
    result = walk(chain, store.stream_rows(conn, chain), lookup, head=head, checkpoints=pins)
    report = replace(
        result.report,
        reanchors=tuple(anchors),
        excused=len(found.checkpoints) - len(pins),
    )
    if not report.ok or not with_store:
        return report
    present = {(c.epoch, c.seq) for c in found.checkpoints}
    for anchor in anchors:
        if (anchor.epoch, anchor.seq) not in present:
            return replace(
                report,
                ok=False,
                first_bad_seq=anchor.seq,
                problem=MISSING_CHECKPOINT,
                detail=f"the re-anchor at seq {anchor.seq} has no checkpoint of epoch"
                f" {anchor.epoch} (run `cvault audit re-anchor` again to write it)",
            )
    return report


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a re-anchor found: the chain's end and, unless ``resume``, the row to append."""

    head: store.Head
    marker: Reanchor | None = None
    #: a re-anchor row whose checkpoint is still to be written (a previous run stopped)
    resume: Reanchor | None = None


def _plan(conn: Connection, chain: str, lookup: Lookup, checkpoints: Sequence[Checkpoint]) -> _Plan:
    """Steps 2 and 3 of the module docstring, over one read transaction."""
    head = store.read_head(conn, chain)
    result = walk(chain, store.stream_rows(conn, chain), lookup, head=head)
    report = result.report
    if not report.ok:
        raise ReanchorRefused(
            f"the rows of chain {chain} are broken at seq {report.first_bad_seq}"
            f" ({report.problem}): a restore loses rows at the end, it breaks none"
        )
    end = store.Head(report.last_seq, result.last_mac)
    anchors = reanchors(conn, chain)
    present = {(c.epoch, c.seq) for c in checkpoints}
    if anchors and (anchors[-1].epoch, anchors[-1].seq) not in present:
        return _Plan(end, resume=anchors[-1])
    anchor = 0
    failing: Checkpoint | None = None
    for pin in sorted(_pins(checkpoints, anchors), key=lambda c: c.seq):
        row = store.row_at(conn, chain, pin.seq)
        if row is None or not hmac.compare_digest(row.mac, pin.mac):
            failing = pin
            break
        anchor = pin.seq
    if failing is None:
        raise ReanchorRefused(
            f"chain {chain} matches every checkpoint of it: there is no restore to re-anchor"
        )
    epoch = max([c.epoch for c in checkpoints] + [a.epoch for a in anchors]) + 1
    marker = Reanchor(
        seq=end.seq + 1,
        epoch=epoch,
        anchor=anchor,
        head=end.seq,
        checkpointed=max(c.seq for c in checkpoints),
    )
    return _Plan(end, marker=marker)


class ChainWriter(Protocol):
    """What a re-anchor needs of :class:`~vault.audit.AuditLog` (a protocol, so that the log
    can call this module without an import cycle)."""

    chain: str

    @property
    def db(self) -> Database: ...

    def prepare(self, *, deadline: Deadline) -> None: ...

    def append(
        self, conn: Connection, events: Sequence[AuditEvent], *, deadline: Deadline
    ) -> list[AuditEntry]: ...


def reanchor_chain(
    log: ChainWriter,
    checkpoints: CheckpointStore,
    lookup: Callable[[Connection, str], AuditKeys | None],
    event: AuditEvent,
    *,
    deadline: Deadline,
) -> Reanchor:
    """Re-anchor ``log``'s chain after a restore (the module docstring's steps): append the
    re-anchor row made from ``event`` (its principal, role and reason) and write its checkpoint.

    Returns:
        The re-anchor recorded (or the one whose missing checkpoint was written now).

    Raises:
        ReanchorRefused: nothing to re-anchor, a broken row or checkpoint, or the chain moved.
        KeyServerUnavailable, KeyServerRefused, DatabaseUnavailable, AuditUnavailable.
    """
    chain = log.chain
    found = read_all(checkpoints, chain, checkpoints.legacy(deadline=deadline), deadline=deadline)
    if found.problem is not None:
        raise ReanchorRefused(
            f"the checkpoints of chain {chain} are not intact ({found.problem.kind}:"
            f" {found.problem.detail}); a re-anchor never accounts for those"
        )
    if not found.checkpoints:
        raise ReanchorRefused(f"chain {chain} has no checkpoint: there is nothing to re-anchor")
    log.prepare(deadline=deadline)
    with log.db.begin(write=False) as conn:
        plan = _plan(conn, chain, lambda key_id: lookup(conn, key_id), found.checkpoints)
    if plan.resume is not None:
        with log.db.begin(write=False) as conn:
            row = store.row_at(conn, chain, plan.resume.seq)
        assert row is not None  # found by the walk above; rows are never deleted
        _write(checkpoints, Checkpoint(chain, row.seq, row.mac, 0, plan.resume.epoch), deadline)
        return plan.resume
    marker = plan.marker
    assert marker is not None
    row_event = replace(
        event, action=REANCHOR_ACTION, outcome=ALLOWED, request_id=marker.descriptor()
    )
    with log.db.begin(write=True) as conn:
        now = store.lock_head(conn, chain)
        if now.seq != plan.head.seq or not hmac.compare_digest(now.mac, plan.head.mac):
            raise ReanchorRefused(
                f"chain {chain} moved while re-anchoring (now at seq {now.seq}): stop every"
                " server of this database and run the command again"
            )
        (entry,) = log.append(conn, [row_event], deadline=deadline)
        row = store.row_at(conn, chain, entry.seq)
    assert row is not None  # appended just now
    _write(checkpoints, Checkpoint(chain, row.seq, row.mac, 0, marker.epoch), deadline)
    return replace(marker, principal=entry.principal, reason=entry.reason, time=entry.time)


def _write(checkpoints: CheckpointStore, checkpoint: Checkpoint, deadline: Deadline) -> None:
    """Create the first checkpoint of a re-anchor's epoch (the same one already there is fine)."""
    name = checkpoint_name(checkpoint.seq, checkpoint.epoch)
    doc = checkpoint_document(checkpoint, datetime.now(UTC))
    if checkpoints.create(checkpoint.chain, name, doc, deadline=deadline):
        return
    there = checkpoints.read(checkpoint.chain, name, deadline=deadline)
    found = None if there is None else parse_checkpoint(there)
    if found is None or not hmac.compare_digest(found.mac, checkpoint.mac):
        raise ReanchorRefused(
            f"a different checkpoint {name} of chain {checkpoint.chain} is already there"
        )
