"""glibc's mmap threshold: after a large block is freed, a later large block must still be mapped
(so it goes back to the system when freed) once the server pinned the threshold; the operator's
own setting is left alone; ``App.serve`` pins it before the gRPC server starts."""

from __future__ import annotations

import gc
import os
import platform
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

import vault.app as app_module
from vault.app import App
from vault.config import Settings
from vault.memory import GC_YOUNG_THRESHOLD, operator_chose_threshold, pin_mmap_threshold, tune_gc

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc"
)

# Frees a 16 MiB block (as a big gRPC message is freed), then counts whether a 1 MiB block is
# served by mmap (1) or from the heap (0), in a fresh process: the threshold is process-wide.
_PROBE = """
import ctypes, sys
from vault.memory import pin_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "pin":
    assert pin_mmap_threshold()
libc.free(libc.malloc(16 * 1024 * 1024))
before = libc.mallinfo2().hblks
block = libc.malloc(1024 * 1024)
print(libc.mallinfo2().hblks - before)
libc.free(block)
"""


def _mapped_after_big_free(mode: str) -> int:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_")
    }
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(out.stdout.strip())


@glibc_only
def test_unpinned_glibc_serves_later_large_blocks_from_the_heap() -> None:
    # the behaviour the pin exists for: one big free raises the threshold past 1 MiB
    assert _mapped_after_big_free("default") == 0


@glibc_only
def test_pinned_threshold_keeps_large_blocks_mapped() -> None:
    assert _mapped_after_big_free("pin") == 1


def test_operator_setting_wins() -> None:
    assert operator_chose_threshold({"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert operator_chose_threshold({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"})
    assert not operator_chose_threshold({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert not pin_mmap_threshold(env={"MALLOC_MMAP_THRESHOLD_": "65536"})


def test_serve_pins_the_threshold_before_the_server_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def pin() -> bool:
        calls.append("pin")
        return True

    def start_server(*args: Any, **kwargs: Any) -> None:
        calls.append("start_server")

    monkeypatch.setattr(app_module, "pin_mmap_threshold", pin)
    monkeypatch.setattr(app_module, "tune_gc", lambda: calls.append("gc"))
    monkeypatch.setattr(app_module, "start_server", start_server)
    stub = SimpleNamespace(
        policy=SimpleNamespace(start_watching=lambda: None),
        start_observability=lambda: None,
        start_key_sync=lambda: None,
        services=None,
        settings=Settings(listen="127.0.0.1:0", max_workers=4, health_interval_seconds=1),
        authenticator=None,
        credentials=None,
    )
    App.serve(stub)  # type: ignore[arg-type]
    assert calls == ["pin", "gc", "start_server"]


def test_tune_gc_raises_the_young_threshold_and_never_lowers_it() -> None:
    """A server collects its young generation every 20,000 allocations, not every 700
    (issue 13); a higher setting of the operator's stays."""
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        tune_gc()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 10, 10)
        gc.set_threshold(50_000, 10, 10)
        tune_gc()
        assert gc.get_threshold() == (50_000, 10, 10)
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
