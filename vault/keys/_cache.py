"""Bounded in-memory caches for unwrapped keys (max entries, max age, max uses).

Plaintext keys live only here: never on disk, in logs or in reprs. An entry past its age or use
limit is dropped and must be unwrapped again, which bounds how long and how much a key that leaked
from memory could be used, and lets a revoked key server take effect within ``max_age``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from vault.metrics import CacheCounter

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CacheLimits:
    max_entries: int = 10_000
    max_age_seconds: float = 300.0
    max_uses: int = 1_000_000

    def __post_init__(self) -> None:
        if self.max_entries < 1 or self.max_age_seconds <= 0 or self.max_uses < 1:
            raise ValueError("cache limits must be positive")


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V = field(repr=False)
    born: float
    uses: int = 0


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class KeyCache(Generic[V]):
    """A thread-safe LRU with age and use limits. Values are key material: never printed."""

    def __init__(
        self,
        limits: CacheLimits,
        *,
        clock: Callable[[], float] | None = None,
        name: str = "other",
    ) -> None:
        """``name``: the cache's label in the lookup metrics (``tenant_keys``, ``data_keys``)."""
        self._limits = limits
        self._counter = CacheCounter(name)
        self._clock = clock or time.monotonic
        self._entries: OrderedDict[Hashable, _Entry[V]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = CacheStats()

    def __repr__(self) -> str:
        return f"KeyCache(entries={len(self._entries)}, limits={self._limits})"

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> V | None:
        """The cached value, counting one use; None when absent, too old or used up."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.stats.misses += 1
                self._counter.miss.inc()
                return None
            if (
                now - entry.born > self._limits.max_age_seconds
                or entry.uses >= self._limits.max_uses
            ):
                del self._entries[key]
                self.stats.evictions += 1
                self.stats.misses += 1
                self._counter.miss.inc()
                return None
            entry.uses += 1
            self._entries.move_to_end(key)
            self.stats.hits += 1
            self._counter.hit.inc()
            return entry.value

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._entries[key] = _Entry(value, self._clock())
            self._entries.move_to_end(key)
            while len(self._entries) > self._limits.max_entries:
                self._entries.popitem(last=False)
                self.stats.evictions += 1

    def serves(self) -> bool:
        """True while some entry is still usable (not too old, not used up): what lets this
        process go on serving without the key server."""
        now = self._clock()
        limits = self._limits
        with self._lock:
            return any(
                now - e.born <= limits.max_age_seconds and e.uses < limits.max_uses
                for e in self._entries.values()
            )

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
