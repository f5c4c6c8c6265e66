"""Secondary audit sinks: the same events as JSON lines, written after the database commit.

The database chain is the record of truth; a sink is a copy for log shipping (SIEM, stdout in a
container). Lines carry the record's pseudonym, never its id, and no customer value.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Protocol

from vault.audit._event import AuditEntry


class AuditSink(Protocol):
    """Receives committed audit entries. May raise; :class:`AuditLog` logs and carries on."""

    def write(self, entries: Sequence[AuditEntry]) -> None: ...


def entry_json(entry: AuditEntry) -> str:
    """One JSON object (no newline) with the entry's fields; keys in a fixed order."""
    return json.dumps(
        {
            "time": entry.time.isoformat(),
            "chain": entry.chain,
            "seq": entry.seq,
            "principal": entry.principal,
            "role": entry.role,
            "action": entry.action,
            "purpose": entry.purpose,
            "tenant": entry.tenant,
            "record_ref": entry.record_ref,
            "field_classes": list(entry.field_classes),
            "outcome": entry.outcome,
            "reason": entry.reason,
            "request_id": entry.request_id,
            "on_behalf_of": entry.on_behalf_of,
            "peer": entry.peer,
        },
        ensure_ascii=True,
        separators=(",", ":"),
    )


class JsonLinesSink:
    """Appends one JSON object per entry to a file (opened in append mode) or a text stream.

    Thread-safe: a batch of entries is written and flushed under one lock, so lines from
    concurrent calls never interleave.
    """

    def __init__(self, target: str | Path | IO[str]) -> None:
        self._lock = threading.Lock()
        if isinstance(target, str | Path):
            self._stream: IO[str] | None = open(target, "a", encoding="utf-8")  # noqa: SIM115
            self._owned = True
            self._name = str(target)
        else:
            self._stream = target
            self._owned = False
            self._name = getattr(target, "name", type(target).__name__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r})"

    def _target(self) -> IO[str]:
        if self._stream is None:
            raise ValueError("audit sink is closed")
        return self._stream

    def write(self, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return
        text = "".join(entry_json(e) + "\n" for e in entries)
        with self._lock:
            stream = self._target()
            stream.write(text)
            stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._owned and self._stream is not None:
                self._stream.close()
            self._stream = None


class StdoutSink(JsonLinesSink):
    """JSON lines on whatever ``sys.stdout`` is at the time of each write."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def _target(self) -> IO[str]:
        return sys.stdout
