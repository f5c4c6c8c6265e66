"""Walking a chain: recompute every MAC in seq order and name the first row that is wrong.

The walk stops at the first problem: past it, later rows cannot be trusted to say anything. To
say *what* went wrong, it looks at that row's neighbours (and, for a row moved far away, scans
the rest of the chain once): this costs work only when the chain is already broken.
"""

from __future__ import annotations

import hmac
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from vault.audit._checkpoint import Checkpoint
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

KeysFor = Callable[[str], AuditKeys | None]

#: how many rows after a bad row are tried as its original position before calling it "edited"
REORDER_SCAN_LIMIT: Final = 100_000


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What a verification found.

    Attributes:
        ok: every row checked out, and the head and the checkpoint agree with the rows.
        checked: rows whose MAC was verified (before the first problem).
        last_seq: the last verified seq (0 when none).
        first_bad_seq: the first row that is wrong or missing; None when ok (or when no row
            can be named, e.g. a missing head row of an empty chain).
        problem: one of ``edited``, ``deleted``, ``inserted``, ``reordered``,
            ``truncated tail``, ``head mismatch``, ``checkpoint mismatch``,
            ``unreadable audit key``, ``bad checkpoint``; "" when ok.
        detail: one sentence for an operator (seqs and names only, never a value).
        checkpoint_seq: the seq of the external checkpoint compared against, if any.
    """

    ok: bool
    chain: str
    checked: int
    last_seq: int
    first_bad_seq: int | None = None
    problem: str = ""
    detail: str = ""
    checkpoint_seq: int | None = None


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
        checkpoint: Checkpoint | None,
        start_seq: int = 1,
        start_mac: bytes = ZERO_MAC,
    ) -> WalkResult:
        ck_seq = checkpoint.seq if checkpoint is not None else None
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
                checkpoint_seq=ck_seq,
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
            if checkpoint is not None and row.seq == checkpoint.seq and row.mac != checkpoint.mac:
                return result(
                    row.seq, CHECKPOINT_MISMATCH, f"row {row.seq} differs from the checkpoint"
                )
            if head is not None and row.seq == head.seq and row.mac != head.mac:
                return result(row.seq, HEAD_MISMATCH, f"row {row.seq} differs from the head table")
            prev = row.mac
            expected += 1
            checked += 1
        last = expected - 1
        if checkpoint is not None and checkpoint.seq > last:
            return result(
                last + 1,
                TRUNCATED,
                f"the checkpoint names row {checkpoint.seq} but the chain ends at {last}",
            )
        if head is None:
            if last >= start_seq:
                return result(last, HEAD_MISMATCH, "the chain has rows but no head row")
        elif head.seq > last:
            return result(
                last + 1,
                TRUNCATED,
                f"the head table names row {head.seq} but the chain ends at {last}",
            )
        elif head.seq < start_seq - 1:
            return result(
                head.seq,
                HEAD_MISMATCH,
                f"the head table names row {head.seq}, behind the checkpoint",
            )
        return result(None)


def walk(
    chain: str,
    rows: Iterable[StoredRow],
    keys_for: KeysFor,
    *,
    head: Head | None,
    checkpoint: Checkpoint | None = None,
    start_seq: int = 1,
    start_mac: bytes = ZERO_MAC,
) -> WalkResult:
    """Verify ``rows`` (seq order, starting at ``start_seq`` after a row whose MAC is
    ``start_mac``) against each other, the head row read before them and the checkpoint."""
    return _Walker(chain, keys_for).walk(
        rows, head=head, checkpoint=checkpoint, start_seq=start_seq, start_mac=start_mac
    )
