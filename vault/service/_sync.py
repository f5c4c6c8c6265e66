"""Erasures and rotations reach this process's memory: a thread polls the key events (see
:mod:`vault.storage._sync`) and evicts their ids from the key caches, then records how far it
got (a heartbeat ``shred-report`` reads).

The bound: a server evicts a step's keys within ``SYNC_SECONDS`` (plus one poll) of its commit.
A server that cannot poll (its database unreachable) for ``EVICT_WITHIN_SECONDS`` clears both
key caches instead, since it may have missed a step. So an erasure, a rekey or a destroyed
tenant-key version leaves every running server's memory within ``EVICT_WITHIN_SECONDS``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

from sqlalchemy.exc import SQLAlchemyError

from vault.errors import DatabaseUnavailable
from vault.keys import KeyManager
from vault.storage import Database
from vault.storage import sync as key_events

log = logging.getLogger("vault.service.sync")

#: how often a server polls the key events
SYNC_SECONDS: Final = 2.0
#: within this long of a step, every running server has dropped its keys from memory
EVICT_WITHIN_SECONDS: Final = 10.0
#: a seq seen missing (its transaction not yet committed) is looked for this long
HOLE_SECONDS: Final = 60.0


class KeySync:
    """Applies the key events to one process's key caches. Thread-safe; one per server."""

    def __init__(
        self,
        db: Database,
        keys: KeyManager,
        replica: str,
        *,
        interval: float = SYNC_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._keys = keys
        self.replica = replica
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        # None until the first poll, which starts after the newest event (see _first)
        self._applied: int | None = None
        self._holes: dict[int, float] = {}
        self._last_ok = clock()
        self._cleared = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def applied_seq(self) -> int:
        """Every event up to this seq is applied (a hole still awaited holds it back)."""
        with self._lock:
            return min(self._holes) - 1 if self._holes else (self._applied or 0)

    def start(self) -> None:
        self.sync_once()
        self._thread = threading.Thread(target=self._run, name="cvault-key-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)  # a poll stuck on the database is left behind (daemon)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sync_once()

    def sync_once(self) -> bool:
        """Poll, evict, beat; False when the database could not be used (or has no key events
        yet: a schema this server waits to be upgraded)."""
        try:
            with self._db.begin(write=False) as conn:
                if self._applied is None:
                    self._first(key_events.newest_seq(conn))
                events = key_events.events_after(conn, self._applied or 0, sorted(self._holes))
            self._apply(events)
            with self._db.begin() as conn:
                key_events.beat(conn, self.replica, self.applied_seq, datetime.now(UTC))
        except (DatabaseUnavailable, SQLAlchemyError) as exc:
            log.debug("key events not polled: %s", type(exc).__name__)
            self._unsynced()
            return False
        self._last_ok, self._cleared = self._clock(), False
        return True

    def _first(self, newest: int) -> None:
        """The first poll: whatever was cached before it (while the database could not be
        polled) goes, and the events up to ``newest`` need no applying."""
        with self._lock:
            self._keys.tenant_keys.clear()
            self._keys.data_keys.clear()
            self._applied = newest

    def _apply(self, events: Sequence[key_events.Event]) -> None:
        now = self._clock()
        with self._lock:
            for e in events:
                cache = (
                    self._keys.data_keys
                    if e.kind == key_events.DATA_KEYS
                    else self._keys.tenant_keys
                )
                for key_id in e.ids:
                    cache.discard(key_id)
                self._holes.pop(e.seq, None)
                applied = self._applied or 0
                for missing in range(applied + 1, e.seq):
                    self._holes.setdefault(missing, now)
                self._applied = max(applied, e.seq)
            for seq, seen in list(self._holes.items()):
                if now - seen > HOLE_SECONDS:  # rolled back, or a sequence's gap
                    del self._holes[seq]

    def _unsynced(self) -> None:
        """The database is unreachable: past the bound, the caches go (a step may be missed)."""
        if self._cleared or self._clock() - self._last_ok < EVICT_WITHIN_SECONDS:
            return
        self._keys.tenant_keys.clear()
        self._keys.data_keys.clear()
        self._cleared = True
        log.warning(
            "key events not polled for %g s (database unavailable): key caches cleared",
            EVICT_WITHIN_SECONDS,
        )
