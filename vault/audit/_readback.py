"""Reading a chain's checkpoints back from the store: every one (verification) or the newest
(the checkpoint thread), each checked against its name, its chain and the checkpoint it names.

Cost: one listing of the chain's folder and one read per checkpoint, ``READ_WORKERS`` at a
time. Checkpoints come every ``checkpoint_every`` rows or ``checkpoint_max_age`` seconds, so a
chain of ``n`` rows has at most ``n / checkpoint_every`` plus one per five minutes of traffic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

from vault.audit._checkpoint import (
    LEGACY_FORMAT,
    Checkpoint,
    CheckpointStore,
    checkpoint_name,
    parse_checkpoint,
    parse_name,
)
from vault.audit._verify import BAD_CHECKPOINT, MISSING_CHECKPOINT
from vault.deadline import Deadline

#: checkpoint documents read at once while verifying
READ_WORKERS: Final = 8


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with the checkpoints: a ``bad checkpoint`` or a ``missing checkpoint``,
    at ``seq`` (None when no seq can be named)."""

    seq: int | None
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class Found:
    """The checkpoints of one chain that can be compared with its rows (seq order, a legacy
    one included), and the first thing wrong with what the store holds (None: nothing)."""

    checkpoints: tuple[Checkpoint, ...]
    problem: Problem | None = None


def read_all(
    store: CheckpointStore,
    chain: str,
    legacy: Mapping[str, str] | None,
    *,
    deadline: Deadline,
) -> Found:
    """Every checkpoint of ``chain``: its write-once documents, plus ``legacy`` (the format-1
    document of earlier versions, read once by the caller) when it names this chain.

    A document that was deleted, or that a later checkpoint names as its predecessor and is
    gone, is a ``missing checkpoint``; one that is malformed or names another row is a
    ``bad checkpoint``.

    Raises:
        KeyServerUnavailable, KeyServerRefused: the store could not be read.
    """
    problems: list[Problem] = []
    found: list[Checkpoint] = []
    for item in (_legacy_checkpoint(legacy), *_read_write_once(store, chain, deadline)):
        if isinstance(item, Problem):
            problems.append(item)
        elif item is not None and item.chain == chain:
            found.append(item)
    problems.extend(_broken_links(found))
    found.sort(key=lambda c: c.seq)
    first = min(problems, key=lambda p: -1 if p.seq is None else p.seq, default=None)
    return Found(tuple(found), first)


def read_newest(store: CheckpointStore, chain: str, *, deadline: Deadline) -> Found:
    """The newest checkpoint of ``chain`` (none, or one): its write-once document of the
    highest seq in the newest epoch, else the legacy document when it names this chain. Two
    reads (the listing and one document).

    Raises:
        KeyServerUnavailable, KeyServerRefused: the store could not be read.
    """
    named, _ = _seqs(store.names(chain, deadline=deadline))
    item: Checkpoint | Problem | None
    if named:
        epoch, seq = max(named)
        doc = store.read(chain, checkpoint_name(seq, epoch), deadline=deadline)
        item = _write_once(chain, epoch, seq, doc)
    else:
        item = _legacy_checkpoint(store.legacy(deadline=deadline))
    if isinstance(item, Problem):
        return Found((), item)
    return Found(() if item is None or item.chain != chain else (item,))


def _legacy_checkpoint(data: Mapping[str, str] | None) -> Checkpoint | Problem | None:
    if data is None:
        return None
    checkpoint = parse_checkpoint(data)
    if checkpoint is None or data.get("format") != LEGACY_FORMAT:
        return Problem(None, BAD_CHECKPOINT, "the format-1 checkpoint at the kv_path is malformed")
    return checkpoint


def _read_write_once(
    store: CheckpointStore, chain: str, deadline: Deadline
) -> list[Checkpoint | Problem]:
    """Every write-once document of ``chain`` (every epoch), parsed (``READ_WORKERS`` reads at a
    time)."""
    seqs, junk = _seqs(store.names(chain, deadline=deadline))

    def read(named: tuple[int, int]) -> Checkpoint | Problem:
        epoch, seq = named
        doc = store.read(chain, checkpoint_name(seq, epoch), deadline=deadline)
        return _write_once(chain, epoch, seq, doc)

    items: list[Checkpoint | Problem] = []
    if junk:
        items.append(Problem(None, BAD_CHECKPOINT, f"{junk} checkpoint name(s) are not seqs"))
    if len(seqs) <= 1:
        return items + [read(seq) for seq in seqs]
    with ThreadPoolExecutor(max_workers=min(READ_WORKERS, len(seqs))) as pool:
        return items + list(pool.map(read, seqs))


def _seqs(names: Sequence[str]) -> tuple[list[tuple[int, int]], int]:
    """((epoch, seq) of each checkpoint name, sorted; how many names are not checkpoint
    names)."""
    seqs = [named for name in names if (named := parse_name(name)) is not None]
    return sorted(seqs), len(names) - len(seqs)


def _write_once(
    chain: str, epoch: int, seq: int, doc: Mapping[str, str] | None
) -> Checkpoint | Problem:
    """The format-2 checkpoint stored under ``seq`` of ``epoch``, or why it cannot be used."""
    where = f"seq {seq}" if epoch == 0 else f"seq {seq} of epoch {epoch}"
    if doc is None:
        return Problem(seq, MISSING_CHECKPOINT, f"the checkpoint at {where} was deleted")
    checkpoint = parse_checkpoint(doc)
    if (
        checkpoint is None
        or checkpoint.prev is None
        or checkpoint.chain != chain
        or checkpoint.seq != seq
        or checkpoint.epoch != epoch
    ):
        return Problem(seq, BAD_CHECKPOINT, f"the checkpoint at {where} is malformed")
    return checkpoint


def _broken_links(found: Sequence[Checkpoint]) -> list[Problem]:
    """Write-once checkpoints naming a predecessor (of their epoch) that is not among them."""
    present = {(c.epoch, c.seq) for c in found if c.prev is not None}
    return [
        Problem(
            c.prev,
            MISSING_CHECKPOINT,
            f"the checkpoint at seq {c.seq} follows one at seq {c.prev}, which is gone",
        )
        for c in found
        if c.prev and (c.epoch, c.prev) not in present
    ]
