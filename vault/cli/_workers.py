"""``cvault serve --workers N``: N server processes on one port, each with its own audit chain
and caches, under one supervising process.

Why processes: a gRPC server in Python runs its handlers under one GIL, so one process uses
about one core; and each process appending to a chain of its own never waits for another
process's lock on a chain head.

**How.** The supervisor loads and checks the settings, then starts each worker as the same
command (``python -m vault.cli serve --config FILE --workers N --worker-index i``). Worker
``i`` binds the settings' ``listen`` port with ``SO_REUSEPORT`` (the kernel spreads new
connections between the workers; on purpose here, where a lone ``cvault serve`` refuses a busy
port), appends to the chain ``<[audit] chain or host>-w<i>``, serves ``[metrics] listen`` on
its port plus ``i`` (port 0: any port each), and shares ``[server] health_listen`` with the
others (``SO_REUSEPORT`` too: a probe reaches one worker, which answers for itself). The
supervisor forwards each worker's stdout line by line (lines of different workers never
interleave); stderr (logs) goes straight through.

**Signals.** SIGTERM and SIGINT are forwarded to every worker, which drains and stops as a
lone server does (health NOT_SERVING for ``drain_seconds``, then ``grace``); the supervisor
exits once all have, 0 when each stopped cleanly. A second signal is forwarded too (the workers
then stop at once, unless it came within ``SAME_STOP`` seconds of the first: a process manager
that signals every process of the service, as systemd's default ``KillMode=control-group``
does, reaches a worker twice; ``KillMode=mixed`` is the better setting). SIGHUP is forwarded
(each worker reloads its policy). The workers run in a process group of their own, so Ctrl-C
in a terminal reaches only the supervisor.

**A worker that dies** (exits while no stop was asked for, or fails to start) is reported by
its index and status, the others are stopped as on SIGTERM, and the supervisor exits 1: no
restart loop here, so a crash stays visible and the process manager (systemd, Kubernetes)
restarts the whole server, as it would a lone ``cvault serve``. Each worker dies with the
supervisor (``PR_SET_PDEATHSIG``, Linux), so a killed supervisor leaves no worker behind.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Final

from vault.cli._common import usage_error
from vault.config import Settings

log = logging.getLogger("vault.cli")

#: the most workers one ``cvault serve`` runs (each is a process with its own pools and caches)
MAX_WORKERS: Final = 64
#: what a worker prints once it serves (the supervisor waits for it from each)
READY: Final = ": serving vault.v1 on port "
_FORWARDED: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_STOPPING: Final = (signal.SIGTERM, signal.SIGINT)
#: how long past the workers' own stop bound the supervisor waits before killing them
_KILL_MARGIN: Final = 10.0
_PR_SET_PDEATHSIG: Final = 1
#: seconds in which a worker takes a second stop signal for the same stop (see dev.py)
SAME_STOP: Final = 2.0


def worker_count(value: str) -> int:
    """``--workers``: 1..MAX_WORKERS (argparse type)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("--workers must be a whole number") from None
    if not 1 <= n <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"--workers must be 1..{MAX_WORKERS}")
    return n


def die_with_supervisor(supervisor: int) -> None:
    """In a worker: get SIGTERM when the supervisor dies (Linux), and stop now if it is
    already gone (it died before this ran)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:
        raise SystemExit("cvault worker: the supervising cvault serve is gone")


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[str]
    ready: threading.Event = field(default_factory=threading.Event)
    chain: str = ""


class Supervisor:
    """Starts, watches and stops the workers (see the module docstring)."""

    def __init__(self, args: argparse.Namespace, settings: Settings, stop_bound: float) -> None:
        self._args = args
        self._settings = settings
        self._stop_bound = stop_bound
        self._workers: list[_Worker] = []
        self._out_lock = threading.Lock()
        self._stop_asked: list[str] = []

    def run(self, count: int) -> int:
        """Serve with ``count`` workers until signalled or one dies; the exit status."""
        for signum in _FORWARDED:
            signal.signal(signum, self._on_signal)
        try:
            for i in range(count):
                self._workers.append(self._start(i))
            if not self._wait_ready():
                return self._stop_all(failed=True)
            port = self._settings.listen.rpartition(":")[2]
            chains = ", ".join(w.chain for w in self._workers)
            print(
                f"cvault: serving vault.v1 on port {port} with {count} workers"
                f" (audit chains {chains})",
                flush=True,
            )
            while not self._stop_asked:
                if self._died() is not None:
                    return self._stop_all(failed=True)
                time.sleep(0.2)
            log.info("cvault: %s: stopping %d workers", self._stop_asked[0], count)
            return self._stop_all(failed=False)
        finally:
            for w in self._workers:  # only after an error above: normally all have exited
                if w.proc.poll() is None:
                    w.proc.kill()

    # --- starting ------------------------------------------------------------------------------

    def _start(self, index: int) -> _Worker:
        a = self._args
        command = [sys.executable, "-m", "vault.cli"]
        if a.verbose:
            command.append("--verbose")
        if a.log_format:
            command += ["--log-format", a.log_format]
        command += ["serve", "--workers", str(a.workers), "--worker-index", str(index)]
        command += ["--supervisor", str(os.getpid())]
        if a.config:
            command += ["--config", a.config]
        # A process group of its own: Ctrl-C in a terminal reaches the supervisor only, which
        # forwards it once.
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, bufsize=1, process_group=0
        )
        worker = _Worker(index, proc)
        out = proc.stdout
        assert out is not None
        threading.Thread(
            target=self._forward, args=(worker, out), name=f"cvault-worker-{index}", daemon=True
        ).start()
        return worker

    def _forward(self, worker: _Worker, out: IO[str]) -> None:
        """Copy the worker's stdout to ours, whole lines at a time; note when it serves."""
        for line in out:
            if not worker.ready.is_set() and READY in line:
                worker.chain = line.rpartition("(audit chain ")[2].rstrip(")\n")
                worker.ready.set()
            with self._out_lock:
                sys.stdout.write(line)
                sys.stdout.flush()

    def _wait_ready(self) -> bool:
        """True once every worker serves; False when one exited first or a stop was asked."""
        while not all(w.ready.is_set() for w in self._workers):
            if self._stop_asked or self._died() is not None:
                return False
            time.sleep(0.05)
        return True

    # --- watching and stopping ---------------------------------------------------------------

    def _died(self) -> _Worker | None:
        for w in self._workers:
            status = w.proc.poll()
            if status is not None:
                log.error(
                    "cvault: worker %d (pid %d) exited with status %d; stopping the others",
                    w.index,
                    w.proc.pid,
                    status,
                )
                return w
        return None

    def _on_signal(self, signum: int, frame: object) -> None:
        sig = signal.Signals(signum)
        if sig in _STOPPING:
            self._stop_asked.append(sig.name)
        for w in self._workers:
            if w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.proc.pid, signum)

    def _stop_all(self, *, failed: bool) -> int:
        """Stop every worker still running (SIGTERM unless a signal was forwarded already)
        and wait for each; 1 when one failed or did not stop cleanly, else 0."""
        if failed or not self._stop_asked:
            for w in self._workers:
                if w.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(w.proc.pid, signal.SIGTERM)
        end = time.monotonic() + self._stop_bound + _KILL_MARGIN
        clean = not failed
        for w in self._workers:
            try:
                status = w.proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("cvault: worker %d did not stop in time; killing it", w.index)
                w.proc.kill()
                status = w.proc.wait()
            # a worker a forwarded signal ended before it handled signals stopped as asked
            asked = {-s.value for s in _STOPPING} if self._stop_asked else set()
            clean = clean and (status == 0 or status in asked)
        log.info("cvault: all workers stopped")
        return 0 if clean else 1


def run(args: argparse.Namespace, settings: Settings, stop_bound: float) -> int:
    """``cvault serve --workers N`` (N > 1): the supervisor. ``stop_bound``: how long a
    worker's stop may take at most (its drain, grace and margins).

    Raises:
        CliError: the settings' ``listen`` has no fixed port (each worker would get another).
    """
    port = settings.listen.rpartition(":")[2]
    if not port.isdigit() or int(port) == 0:
        raise usage_error("--workers needs a fixed port in listen (port 0 differs per worker)")
    return Supervisor(args, settings, stop_bound).run(args.workers)
