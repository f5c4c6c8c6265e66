"""Token pools: the data keys of standalone tokens (those naming no record).

Each (tenant, class) in use has a current pool: a data key made locally under the tenant key,
replaced after ``max_values`` values or ``max_age`` seconds, so tokenizing makes no key-server
call in steady state. The map is an LRU bounded by ``max_entries``, because tenants are named
by callers; an evicted pool costs only a new local data key (its tokens still reveal: their
data key row is stored).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from vault.crypto import DataKey, uuid7
from vault.service._datakeys import DataKeys
from vault.service._keyring import DATA, Keyring, TenantKey
from vault.storage import NewDataKey


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """When a pool is replaced (values sealed, age in seconds) and how many are kept."""

    max_values: int = 100_000
    max_age: float = 86_400.0
    max_entries: int = 10_000


@dataclass(slots=True)
class Pool:
    pool_id: str
    dek: DataKey = field(repr=False)
    created: float
    used: int = 0


#: a pool just made, with its ``data_keys`` row (inserted by the tokenize transaction)
NewPool = tuple[Pool, NewDataKey]


class TokenPools:
    """The current pool of each (tenant, class), least recently used first. Thread-safe.

    Iterating gives the (tenant, class) keys (for the memory statistics and the tests).
    """

    def __init__(
        self,
        data_keys: DataKeys,
        keyring: Keyring,
        limits: PoolLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._data_keys = data_keys
        self._keyring = keyring
        self._limits = limits or PoolLimits()
        self._clock = clock
        self._pools: OrderedDict[tuple[str, str], Pool] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pools)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        with self._lock:
            return iter(list(self._pools))

    def __contains__(self, key: object) -> bool:
        return key in self._pools

    def take(
        self,
        tenant: str,
        counts: Mapping[str, int],
        tkeys: Mapping[tuple[str, str], TenantKey],
    ) -> tuple[dict[str, Pool], list[NewPool]]:
        """The pool for ``counts[c]`` values of each class ``c``, counted as used; new pools
        (rows to insert, installed by :meth:`install` only after the commit) where none is
        current, or the current one is full or old."""
        out: dict[str, Pool] = {}
        new: list[NewPool] = []
        now = self._clock()
        limits = self._limits
        with self._lock:
            for c, n in counts.items():
                pool = self._pools.get((tenant, c))
                if (
                    pool is not None
                    and pool.used + n <= limits.max_values
                    and now - pool.created < limits.max_age
                ):
                    pool.used += n
                    out[c] = pool
                    self._pools.move_to_end((tenant, c))
                    continue
                pool_id = str(uuid7())
                dek, row = self._keyring.new_data_key(tenant, pool_id, c, tkeys[(c, DATA)])
                fresh = Pool(pool_id, dek, now, n)
                out[c] = fresh
                new.append((fresh, row))
        return out, new

    def install(self, tenant: str, new: Sequence[NewPool]) -> None:
        """Make committed new pools current (and their keys cached); evict past the bound."""
        with self._lock:
            for pool, row in new:
                self._data_keys.remember(pool.dek)
                key = (tenant, row.field_class)
                self._pools[key] = pool
                self._pools.move_to_end(key)
            while len(self._pools) > self._limits.max_entries:
                self._pools.popitem(last=False)
