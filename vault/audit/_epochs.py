"""Re-anchor rows: what a re-anchor after a database restore records in the chain, and which
checkpoints it accounts for.

A re-anchor (``vault/audit/_restore.py``) appends one row with action ``audit.reanchor``. Its
``request_id`` holds the lost range, MAC'd with the rest of the row::

    reanchor e=<epoch> anchor=<A> head=<N> checkpointed=<H>

- ``epoch``: the checkpoint epoch the re-anchor starts (its own checkpoint is ``e<epoch>-<N+1>``);
- ``anchor``: the seq of the last checkpoint the restored chain still matched (0: none);
- ``head``: the seq the re-anchor row follows (the end of the chain as restored);
- ``checkpointed``: the highest checkpointed seq when it ran.

Its ``reason`` is the operator's reason (a ticket, never a customer value). Verification then
compares the rows with every checkpoint except those of an earlier epoch with
``anchor < seq <= checkpointed``: the checkpoints of rows the restore lost. Only a row that
verifies in the chain excuses anything, so nobody without the audit key can explain away a
truncation; whoever holds it and does so leaves this row, which ``cvault audit verify``
reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from vault.audit._checkpoint import Checkpoint

#: the action of a re-anchor row
REANCHOR_ACTION: Final = "audit.reanchor"
_DESCRIPTOR: Final = re.compile(
    r"reanchor e=([1-9][0-9]{0,8}) anchor=([0-9]{1,19}) head=([0-9]{1,19})"
    r" checkpointed=([1-9][0-9]{0,18})"
)


@dataclass(frozen=True, slots=True)
class Reanchor:
    """A re-anchor of a chain after a restore (see the module docstring for the fields).

    ``seq`` is the re-anchor row's own seq (``head + 1``); ``principal``, ``reason`` and
    ``time`` are the row's, None/"" before it is written.
    """

    seq: int
    epoch: int
    anchor: int
    head: int
    checkpointed: int
    principal: str = ""
    reason: str = ""
    time: datetime | None = None

    def descriptor(self) -> str:
        """The row's ``request_id``."""
        return (
            f"reanchor e={self.epoch} anchor={self.anchor} head={self.head}"
            f" checkpointed={self.checkpointed}"
        )

    def excuses(self, checkpoint: Checkpoint) -> bool:
        """True for a checkpoint of a row this re-anchor says the restore lost."""
        return checkpoint.epoch < self.epoch and self.anchor < checkpoint.seq <= self.checkpointed

    def describe(self) -> str:
        """One sentence for an operator (seqs, names and the operator's reason only)."""
        when = "" if self.time is None else f" on {self.time.isoformat(timespec='seconds')}"
        who = f" by {self.principal}" if self.principal else ""
        reason = f"; reason: {self.reason}" if self.reason else ""
        return (
            f"re-anchored at seq {self.seq} (checkpoint epoch {self.epoch}){when}{who}: the"
            f" restored chain ended at seq {self.head}; its checkpoints after seq {self.anchor}"
            f" up to seq {self.checkpointed} name rows the restore lost{reason}"
        )


def parse_reanchor(
    seq: int, request_id: str, *, principal: str = "", reason: str = "", time: datetime | None
) -> Reanchor | None:
    """The re-anchor a row at ``seq`` records; None when its ``request_id`` is no well-formed
    descriptor or it does not follow the head it names (such a row excuses nothing)."""
    match = _DESCRIPTOR.fullmatch(request_id)
    if match is None:
        return None
    epoch, anchor, head, checkpointed = (int(g) for g in match.groups())
    if seq != head + 1 or anchor > head or checkpointed <= anchor:
        return None
    return Reanchor(seq, epoch, anchor, head, checkpointed, principal, reason, time)
