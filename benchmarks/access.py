"""Access benchmark: what the audit write costs on the reveal path (``GetRecord``).

Two services over the same database, keys, schema and policy, each behind its own real gRPC
server on 127.0.0.1 (in this process; every call goes over gRPC loopback):

* **audited**: the service as deployed by default, with the real ``vault.audit.AuditLog``
  (OpenBao KV checkpoint every 1,000 rows, no JSON-lines sink);
* **skipped**: the same service with :class:`SkippedAuditLog`, a benchmark-only subclass defined
  in this file whose ``prepare`` and ``after_commit`` do nothing and whose ``append`` writes
  nothing and returns ``[]``. It exists only here: no configuration can reach it.

Everything else is the same code path: authentication, authorization, purpose, the read, the
policy decision, decryption, and the write transaction with the consent check and the rate-limit
charge. The difference between the two is exactly the audit write. The caller is the test
policy's ``test-admin`` (every field plain, purpose ``testing``, no rate limits). Two references
run on the audited server: ``GetRecord`` as ``test-tokens`` (tokens only: no decryption, no audit
row, no write transaction) and the standard gRPC health check.

The cold read (issue 9): **audited-cold** is the audited ``GetRecord`` on a third service built
like the audited one (same database, schema, policy, the very same audit log) but with its own
``KeyManager`` and keyring. Before each of its calls, outside the timed region,
:func:`clear_data_key_cache` empties that ``KeyManager``'s data-key cache; its tenant-key cache
stays warm (the tenant key is cached), and the other variants keep their data keys cached.

The five variants are measured in one run, interleaved: every round runs a block of each, in a
shuffled order, so machine noise falls on all of them alike. Prints p50/p90/p99 per variant, the
ratio audited p50 / skipped p50 against the target (<= 1.5x), the ratio audited-cold p50 /
audited p50 against the target (<= 1.3x), a server-side breakdown of where the audited and the
cold call spend their time, and a Markdown table. Never asserts timings: a missed target
is printed, the exit status stays 0.

    .venv/bin/python benchmarks/access.py              # full run: 2,000 calls per variant
    .venv/bin/python benchmarks/access.py --quick      # smoke test: 200 calls per variant
    .venv/bin/python benchmarks/access.py --postgres   # also on PostgreSQL (a temporary database)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import random
import secrets
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

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
    FIELD_CLASSES,
    KEY_PREFIX,
    POSTGRES_URL,
    TEST_POLICY,
    TEST_PURPOSE,
    TOKENS_KEY,
    authenticator,
    make_wrapper,
    sample_record,
)
from vault.api import RunningServer, start_server  # noqa: E402
from vault.audit import AuditEntry, AuditEvent, AuditLog, VerifyReport  # noqa: E402
from vault.audit import _store as audit_store  # noqa: E402
from vault.client import VaultClient  # noqa: E402
from vault.deadline import Deadline  # noqa: E402
from vault.keys import KeyManager, KvCheckpointStore, TokenAuth, init_field_keys  # noqa: E402
from vault.keys.openbao_dev import OpenBaoDevServer  # noqa: E402
from vault.policy import PolicyHolder  # noqa: E402
from vault.schema import load_schema  # noqa: E402
from vault.service import Access, Core, RecordsService, RecordView, Services  # noqa: E402
from vault.storage import Database, upgrade  # noqa: E402

TARGET = 1.5  # audited GetRecord p50 at most this many times the skipped-audit p50
COLD_TARGET = 1.3  # audited-cold GetRecord p50 at most this many times the audited (warm) p50
CLIENT_TIMEOUT = 60.0
AUDITED, COLD, SKIPPED, TOKENS, HEALTH = "audited", "audited-cold", "skipped", "tokens", "health"
VARIANTS = (AUDITED, COLD, SKIPPED, TOKENS, HEALTH)
LABELS = {
    AUDITED: "GetRecord, audited (plaintext)",
    COLD: "GetRecord, audited, cold data keys",
    SKIPPED: "GetRecord, audit write skipped",
    TOKENS: "GetRecord, tokens only",
    HEALTH: "gRPC health check",
}


# --- the cold-read switch: the one place that touches a key cache ----------------------------


def clear_data_key_cache(bench: Bench) -> None:
    """Empty the data-key cache of the audited-cold service (run before each of its calls,
    outside the timed region). Its tenant-key cache is left alone, so the tenant key stays
    cached. The cache belongs to the cold service's own ``KeyManager``: clearing it leaves the
    data keys of the other variants cached."""
    bench.cold_keys.data_keys.clear()


# --- the benchmark-only switch ---------------------------------------------------------------


class SkippedAuditLog(AuditLog):
    """An audit log that records nothing: the benchmark's "audit write skipped" switch.

    Defined here and nowhere else, so no configuration can select it. ``prepare`` does not
    load the audit key, ``append`` runs no SQL and returns ``[]``, ``after_commit`` does nothing
    (no sinks, no checkpoint). The caller's write transaction still opens and commits.
    """

    def prepare(self, *, deadline: Deadline) -> None:
        return None

    def append(
        self, conn: Connection, events: Sequence[AuditEvent], *, deadline: Deadline
    ) -> list[AuditEntry]:
        return []

    def after_commit(self, entries: Sequence[AuditEntry]) -> None:
        return None


# --- server-side stage timing (the same instrumentation on both services) --------------------

#: stage names, in the order they happen inside ``RecordsService.get``
STAGES = (
    ("before", "authorize, purpose, read, decide, decrypt"),
    ("prepare", "AuditLog.prepare (audit key from cache)"),
    ("txn_open", "BEGIN, consent check, rate-limit charge"),
    ("append", "AuditLog.append (MAC; head UPDATE + INSERT)"),
    ("commit", "COMMIT of the write transaction"),
    ("after_commit", "AuditLog.after_commit (sinks, checkpoint due?)"),
    ("render", "render the view"),
)


class StageClock:
    """Marks taken on the server thread during one ``get``, turned into stage durations (ms).

    Costs a few ``perf_counter`` calls per request, identical for the audited and skipped
    services, so it cannot favour either one.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self.enabled = False  # records only while measuring
        self.calls: list[dict[str, float]] = []
        self.checkpoints: list[float] = []

    def start(self) -> None:
        self._local.marks = {"start": time.perf_counter()}

    def mark(self, name: str) -> None:
        marks: dict[str, float] | None = getattr(self._local, "marks", None)
        if marks is not None:
            marks[name] = time.perf_counter()

    def finish(self) -> None:
        end = time.perf_counter()
        marks: dict[str, float] | None = getattr(self._local, "marks", None)
        self._local.marks = None
        # only calls that reached the audit write (the reveal path), not token-only reads
        if marks is None or not self.enabled or "after1" not in marks:
            return
        marks["end"] = end
        out = {"total": (end - marks["start"]) * 1000.0}
        points = ["start", "prepare0", "prepare1", "append0", "append1", "after0", "after1", "end"]
        for (name, _), a, b in zip(STAGES, points[:-1], points[1:], strict=True):
            out[name] = (marks[b] - marks[a]) * 1000.0
        self.calls.append(out)


class _TimedAuditLog(AuditLog):
    """Marks the boundaries of each audit call; wraps whichever log comes next in the MRO.

    One log may serve several services (the audited and the audited-cold one share theirs):
    each mark goes to every clock in ``clocks``, and a clock keeps it only on the thread where
    its service's ``get`` is running. ``clock`` (the first) also times the checkpoints."""

    clocks: Sequence[StageClock]

    @property
    def clock(self) -> StageClock:
        return self.clocks[0]

    def _mark(self, name: str) -> None:
        for clock in self.clocks:
            clock.mark(name)

    def prepare(self, *, deadline: Deadline) -> None:
        self._mark("prepare0")
        super().prepare(deadline=deadline)
        self._mark("prepare1")

    def append(
        self, conn: Connection, events: Sequence[AuditEvent], *, deadline: Deadline
    ) -> list[AuditEntry]:
        self._mark("append0")
        try:
            return super().append(conn, events, deadline=deadline)
        finally:
            self._mark("append1")

    def after_commit(self, entries: Sequence[AuditEntry]) -> None:
        self._mark("after0")
        super().after_commit(entries)
        self._mark("after1")

    def checkpoint_now(self, *, deadline: Deadline) -> VerifyReport:
        t0 = time.perf_counter()
        try:
            return super().checkpoint_now(deadline=deadline)
        finally:
            if self.clock.enabled:
                self.clock.checkpoints.append((time.perf_counter() - t0) * 1000.0)


class TimedAuditLog(_TimedAuditLog):
    """The real audit log with stage marks."""


class TimedSkippedAuditLog(_TimedAuditLog, SkippedAuditLog):
    """The skipped audit log with the same stage marks."""


class TimedRecordsService(RecordsService):
    """The records service with a mark at the start and end of ``get``."""

    clock: StageClock

    def get(self, *args: Any, **kwargs: Any) -> RecordView:
        self.clock.start()
        try:
            return super().get(*args, **kwargs)
        finally:
            self.clock.finish()


# --- parameters and results ------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    calls: int
    warmup: int
    block: int
    records: int
    seed: int
    postgres: bool
    postgres_url: str


@dataclass
class Run:
    """The figures of one backend."""

    backend: str
    samples: dict[str, list[float]] = field(default_factory=lambda: {v: [] for v in VARIANTS})
    stages: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    checkpoints: list[float] = field(default_factory=list)
    halves: tuple[float, float] = (0.0, 0.0)
    cold_halves: tuple[float, float] = (0.0, 0.0)
    audit_rows: int = 0
    audited_calls: int = 0


# --- helpers ---------------------------------------------------------------------------------


def p50(samples: Sequence[float]) -> float:
    return percentile(samples, 50) if samples else 0.0


def audit_row_count(db: Database) -> int:
    with db.begin(write=False) as conn:
        return int(conn.execute(select(func.count()).select_from(audit_store.events)).scalar_one())


@contextlib.contextmanager
def grpc_server(service: RecordsService) -> Iterator[RunningServer]:
    """A server whose Records service is ``service`` (a timed one), the rest as built."""
    services = dataclasses.replace(Services.over(service.core), records=service)
    running = start_server(services, "127.0.0.1:0", authenticator=authenticator())
    try:
        yield running
    finally:
        running.stop(grace=0)


# --- one backend -----------------------------------------------------------------------------


@dataclass
class Bench:
    audited: TimedRecordsService
    cold: TimedRecordsService
    skipped: TimedRecordsService
    cold_keys: KeyManager  # the cold service's own: see clear_data_key_cache
    audit: TimedAuditLog
    clocks: dict[str, StageClock]
    closers: list[Callable[[], None]]

    def close(self) -> None:
        for close in self.closers:
            close()


def build_bench(db: Database, openbao: OpenBaoDevServer) -> Bench:
    """Audited and skipped: two services sharing database, key manager, keyring, schema and
    policy; only the audit log differs. The audited one is configured as ``vault.app.build_app``
    does by default, except that its KV checkpoint path is new for every database (one OpenBao
    serves them all: another database's checkpoint would read as a truncated chain).

    Audited-cold: the audited service again (same database, key server connection, schema,
    policy and the very same audit log), but with a key manager and keyring of its own, so that
    emptying its data-key cache before each call leaves the other services' data keys cached."""
    wrapper = make_wrapper(openbao)
    keys = KeyManager(wrapper)
    cold_keys = KeyManager(wrapper)
    schema = load_schema()
    policy = PolicyHolder(TEST_POLICY)
    clocks = {AUDITED: StageClock(), COLD: StageClock(), SKIPPED: StageClock()}

    checkpoint = KvCheckpointStore(
        openbao.url,
        TokenAuth(openbao.root_token, renew=False),
        path=f"cvault/audit/bench-{secrets.token_hex(6)}",
    )
    audit = TimedAuditLog(db, keys, checkpoint=checkpoint, checkpoint_every=1000)
    audit.clocks = (clocks[AUDITED], clocks[COLD])
    skipped_log = TimedSkippedAuditLog(db, keys)
    skipped_log.clocks = (clocks[SKIPPED],)

    audited = TimedRecordsService(Core(db, keys, schema, Access(policy, audit)))
    audited.clock = clocks[AUDITED]
    cold = TimedRecordsService(Core(db, cold_keys, schema, Access(policy, audit)))
    cold.clock = clocks[COLD]
    skipped = TimedRecordsService(
        Core(db, keys, schema, Access(policy, skipped_log), keyring=audited.core.keyring)
    )
    skipped.clock = clocks[SKIPPED]
    # audit.close first: it waits for a background checkpoint, which uses the other two
    closers = [audit.close, checkpoint.close, wrapper.close]
    return Bench(audited, cold, skipped, cold_keys, audit, clocks, closers)


def timed(call: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    call()
    return (time.perf_counter() - t0) * 1000.0


def run_backend(
    backend: str, url: str, openbao: OpenBaoDevServer, p: Params, stack: contextlib.ExitStack
) -> Run:
    run = Run(backend)
    t0 = time.perf_counter()
    upgrade(url)
    db = Database(url)
    stack.callback(db.dispose)
    svc = build_bench(db, openbao)
    stack.callback(svc.close)  # after the servers stop, before the database is disposed
    audited_srv = stack.enter_context(grpc_server(svc.audited))
    cold_srv = stack.enter_context(grpc_server(svc.cold))
    skipped_srv = stack.enter_context(grpc_server(svc.skipped))
    admin = stack.enter_context(
        VaultClient(
            audited_srv.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=CLIENT_TIMEOUT
        )
    )
    admin_cold = stack.enter_context(
        VaultClient(
            cold_srv.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=CLIENT_TIMEOUT
        )
    )
    admin_skipped = stack.enter_context(
        VaultClient(
            skipped_srv.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=CLIENT_TIMEOUT
        )
    )
    tokens = stack.enter_context(
        VaultClient(audited_srv.address, api_key=TOKENS_KEY, timeout=CLIENT_TIMEOUT)
    )
    print(
        f"  servers: audited {audited_srv.address}, audited-cold {cold_srv.address},"
        f" skipped {skipped_srv.address}"
    )

    tenant = f"bench-access-{uuid.uuid4().hex[:8]}"
    ids: list[str] = []
    for start in range(0, p.records, 1000):
        count = min(1000, p.records - start)
        recs = [sample_record(start + i) for i in range(count)]
        ids.extend(c.record_id for c in admin.batch_create_records(tenant, recs))
    print(
        f"  {len(ids):,} records of 5 fields in tenant {tenant}"
        f"  (setup {time.perf_counter() - t0:.1f} s)"
    )

    outputs = {
        AUDITED: {f.output for f in admin.get_record(tenant, ids[0]).fields.values()},
        COLD: {f.output for f in admin_cold.get_record(tenant, ids[0]).fields.values()},
        SKIPPED: {f.output for f in admin_skipped.get_record(tenant, ids[0]).fields.values()},
        TOKENS: {f.output for f in tokens.get_record(tenant, ids[0]).fields.values()},
    }
    print(
        "  outputs: "
        + ", ".join(f"{v} {'/'.join(sorted(o))}" for v, o in outputs.items())
        + f"; health {admin.health()}"
    )
    for variant, want in (
        (AUDITED, "plain"),
        (COLD, "plain"),
        (SKIPPED, "plain"),
        (TOKENS, "token"),
    ):
        if outputs[variant] != {want}:
            print(f"  WARNING: {variant} returned {sorted(outputs[variant])}, expected {want}")

    rng = random.Random(p.seed)
    calls: dict[str, Callable[[str], object]] = {
        AUDITED: lambda rid: admin.get_record(tenant, rid),
        COLD: lambda rid: admin_cold.get_record(tenant, rid),
        SKIPPED: lambda rid: admin_skipped.get_record(tenant, rid),
        TOKENS: lambda rid: tokens.get_record(tenant, rid),
        HEALTH: lambda _rid: admin.health(),
    }
    # run before each call of the variant, outside the timed region
    before: dict[str, Callable[[], None]] = {COLD: lambda: clear_data_key_cache(svc)}

    # warm-up: interleaved like the measurement, not recorded
    for _ in range(p.warmup):
        rid = rng.choice(ids)
        for variant in VARIANTS:
            if variant in before:
                before[variant]()
            calls[variant](rid)
    for clock in svc.clocks.values():
        clock.enabled = True

    rows_before = audit_row_count(db)
    rounds = -(-p.calls // p.block)
    order = list(VARIANTS)
    half_marks: dict[str, int] = {}
    t_measure = time.perf_counter()
    for r in range(rounds):
        n = min(p.block, p.calls - r * p.block)
        block_ids = [rng.choice(ids) for _ in range(n)]  # the same records for every variant
        rng.shuffle(order)
        for variant in order:
            call, out, prep = calls[variant], run.samples[variant], before.get(variant)
            for rid in block_ids:
                if prep is not None:
                    prep()
                t0 = time.perf_counter()
                call(rid)
                out.append((time.perf_counter() - t0) * 1000.0)
        if r == rounds // 2 - 1:
            half_marks = {v: len(s) for v, s in run.samples.items()}
    elapsed = time.perf_counter() - t_measure
    run.audit_rows = audit_row_count(db) - rows_before
    run.audited_calls = len(run.samples[AUDITED]) + len(run.samples[COLD])
    for clock in svc.clocks.values():
        clock.enabled = False
    run.stages = {v: list(c.calls) for v, c in svc.clocks.items()}
    run.checkpoints = list(svc.clocks[AUDITED].checkpoints)
    if half_marks:
        a, c, s = run.samples[AUDITED], run.samples[COLD], run.samples[SKIPPED]
        ka, kc, ks = half_marks[AUDITED], half_marks[COLD], half_marks[SKIPPED]
        run.halves = (p50(a[:ka]) / p50(s[:ks]), p50(a[ka:]) / p50(s[ks:]))
        run.cold_halves = (p50(c[:kc]) / p50(a[:ka]), p50(c[kc:]) / p50(a[ka:]))
    print(
        f"  measured {rounds} rounds of {p.block} calls per variant, shuffled order"
        f" ({elapsed:.1f} s; after {p.warmup} interleaved warm-up calls each)"
    )
    print_run(run)
    return run


# --- reporting -------------------------------------------------------------------------------


def ratio(run: Run) -> float:
    return p50(run.samples[AUDITED]) / p50(run.samples[SKIPPED])


def cold_ratio(run: Run) -> float:
    return p50(run.samples[COLD]) / p50(run.samples[AUDITED])


def cold_line(run: Run) -> str:
    c = cold_ratio(run)
    return (
        f"cold read: audited-cold p50 / audited p50 = {c:.2f}x (target <= {COLD_TARGET}x)"
        f"   {verdict(c <= COLD_TARGET)}"
    )


def outside_service(run: Run, variant: str) -> float | None:
    """Median of (client latency - server-side ``get``) per call: gRPC, the auth interceptor,
    protobuf and the client. None when the two lists do not pair up one to one."""
    client, server = run.samples[variant], run.stages[variant]
    if len(client) != len(server):
        return None
    return p50([c - s["total"] for c, s in zip(client, server, strict=True)])


def print_run(run: Run) -> None:
    print()
    print(f"  {'variant':<36} {'calls':>6} {'p50':>8} {'p90':>8} {'p99':>8} {'mean':>8} {'max':>8}")
    for variant in VARIANTS:
        s = run.samples[variant]
        print(
            f"  {LABELS[variant]:<36} {len(s):>6}"
            f" {percentile(s, 50):8.3f} {percentile(s, 90):8.3f} {percentile(s, 99):8.3f}"
            f" {statistics.fmean(s):8.3f} {max(s):8.3f}  ms"
        )
    a, s = run.samples[AUDITED], run.samples[SKIPPED]
    r = ratio(run)
    print(
        f"\n  audited p50 / skipped p50 = {p50(a):.3f} / {p50(s):.3f} ms = {r:.2f}x"
        f"   target <= {TARGET}x: {verdict(r <= TARGET)}"
    )
    print(
        f"  audited - skipped: p50 {p50(a) - p50(s):+.3f} ms, p90"
        f" {percentile(a, 90) - percentile(s, 90):+.3f} ms;"
        f" ratio in the first / second half of the rounds: {run.halves[0]:.2f}x / "
        f"{run.halves[1]:.2f}x"
    )
    c = run.samples[COLD]
    print(f"  {cold_line(run)}")
    print(
        f"  audited-cold - audited: p50 {p50(c) - p50(a):+.3f} ms, p90"
        f" {percentile(c, 90) - percentile(a, 90):+.3f} ms;"
        f" ratio in the first / second half of the rounds: {run.cold_halves[0]:.2f}x / "
        f"{run.cold_halves[1]:.2f}x"
    )
    print(
        f"  audit rows written while measuring: {run.audit_rows:,}"
        f" (audited and audited-cold calls: {run.audited_calls:,}; skipped and tokens calls"
        " write none)"
    )
    if run.audit_rows != run.audited_calls:
        print("  WARNING: the audit row count does not match the audited calls")

    print("\n  server side, per GetRecord (median ms of each stage; medians do not add up):")
    print(f"  {'stage':<52} {'audited':>8} {'skipped':>8} {'diff':>8} {'cold':>8} {'cold-aud':>8}")
    rows = [("total", "RecordsService.get, whole call"), *STAGES]
    for name, label in rows:
        va = p50([c[name] for c in run.stages[AUDITED] if name in c])
        vs = p50([c[name] for c in run.stages[SKIPPED] if name in c])
        vc = p50([c[name] for c in run.stages[COLD] if name in c])
        print(
            f"  {name + ': ' + label:<52} {va:8.3f} {vs:8.3f} {va - vs:+8.3f}"
            f" {vc:8.3f} {vc - va:+8.3f}"
        )
    grpc_a, grpc_s = outside_service(run, AUDITED), outside_service(run, SKIPPED)
    grpc_c = outside_service(run, COLD)
    if grpc_a is not None and grpc_s is not None and grpc_c is not None:
        print(
            f"  {'outside: gRPC, auth, protobuf, client (per call)':<52}"
            f" {grpc_a:8.3f} {grpc_s:8.3f} {grpc_a - grpc_s:+8.3f}"
            f" {grpc_c:8.3f} {grpc_c - grpc_a:+8.3f}"
        )
    if run.checkpoints:
        print(
            f"  background audit checkpoints while measuring: {len(run.checkpoints)}"
            f" ({', '.join(f'{t:.0f}' for t in run.checkpoints)} ms each; off the request"
            " path, but they share the GIL with it)"
        )
    else:
        print("  background audit checkpoints while measuring: none")


def summary_table(runs: Sequence[Run]) -> list[str]:
    rows = [
        "| Backend | Measurement | p50 | p90 | p99 |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        for variant in VARIANTS:
            s = run.samples[variant]
            rows.append(
                f"| {run.backend} | {LABELS[variant]} ({len(s):,} calls) "
                f"| {percentile(s, 50):.2f} ms | {percentile(s, 90):.2f} ms "
                f"| {percentile(s, 99):.2f} ms |"
            )
        r = ratio(run)
        rows.append(
            f"| {run.backend} | **audited p50 / skipped p50 (target <= {TARGET}x)** "
            f"| **{r:.2f}x ({verdict(r <= TARGET)})** | | |"
        )
        c = cold_ratio(run)
        rows.append(
            f"| {run.backend} | **cold read: audited-cold p50 / audited p50"
            f" (target <= {COLD_TARGET}x)** | **{c:.2f}x ({verdict(c <= COLD_TARGET)})** | | |"
        )
        append = [c["append"] for c in run.stages[AUDITED] if "append" in c]
        commit_a = [c["commit"] for c in run.stages[AUDITED] if "commit" in c]
        commit_s = [c["commit"] for c in run.stages[SKIPPED] if "commit" in c]
        rows.append(
            f"| {run.backend} | server side: `AuditLog.append` "
            f"| {p50(append):.2f} ms | {percentile(append, 90):.2f} ms "
            f"| {percentile(append, 99):.2f} ms |"
        )
        rows.append(
            f"| {run.backend} | server side: COMMIT, audited / skipped "
            f"| {p50(commit_a):.2f} / {p50(commit_s):.2f} ms | | |"
        )
    return rows


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="200 calls per variant (smoke test)")
    parser.add_argument(
        "--calls", type=int, default=None, help="measured calls per variant (2,000; --quick 200)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="warm-up calls per variant (200; --quick 50)"
    )
    parser.add_argument(
        "--block", type=int, default=50, help="calls per variant per round (50; --quick 25)"
    )
    parser.add_argument(
        "--records", type=int, default=None, help="records read at random (1,000; --quick 200)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed for record and variant order")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also run on PostgreSQL at CVAULT_TEST_POSTGRES_URL (a temporary database)",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    calls = args.calls if args.calls is not None else (200 if quick else 2000)
    warmup = args.warmup if args.warmup is not None else (50 if quick else 200)
    block = 25 if quick and args.block == 50 else int(args.block)
    records = args.records if args.records is not None else (200 if quick else 1000)
    for name, value in (("calls", calls), ("block", block), ("records", records)):
        if value < 1:
            parser.error(f"--{name} must be at least 1")
    if warmup < 0:
        parser.error("--warmup must not be negative")
    return Params(
        calls=calls,
        warmup=warmup,
        block=min(block, calls),
        records=records,
        seed=int(args.seed),
        postgres=bool(args.postgres),
        postgres_url=POSTGRES_URL,
    )


def run(p: Params) -> list[Run]:
    runs: list[Run] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cvault-bench-")))
        print("setup")
        t0 = time.perf_counter()
        openbao = OpenBaoDevServer()
        stack.callback(openbao.stop)  # registered before start: a half-started server stops too
        openbao.start()
        init_field_keys(
            openbao.url, openbao.root_token, key_prefix=KEY_PREFIX, field_classes=FIELD_CLASSES
        )
        print(f"  OpenBao dev server {openbao.url} ({time.perf_counter() - t0:.1f} s)")

        print(f"\nSQLite (WAL, synchronous=NORMAL): {tmp / 'vault.db'}")
        with contextlib.ExitStack() as inner:
            runs.append(run_backend("SQLite", f"sqlite:///{tmp / 'vault.db'}", openbao, p, inner))

        if p.postgres:
            why = postgres_reachable(p.postgres_url)
            if why is not None:
                print(f"\nPostgreSQL: not reachable at CVAULT_TEST_POSTGRES_URL ({why}); skipped")
            else:
                with contextlib.ExitStack() as inner:
                    url = inner.enter_context(postgres_database(p.postgres_url))
                    print(f"\nPostgreSQL: temporary database {url.rpartition('/')[2]}")
                    runs.append(run_backend("PostgreSQL", url, openbao, p, inner))
        print("\nteardown")
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    p = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    print("customer-vault access benchmark: the audit write on the GetRecord reveal path")
    for line in machine_context():
        print(f"  {line}")
    print(
        f"  params     calls={p.calls} per variant in blocks of {p.block}, warm-up={p.warmup},"
        f" records={p.records} (5 fields each), seed={p.seed}, postgres={p.postgres}"
    )
    started = time.perf_counter()
    try:
        runs = run(p)
    except KeyboardInterrupt:
        print("\ninterrupted: stopped the servers, dropped the temporary database, removed files")
        return 130
    print(f"  cleaned up; total wall time {time.perf_counter() - started:.1f} s")
    print(f"  load avg at the end: {load_average()}")
    print("\ntargets")
    for r in runs:
        print(
            f"  {r.backend:<10} audited GetRecord p50 / skipped p50 = {ratio(r):.2f}x"
            f"   target <= {TARGET}x: {verdict(ratio(r) <= TARGET)}"
        )
        print(f"  {r.backend:<10} {cold_line(r)}")
    print("\nsummary (Markdown)\n")
    for line in machine_context():
        print(f"{line}  ")
    print()
    print("\n".join(summary_table(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
