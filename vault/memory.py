"""Keep the server's heap from holding on to memory freed after large requests (glibc only).

glibc's malloc serves a block of at least ``M_MMAP_THRESHOLD`` (128 KiB at start) with its own
``mmap`` and gives it back to the system when it is freed. But it raises that threshold to the
size of every such block freed, up to 32 MiB, and the trim threshold to twice that: after one
request of a few MiB (gRPC accepts messages up to 32 MiB), buffers of that size come from the
heap of the worker thread's arena instead, and stay there when freed. The 16 gRPC workers use up
to 8 arenas per core, so each big request could leave tens of MB behind in another arena: the
soak benchmark (``benchmarks/soak.py``) measured 268 MB of RSS after 20,000 requests with one
16 MiB request in 2,000, 146 MB of it free memory kept in malloc's heaps, against 151 MB without
the big requests. Setting the threshold explicitly turns the adjustment off, so large buffers
are always mapped and unmapped: 157 MB in the same run (README, "Memory").

An operator's own setting wins: with ``MALLOC_MMAP_THRESHOLD_`` or a ``glibc.malloc`` tunable
for it in the environment, nothing is changed. Elsewhere (musl, macOS) this does nothing.

:func:`tune_gc` sets the cyclic garbage collector for a server's allocation pattern: a batch
call makes hundreds of thousands of short-lived objects (rows, ids, protobuf messages), and at
CPython's default young-generation threshold (700 allocations) the collector ran every few
records, walking the batch's live rows each time: about a tenth of BatchCreateRecords' CPU
(``benchmarks/floor.py``, issue 13). Objects alive when serving starts (modules, schema,
policy, caches' containers) are frozen out of the collector's walks.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import platform
from collections.abc import Mapping

log = logging.getLogger("vault.memory")

#: mallopt parameter number of the mmap threshold (malloc.h)
M_MMAP_THRESHOLD = -3
#: glibc's initial threshold: blocks of this size or more are mapped, and unmapped when freed
DEFAULT_MMAP_THRESHOLD = 128 * 1024
#: allocations between two young-generation collections in a server (CPython's default: 700)
GC_YOUNG_THRESHOLD = 20_000


def operator_chose_threshold(env: Mapping[str, str]) -> bool:
    """Whether the environment already sets glibc's mmap threshold."""
    return "MALLOC_MMAP_THRESHOLD_" in env or "glibc.malloc.mmap_threshold" in env.get(
        "GLIBC_TUNABLES", ""
    )


def pin_mmap_threshold(
    threshold: int = DEFAULT_MMAP_THRESHOLD, *, env: Mapping[str, str] | None = None
) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes (turning its upward adjustment off).

    Returns:
        True when it was set; False on another C library, when mallopt refuses it, or when
        the environment already sets it (the operator's value stays).
    """
    if operator_chose_threshold(os.environ if env is None else env):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, threshold))
    if not ok:
        log.warning("mallopt(M_MMAP_THRESHOLD) refused; large freed blocks may stay in the heap")
    return ok


def tune_gc(young: int = GC_YOUNG_THRESHOLD) -> None:
    """Collect the young generation every ``young`` allocations (never more often than the
    interpreter's setting already does), after freezing what is alive now; call once, when a
    server process starts serving. Memory held by uncollected cycles stays bounded by the
    threshold: a few MB at most."""
    gc.collect()
    gc.freeze()
    current, middle, old = gc.get_threshold()
    if 0 < current < young:
        gc.set_threshold(young, middle, old)
