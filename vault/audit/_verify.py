"""Walking a chain: recompute every MAC in seq order and name the first row that is wrong.

The walk stops at the first problem: past it, later rows cannot be trusted to say anything. To
say *what* went wrong, it looks at that row's neighbours (and, for a row moved far away, scans
the rest of the chain once): this costs work only when the chain is already broken.
"""

from __future__ import annotations

import hmac
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from vault.audit._checkpoint import Checkpoint
from vault.audit._epochs import Reanchor
from vault.audit._mac import ZERO_MAC, AuditKeys, row_mac
from vault.audit._store import Head, StoredRow

EDITED: Final = "edited"
DELETED: Final = "deleted"
INSERTED: Final = "inserted"
REORDERED: Final = "reordered"
TRUNCATED: Final = "truncated tail"
HEAD_MISMATCH: Final = "head mismatch"
CHECKPOINT_MISMATCH: Final = "checkpoint mismatch"
BAD_KEY: Final = "unreadable audit key"
BAD_CHECKPOINT: Final = "bad checkpoint"
MISSING_CHECKPOINT: Final = "missing checkpoint"

#: what a truncated tail's detail adds: the one legitimate cause, and what to do about it
RESTORE_HINT: Final = (
    " (if the database was restored from a backup: `cvault audit re-anchor --reason TEXT`"
    " records the restore and re-anchors the chain)"
)

KeysFor = Callable[[str], AuditKeys | None]

#: how many rows after a bad row are tried as its original position before calling it "edited"
REORDER_SCAN_LIMIT: Final = 100_000


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What a verification found.

    Attributes:
        ok: every row checked out, and the head and every checkpoint agree with the rows.
        checked: rows whose MAC was verified (before the first problem); in a report of
            :meth:`AuditLog.checkpoint_now`, also rows the process appended itself from a
            verified row, which it does not read back.
        last_seq: the last verified seq (0 when none).
        first_bad_seq: the first row that is wrong or missing; None when ok (or when no row
            can be named, e.g. a missing head row of an empty chain).
        problem: one of ``edited``, ``deleted``, ``inserted``, ``reordered``,
            ``truncated tail``, ``head mismatch``, ``checkpoint mismatch``,
            ``unreadable audit key``, ``bad checkpoint``, ``missing checkpoint``; "" when ok.
        detail: one sentence for an operator (seqs and names only, never a value).
        checkpoint_seq: the seq of the newest external checkpoint compared against, if any.
        checkpoint_time: when that checkpoint was written, as it says (ISO 8601; "" unknown).
        checkpoints: how many external checkpoints were compared against.
        reanchors: the re-anchors after a restore found in the chain (each explains the
            checkpoints of rows the restore lost; see ``vault/audit/_epochs.py``).
        excused: how many checkpoints those re-anchors account for (not compared).
    """

    ok: bool
    chain: str
    checked: int
    last_seq: int
    first_bad_seq: int | None = None
    problem: str = ""
    detail: str = ""
    checkpoint_seq: int | None = None
    checkpoints: int = 0
    checkpoint_time: str = ""
    reanchors: tuple[Reanchor, ...] = ()
    excused: int = 0


@dataclass(frozen=True, slots=True)
class WalkResult:
    report: VerifyReport
    #: MAC of the row at ``report.last_seq`` (the start MAC when nothing was verified)
    last_mac: bytes


def _eq(a: bytes | None, b: bytes) -> bool:
    return a is not None and hmac.compare_digest(a, b)


class _Walker:
    def __init__(self, chain: str, keys_for: KeysFor) -> None:
        self.chain = chain
        self.keys_for = keys_for

    def mac_at(self, row: StoredRow, seq: int, prev: bytes) -> bytes | None:
        """The MAC ``row``'s content would have at ``seq`` after ``prev`` (None: no key)."""
        keys = self.keys_for(row.content.audit_key_id)
        if keys is None:
            return None
        return row_mac(keys.mac_key, prev, self.chain, seq, row.content)

    def classify(
        self, prev: bytes, bad: StoredRow, rest: Iterator[StoredRow], head: Head | None
    ) -> tuple[str, str]:
        """Why ``bad`` (whose predecessor's MAC ``prev`` is trusted) fails to verify."""
        k = bad.seq
        nxt = next(rest, None)
        if nxt is not None and nxt.seq == k + 1:
            nxt_belongs_here = _eq(self.mac_at(nxt, k, prev), nxt.mac)
            if nxt_belongs_here and _eq(self.mac_at(bad, k + 1, nxt.mac), bad.mac):
                return REORDERED, f"rows {k} and {k + 1} were swapped"
            if nxt_belongs_here:
                return INSERTED, f"row {k} was inserted and the rows after it renumbered"
            if _eq(self.mac_at(nxt, k + 2, bad.mac), nxt.mac):
                return DELETED, f"the row at {k} was deleted and the rows after it renumbered"
        if head is not None and k > head.seq:
            return INSERTED, f"row {k} was added after the last appended row"
        # Moved far away? Try the row's content at each later position, both with its own MAC
        # (the row moved) and with the MAC stored there (only the content moved).
        prev_stored = bad.mac
        later = itertools.chain([] if nxt is None else [nxt], rest)
        for other in itertools.islice(later, REORDER_SCAN_LIMIT):
            tried = self.mac_at(bad, other.seq, prev_stored)
            if _eq(tried, bad.mac) or _eq(tried, other.mac):
                return REORDERED, f"row {k} holds the entry of row {other.seq}"
            prev_stored = other.mac
        return EDITED, f"row {k} does not match its MAC"

    def walk(
        self,
        rows: Iterable[StoredRow],
        *,
        head: Head | None,
        checkpoints: Sequence[Checkpoint],
        start_seq: int = 1,
        start_mac: bytes = ZERO_MAC,
    ) -> WalkResult:
        pins = _Pins(checkpoints, start_seq)
        expected, prev, checked = start_seq, start_mac, 0

        def result(bad_seq: int | None, problem: str = "", detail: str = "") -> WalkResult:
            report = VerifyReport(
                ok=not problem,
                chain=self.chain,
                checked=checked,
                last_seq=expected - 1,
                first_bad_seq=bad_seq,
                problem=problem,
                detail=detail,
                checkpoint_seq=pins.newest,
                checkpoints=pins.count,
                checkpoint_time=pins.newest_time,
            )
            return WalkResult(report, prev)

        it = iter(rows)
        for row in it:
            if row.seq != expected:
                # seq is part of the primary key and rows come in seq order: a jump is a gap
                return result(expected, DELETED, f"rows {expected} to {row.seq - 1} are missing")
            if self.keys_for(row.content.audit_key_id) is None:
                return result(row.seq, BAD_KEY, f"row {row.seq} names an audit key that fails")
            if not _eq(self.mac_at(row, row.seq, prev), row.mac):
                problem, detail = self.classify(prev, row, it, head)
                return result(row.seq, problem, detail)
            if not pins.agree(row):
                return result(
                    row.seq,
                    CHECKPOINT_MISMATCH,
                    f"row {row.seq} differs from the checkpoint at seq {row.seq}",
                )
            if head is not None and row.seq == head.seq and row.mac != head.mac:
                return result(row.seq, HEAD_MISMATCH, f"row {row.seq} differs from the head table")
            prev = row.mac
            expected += 1
            checked += 1
        last = expected - 1
        if pins.newest is not None and pins.newest > last:
            return result(
                last + 1,
                TRUNCATED,
                f"the checkpoint at seq {pins.newest} names a row past the chain's end at {last}"
                f"{RESTORE_HINT}",
            )
        bad_seq, problem, detail = _head_problem(head, last, start_seq)
        return result(bad_seq, problem, detail)


class _Pins:
    """The external checkpoints a walk compares its rows against, taken in seq order."""

    def __init__(self, checkpoints: Sequence[Checkpoint], start_seq: int) -> None:
        self._todo = sorted((c for c in checkpoints if c.seq >= start_seq), key=lambda c: c.seq)
        self._next = 0
        self.count = len(self._todo)
        self.newest = self._todo[-1].seq if self._todo else None
        self.newest_time = max((c.written for c in self._todo if c.seq == self.newest), default="")

    def agree(self, row: StoredRow) -> bool:
        """False when a checkpoint at ``row.seq`` names another MAC (there may be several: a
        legacy checkpoint can share a seq with a write-once one)."""
        ok = True
        while self._next < len(self._todo) and self._todo[self._next].seq <= row.seq:
            pin = self._todo[self._next]
            ok = ok and (pin.seq != row.seq or _eq(pin.mac, row.mac))
            self._next += 1
        return ok


def _head_problem(head: Head | None, last: int, start_seq: int) -> tuple[int | None, str, str]:
    """(bad seq, problem, detail) of the head row against a chain verified up to ``last``."""
    if head is None:
        if last >= start_seq:
            return last, HEAD_MISMATCH, "the chain has rows but no head row"
    elif head.seq > last:
        return (
            last + 1,
            TRUNCATED,
            f"the head table names row {head.seq} but the chain ends at {last}",
        )
    elif head.seq < start_seq - 1:
        return (
            head.seq,
            HEAD_MISMATCH,
            f"the head table names row {head.seq}, behind the checkpoint",
        )
    return None, "", ""


def walk(
    chain: str,
    rows: Iterable[StoredRow],
    keys_for: KeysFor,
    *,
    head: Head | None,
    checkpoints: Sequence[Checkpoint] = (),
    start_seq: int = 1,
    start_mac: bytes = ZERO_MAC,
) -> WalkResult:
    """Verify ``rows`` (seq order, starting at ``start_seq`` after a row whose MAC is
    ``start_mac``) against each other, the head row read before them and every external
    checkpoint (at ``start_seq`` or later; any order)."""
    return _Walker(chain, keys_for).walk(
        rows, head=head, checkpoints=checkpoints, start_seq=start_seq, start_mac=start_mac
    )
