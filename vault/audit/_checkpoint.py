"""Where the chain head is checkpointed outside the database (OpenBao KV v2 in production).

Checkpoint format (all values strings)::

    {"format": "1", "chain": <chain>, "seq": <decimal seq>, "mac": <hex of that row's MAC>,
     "time": <ISO time the checkpoint was written>}
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from vault.deadline import Deadline

CHECKPOINT_FORMAT = "1"


class CheckpointStore(Protocol):
    """One small document outside the database. One store (one path) per chain.

    Implementations: :class:`vault.keys.KvCheckpointStore` (OpenBao/Vault KV v2) and
    :class:`MemoryCheckpointStore` (tests and single-process development only).
    """

    def put(self, data: Mapping[str, str], *, deadline: Deadline) -> None:
        """Replace the document.

        Raises:
            KeyServerUnavailable, KeyServerRefused: the store is down or refused.
        """
        ...

    def get(self, *, deadline: Deadline) -> dict[str, str] | None:
        """The current document, or None when none was ever written.

        Raises:
            KeyServerUnavailable, KeyServerRefused: the store is down or refused.
        """
        ...


class MemoryCheckpointStore:
    """A :class:`CheckpointStore` in process memory, for tests (proves nothing after a restart)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, str] | None = None
        self.puts = 0

    def put(self, data: Mapping[str, str], *, deadline: Deadline) -> None:
        with self._lock:
            self._data = dict(data)
            self.puts += 1

    def get(self, *, deadline: Deadline) -> dict[str, str] | None:
        with self._lock:
            return None if self._data is None else dict(self._data)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A parsed checkpoint: the row ``seq`` of ``chain`` had MAC ``mac``."""

    chain: str
    seq: int
    mac: bytes


def parse_checkpoint(data: Mapping[str, str]) -> Checkpoint | None:
    """The checkpoint in ``data``; None when it is not a well-formed format-1 checkpoint."""
    try:
        if data.get("format") != CHECKPOINT_FORMAT:
            return None
        chain = data["chain"]
        seq = int(data["seq"])
        mac = bytes.fromhex(data["mac"])
    except (KeyError, ValueError, TypeError):
        return None
    if not isinstance(chain, str) or seq < 1 or len(mac) != 32:
        return None
    return Checkpoint(chain, seq, mac)
