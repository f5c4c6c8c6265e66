"""What the benchmarks share: the machine's context, percentiles and verdicts, a temporary
PostgreSQL database, and counting the requests OpenBao served (from its file audit log)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

import grpc
import psycopg


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of a non-empty sample."""
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100), at least 1
    return ordered[int(rank) - 1]


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_context() -> list[str]:
    """Lines saying where the figures were measured (other work on the machine skews them)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return [
        f"python     {platform.python_implementation()} {platform.python_version()}",
        f"cpus       {os.cpu_count()} (usable by this process: {usable})",
        f"platform   {platform.platform()}",
        f"grpcio     {grpc.__version__}",
        f"load avg   {load_average()} (other work on the machine skews every figure)",
    ]


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """A SIGTERM handler: unwind like Ctrl-C, so every cleanup runs."""
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A database of this run's own on the server at ``admin_url``, dropped afterwards."""
    conninfo = admin_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"cvault_bench_{secrets.token_hex(6)}"
    try:
        # inside the try: a Ctrl-C just after CREATE DATABASE still drops it
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        base, _, _ = conninfo.rpartition("/")
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_reachable(url: str) -> str | None:
    """None when the server answers, else why not."""
    try:
        conninfo = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo, connect_timeout=5):
            return None
    except psycopg.Error as exc:
        return type(exc).__name__


class BaoRequests:
    """The requests OpenBao served since the last :meth:`take`, from its file audit log.

    Reads only what was appended since the previous call, and counts what
    ``vault.keys.openbao_dev.audit_request_paths`` counts: the path of every
    ``"type": "request"`` entry. The file audit device writes the request entry before the
    request is served, and every measured call has returned when this is called, so the log is
    complete for them.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""
        self.take()

    def take(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError), open(self._path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
            self._offset += len(data)
            lines = (self._partial + data).split(b"\n")
            self._partial = lines.pop()  # a line still being written, or b""
            paths: list[str] = []
            for line in lines:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                request = entry.get("request") if isinstance(entry, dict) else None
                if entry.get("type") == "request" and isinstance(request, dict):
                    paths.append(str(request.get("path", "")))
            return paths
        return []


def describe_requests(paths: Sequence[str]) -> str:
    """``"5 (5 transit: transit/encrypt/cvault-email x2, ...)"``, or ``"0"``."""
    if not paths:
        return "0"
    transit = sum(1 for p in paths if p.startswith("transit/"))
    counts: dict[str, int] = {}
    for p in paths:
        counts[p] = counts.get(p, 0) + 1
    shown = ", ".join(f"{p} x{n}" if n > 1 else p for p, n in sorted(counts.items()))
    return f"{len(paths)} ({transit} transit: {shown})"


def count_requests(paths: Sequence[str]) -> str:
    transit = sum(1 for p in paths if p.startswith("transit/"))
    return f"{len(paths)} ({transit} transit)"
