"""Scaling benchmark: audited GetRecord calls/s as client threads and server processes grow
(issue 13, point 4), on PostgreSQL, against real ``cvault serve`` processes and a real OpenBao.

Every server is a process of its own (``python -m vault.cli serve``, or this script's
``--serve-skipped`` mode below); the clients run in one more process (multiprocessing, spawn),
so no server shares a GIL with a client. Each client thread has a gRPC channel (a connection)
of its own and calls ``GetRecord`` as the test policy's ``test-admin`` (every field plain,
purpose ``testing``, no rate limits) over records made at the start, round robin. Measured,
each for ``--seconds`` after ``--warmup`` seconds of the same calls:

1. **one server** (``cvault serve``, its chain named from the host): 1 and 4 client threads;
   calls/s and the ratio 4 / 1 (target >= 1.5x);
2. **two servers**: two ``cvault serve`` processes on two ports, each with its own chain
   (``CVAULT_AUDIT_CHAIN``), the threads alternating between them: 4 threads; calls/s and the
   ratio to one server at 4 threads (target: > 1x, it grows);
3. **--workers 2**: one ``cvault serve --workers 2`` (two processes on one port, SO_REUSEPORT,
   a chain each): 4 threads. The kernel spreads *connections*, so how the 4 channels fell on
   the workers is shown (audit rows per worker chain during the run);
4. **the audit's share**: p50 of audited GetRecord at 1 thread against the audit-skipped
   path at 1 thread, target <= 1.3x. "Audit-skipped" is the switch of
   ``benchmarks/access.py``: the same service with its ``SkippedAuditLog`` (no audit row,
   everything else the same: authentication, policy, decryption, the write transaction with
   the consent check and the rate-limit charge), served by a process this script starts in
   its ``--serve-skipped`` mode; no configuration of ``cvault serve`` can reach it.

Prints calls/s, p50/p99, the ratios against the targets and the load average (2 cores shared
with other work skew every figure). Never asserts a timing: a missed target is printed and the
exit status stays 0.

    .venv/bin/python benchmarks/scaling.py            # 15 s per measurement
    .venv/bin/python benchmarks/scaling.py --quick    # 3 s per measurement (smoke test)
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._common import (  # noqa: E402
    load_average,
    machine_context,
    percentile,
    postgres_database,
    postgres_reachable,
    raise_interrupt,
    verdict,
)
from tests.support import (  # noqa: E402
    ADMIN_KEY,
    API_KEYS,
    FIELD_CLASSES,
    KEY_PREFIX,
    POSTGRES_URL,
    TEST_POLICY,
    TEST_PURPOSE,
    sample_record,
)
from vault.client import VaultClient  # noqa: E402
from vault.keys import init_field_keys  # noqa: E402
from vault.keys.openbao_dev import OpenBaoDevServer  # noqa: E402
from vault.storage import Database, upgrade  # noqa: E402

THREADS_TARGET = 1.5  # one server: 4 client threads give at least this many times 1 thread's
SERVERS_TARGET = 1.0  # two servers give more than one (at 4 client threads)
AUDIT_TARGET = 1.3  # audited GetRecord p50 at most this many times the audit-skipped p50
TENANT = "scaling"
READY = ": serving vault.v1 on port "
SERVING = "cvault" + READY  # what cvault serve prints (with --workers: the supervisor, at last)
SKIPPED = "cvault skipped" + READY
CALL_TIMEOUT = 30.0


# --- the client process -----------------------------------------------------------------------


@dataclass
class Load:
    """What one client process does: ``threads`` threads, thread i on ``addresses[i % n]``."""

    addresses: list[str]
    threads: int
    record_ids: list[str]
    warmup: float
    seconds: float
    #: this process's test-admin key (tests.support makes new keys in every process)
    api_key: str = field(repr=False, default="")


@dataclass
class Result:
    calls: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    #: CPU the server processes used while measured (warm-up included), in cores
    server_cores: float = 0.0

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def p(self, pct: float) -> float:
        return percentile(self.latencies_ms, pct) if self.latencies_ms else float("nan")


def _client_thread(
    load: Load, index: int, start: threading.Barrier, out: list[tuple[int, list[float], int]]
) -> None:
    address = load.addresses[index % len(load.addresses)]
    ids = load.record_ids[index:] + load.record_ids[:index]
    key = load.api_key
    with VaultClient(address, api_key=key, purpose=TEST_PURPOSE, timeout=CALL_TIMEOUT) as vc:
        n = 0
        end = time.monotonic() + load.warmup
        try:
            while time.monotonic() < end or n == 0:  # warm the channel and the key caches
                vc.get_record(TENANT, ids[n % len(ids)])
                n += 1
        except BaseException:
            start.abort()  # the others and the caller stop waiting: the run fails
            raise
        start.wait()
        measured: list[float] = []
        errors = 0
        end = time.monotonic() + load.seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                vc.get_record(TENANT, ids[n % len(ids)])
                measured.append((time.perf_counter() - t0) * 1000.0)
            except Exception:  # counted, and the figures say so
                errors += 1
            n += 1
    out.append((len(measured), measured, errors))


def own_connections() -> None:
    """Give each channel of this process a connection of its own. gRPC shares one connection
    among channels with the same target and options (its global subchannel pool), so threads
    with "a channel each" would still send every call over one connection, to one worker of
    ``--workers``. The SDK takes no channel options, hence its option list is extended here."""
    from vault.client import _channel

    own = ("grpc.use_local_subchannel_pool", 1)
    if own not in _channel._OPTIONS:
        _channel._OPTIONS.append(own)


def run_clients(load: Load) -> Result:
    """In the client process: the threads, each with its own channel and connection, for
    ``load.seconds``."""
    own_connections()
    out: list[tuple[int, list[float], int]] = []
    start = threading.Barrier(load.threads + 1)
    threads = [
        threading.Thread(target=_client_thread, args=(load, i, start, out), daemon=True)
        for i in range(load.threads)
    ]
    for t in threads:
        t.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        raise RuntimeError("a client thread failed in its warm-up (see above)") from None
    t0 = time.monotonic()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    latencies = [ms for _, lat, _ in out for ms in lat]
    return Result(sum(n for n, _, _ in out), elapsed, latencies, sum(e for _, _, e in out))


def measure(load: Load, servers: Sequence[int]) -> Result:
    """``run_clients`` in a process of its own (spawned: no state shared with this one), and
    the CPU the ``servers`` (pids, with their workers) used meanwhile."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        cpu0, t0 = cpu_seconds(servers), time.monotonic()
        result = pool.apply(run_clients, (load,))
        result.server_cores = (cpu_seconds(servers) - cpu0) / (time.monotonic() - t0)
        return result


def cpu_seconds(pids: Sequence[int]) -> float:
    """User and system CPU seconds of ``pids`` and their children, from /proc (0 elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0.0
    todo = list(pids)
    while todo:
        pid = todo.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


# --- the servers --------------------------------------------------------------------------------


@dataclass
class Bench:
    tmp: Path
    openbao: OpenBaoDevServer
    db_url: str
    kv_path: str
    record_ids: list[str] = field(default_factory=list)

    def env(self, chain: str = "") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CVAULT_")}
        env["CVAULT_OPENBAO_TOKEN"] = self.openbao.root_token
        if chain:
            env["CVAULT_AUDIT_CHAIN"] = chain
        return env

    def config(self, port: int) -> Path:
        salt, digest = API_KEYS["test-admin"][1]["salt"], API_KEYS["test-admin"][1]["hash"]
        path = self.tmp / f"serve-{port}.toml"
        path.write_text(
            f'listen = "127.0.0.1:{port}"\n'
            f'database_url = "{self.db_url}"\n'
            f'policy = "{TEST_POLICY}"\n'
            "shutdown_grace_seconds = 2\n"
            f'[openbao]\nurl = "{self.openbao.url}"\nkey_prefix = "{KEY_PREFIX}"\n'
            f'[audit]\nkv_path = "{self.kv_path}"\n'
            "[server]\ndrain_seconds = 0\n"
            f'[auth.api_keys.test-admin]\nprincipal = "apikey:test-admin"\n'
            f'salt = "{salt}"\nhash = "{digest}"\n'
        )
        return path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(
    bench: Bench, command: Sequence[str], *, ready: str, chain: str = "", name: str
) -> Iterator[tuple[str, int]]:
    """A server process started with ``command``; yields the line it printed once it served
    (the first starting with ``ready``) and its pid; SIGTERM and a wait at the end."""
    log_path = bench.tmp / f"{name}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            list(command), stdout=log, stderr=subprocess.STDOUT, env=bench.env(chain), cwd=REPO_ROOT
        )
    try:
        end = time.monotonic() + 120
        while True:
            lines = log_path.read_text().splitlines()
            served = [line for line in lines if line.startswith(ready)]
            if served:
                break
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"{name} did not start:\n" + "\n".join(lines[-30:]))
            time.sleep(0.1)
        yield served[0], proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cvault(bench: Bench, config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "vault.cli", *args, "--config", str(config)]


def rows_per_chain(bench: Bench) -> dict[str, int]:
    db = Database(bench.db_url)
    try:
        with db.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT chain, count(*) FROM audit_events GROUP BY chain")
            ).all()
        return {str(c): int(n) for c, n in rows}
    finally:
        db.dispose()


# --- the audit-skipped server (this script's --serve-skipped mode) ------------------------------


def serve_skipped(config: str) -> int:
    """A server built exactly as ``cvault serve`` builds it, except that its services audit
    through ``benchmarks.access.SkippedAuditLog``: no audit row, all else the same."""
    from benchmarks.access import SkippedAuditLog
    from vault.api import start_server
    from vault.app import build_app, build_services, call_limits
    from vault.config import load_settings
    from vault.memory import pin_mmap_threshold, tune_gc

    settings = load_settings(config)
    app = build_app(settings)
    app.check_ready()
    skipped = SkippedAuditLog(app.db, app.keys)
    services = build_services(settings, skipped, schema=app.schema, policy=app.policy)
    pin_mmap_threshold()  # the process settings App.serve makes
    tune_gc()
    running = start_server(
        services, settings.listen, authenticator=app.authenticator, limits=call_limits(settings)
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"cvault skipped{READY}{running.port} (audit skipped)", flush=True)
    while not stop.wait(0.5):
        pass
    running.stop(1.0)
    app.close()
    return 0


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Params:
    seconds: float
    warmup: float
    records: int
    threads: int


@dataclass
class Figures:
    one_1: Result | None = None
    one_n: Result | None = None
    two_n: Result | None = None
    workers_n: Result | None = None
    skipped_1: Result | None = None
    worker_rows: dict[str, int] = field(default_factory=dict)
    loads: list[str] = field(default_factory=list)


def line(label: str, r: Result) -> str:
    errors = f", {r.errors} errors" if r.errors else ""
    return (
        f"  {label:<44} {r.rate:8.1f} calls/s   p50 {r.p(50):6.2f} ms   p99 {r.p(99):7.2f} ms"
        f"   server CPU {r.server_cores:4.2f} cores   ({r.calls} calls{errors})"
    )


def set_up(bench: Bench, p: Params) -> None:
    port = free_port()
    config = bench.config(port)
    made = subprocess.run(
        cvault(bench, config, "tenants", "create", TENANT),
        env=bench.env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if made.returncode != 0:
        raise RuntimeError(f"cvault tenants create: {made.stderr[-2000:]}")
    with (
        server(bench, cvault(bench, config, "serve"), ready=SERVING, name="setup"),
        VaultClient(f"127.0.0.1:{port}", api_key=ADMIN_KEY, timeout=60) as vc,
    ):
        for start in range(0, p.records, 100):
            batch = [sample_record(i) for i in range(start, min(p.records, start + 100))]
            bench.record_ids += [r.record_id for r in vc.batch_create_records(TENANT, batch)]


def load(addresses: list[str], threads: int, bench: Bench, p: Params) -> Load:
    return Load(addresses, threads, bench.record_ids, p.warmup, p.seconds, ADMIN_KEY)


def run(p: Params, postgres_url: str) -> Figures:
    f = Figures()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cvault-scaling-")))
        openbao = OpenBaoDevServer()
        stack.callback(openbao.stop)
        openbao.start()
        init_field_keys(
            openbao.url, openbao.root_token, key_prefix=KEY_PREFIX, field_classes=FIELD_CLASSES
        )
        url = stack.enter_context(postgres_database(postgres_url))
        upgrade(url)
        bench = Bench(tmp, openbao, url, f"cvault/audit/scaling-{secrets.token_hex(6)}")
        print(f"setup: OpenBao {openbao.url}, PostgreSQL database {url.rpartition('/')[2]}")
        set_up(bench, p)
        print(f"  {len(bench.record_ids)} records in tenant {TENANT}")
        f.loads.append(f"before the runs: {load_average()}")

        port = free_port()
        config = bench.config(port)
        with server(bench, cvault(bench, config, "serve"), ready=SERVING, name="one") as one:
            print(f"\none server: {one[0]}")
            f.one_1 = measure(load([f"127.0.0.1:{port}"], 1, bench, p), [one[1]])
            print(line("1 client thread", f.one_1))
            f.one_n = measure(load([f"127.0.0.1:{port}"], p.threads, bench, p), [one[1]])
            print(line(f"{p.threads} client threads", f.one_n))

        ports = [free_port(), free_port()]
        with contextlib.ExitStack() as two:
            pids = []
            for i, port_ in enumerate(ports):
                command = cvault(bench, bench.config(port_), "serve")
                started = server(bench, command, ready=SERVING, chain=f"bench-s{i}", name=f"s{i}")
                pids.append(two.enter_context(started)[1])
            print("\ntwo servers (two cvault serve processes, chains bench-s0 and bench-s1)")
            addresses = [f"127.0.0.1:{p_}" for p_ in ports]
            f.two_n = measure(load(addresses, p.threads, bench, p), pids)
            print(line(f"{p.threads} client threads, alternating", f.two_n))

        port = free_port()
        command = cvault(bench, bench.config(port), "serve", "--workers", "2")
        with server(bench, command, ready=SERVING, name="workers") as workers:
            print(f"\n--workers 2: {workers[0]}")
            before = rows_per_chain(bench)
            f.workers_n = measure(load([f"127.0.0.1:{port}"], p.threads, bench, p), [workers[1]])
            after = rows_per_chain(bench)
            f.worker_rows = {c: n - before.get(c, 0) for c, n in sorted(after.items()) if "-w" in c}
            print(line(f"{p.threads} client threads, one port", f.workers_n))
            shown = ", ".join(f"{c}: {n}" for c, n in f.worker_rows.items())
            print(f"  audit rows per worker chain (warm-up included): {shown}")

        port = free_port()
        command = [sys.executable, str(Path(__file__).resolve()), "--serve-skipped"]
        command.append(str(bench.config(port)))
        with server(bench, command, ready=SKIPPED, name="skipped") as skipped:
            print("\naudit-skipped server (benchmarks.access.SkippedAuditLog)")
            f.skipped_1 = measure(load([f"127.0.0.1:{port}"], 1, bench, p), [skipped[1]])
            print(line("1 client thread, audit skipped", f.skipped_1))
        f.loads.append(f"after the runs: {load_average()}")
    return f


def _got(r: Result | None) -> Result:
    if r is None:
        raise RuntimeError("a run is missing")
    return r


def report(f: Figures, p: Params) -> None:
    one_1, one_n, two_n = _got(f.one_1), _got(f.one_n), _got(f.two_n)
    workers_n, skipped_1 = _got(f.workers_n), _got(f.skipped_1)
    threads = one_n.rate / one_1.rate
    servers = two_n.rate / one_n.rate
    workers = workers_n.rate / one_n.rate
    audit = one_1.p(50) / skipped_1.p(50)
    print("\ntargets")
    print(
        f"  one server, {p.threads} threads / 1 thread = {threads:.2f}x"
        f"   target >= {THREADS_TARGET}x: {verdict(threads >= THREADS_TARGET)}"
    )
    print(
        f"  two servers / one server ({p.threads} threads) = {servers:.2f}x"
        f"   target > {SERVERS_TARGET}x: {verdict(servers > SERVERS_TARGET)}"
    )
    print(f"  --workers 2 / one server ({p.threads} threads) = {workers:.2f}x (as balanced above)")
    print(
        f"  audited p50 / audit-skipped p50 (1 thread) = {one_1.p(50):.2f} /"
        f" {skipped_1.p(50):.2f} ms = {audit:.2f}x"
        f"   target <= {AUDIT_TARGET}x: {verdict(audit <= AUDIT_TARGET)}"
    )
    if one_n.server_cores >= 0.85:
        print(
            f"  one server used {one_n.server_cores:.2f} cores at {p.threads} threads: a Python"
            " process runs its handlers under one GIL, so more threads only queue there"
            " (--workers spreads the calls over processes)"
        )
    for entry in f.loads:
        print(f"  load avg {entry}")
    print("\nsummary (Markdown)\n")
    print("| run | client threads | calls/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for label, n, r in (
        ("one server", 1, one_1),
        ("one server", p.threads, one_n),
        ("two servers", p.threads, two_n),
        ("--workers 2", p.threads, workers_n),
        ("one server, audit skipped", 1, skipped_1),
    ):
        print(f"| {label} | {n} | {r.rate:.1f} | {r.p(50):.2f} | {r.p(99):.2f} |")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Params]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="3 s per measurement")
    parser.add_argument("--seconds", type=float, help="measured seconds per run (15; quick 3)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per run (3; quick 1)")
    parser.add_argument("--records", type=int, help="records read round robin (500; quick 100)")
    parser.add_argument("--threads", type=int, default=4, help="the many-threads figure (4)")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--serve-skipped", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    p = Params(
        seconds=args.seconds or (3.0 if args.quick else 15.0),
        warmup=args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0),
        records=args.records or (100 if args.quick else 500),
        threads=args.threads,
    )
    if p.seconds <= 0 or p.warmup < 0 or p.records < 1 or p.threads < 2:
        parser.error("--seconds > 0, --warmup >= 0, --records >= 1 and --threads >= 2")
    return args, p


def main(argv: Sequence[str] | None = None) -> int:
    args, p = parse_args(argv)
    if args.serve_skipped:
        return serve_skipped(args.serve_skipped)
    signal.signal(signal.SIGTERM, raise_interrupt)
    print("customer-vault scaling benchmark: audited GetRecord over client threads and servers")
    for entry in machine_context():
        print(f"  {entry}")
    print(
        f"  params     {p.seconds:g} s per run after {p.warmup:g} s warm-up, {p.records} records,"
        f" {p.threads} threads for the many-threads runs"
    )
    why = postgres_reachable(args.postgres_url)
    if why is not None:
        print(f"PostgreSQL not reachable at {args.postgres_url} ({why}): nothing measured")
        return 0
    started = time.perf_counter()
    try:
        figures = run(p, args.postgres_url)
    except KeyboardInterrupt:
        print("\ninterrupted: stopped the servers, dropped the temporary database")
        return 130
    print(f"\ncleaned up; total wall time {time.perf_counter() - started:.1f} s")
    report(figures, p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
