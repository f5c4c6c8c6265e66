"""Records benchmark: write throughput, read latency and key-server traffic of the vault.

Runs against the embedded default: a SQLite file in a temporary directory, an OpenBao dev server
started here (with a file audit device, to count its requests) and the real gRPC server on
127.0.0.1 (in this process; every client call goes over gRPC loopback). Prints figures only:
there are no assertions, and a missed target never changes the exit status.

    .venv/bin/python benchmarks/records.py            # full run (a few minutes at most)
    .venv/bin/python benchmarks/records.py --quick    # smoke test (well under 30 s)

Measured in one run:

1. CreateRecord records/s: sequential single-record calls.
2. BatchCreateRecords records/s: batches of up to 1,000 records.
3. The naive way: one transit ``encrypt`` call per field value (no envelope encryption), and
   the ratio batch records/s / naive records/s (target >= 50x).
4. GetRecord p50/p99 as a role that gets plaintext (values decrypted, each read audited) next
   to the gRPC health check on the same server, and the ratio of the p50s (target <= 3x).
5. OpenBao requests per 1,000 records, from the OpenBao audit log: creating the first and the
   next 1,000 records of a new tenant, reading them back, and reading them back again from a
   fresh service (cold key caches, same database).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import random
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import hvac

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._common import (  # noqa: E402
    load_average,
    machine_context,
    percentile,
    raise_interrupt,
    verdict,
)
from tests.support import ADMIN_KEY, TEST_PURPOSE, authenticator, sample_record  # noqa: E402
from tests.support import make_service as make_test_service  # noqa: E402
from vault.api import RunningServer, start_server  # noqa: E402
from vault.client import VaultClient  # noqa: E402
from vault.keys import init_field_keys  # noqa: E402
from vault.keys.openbao_dev import OpenBaoDevServer, count_audit_requests  # noqa: E402
from vault.service import RecordsService, Services  # noqa: E402
from vault.storage import Database, upgrade  # noqa: E402

KEY_PREFIX = "cvault"
FIELD_CLASSES = (
    "email",
    "phone",
    "name",
    "address",
    "date_of_birth",
    "national_id",
    "card_number",
    "iban",
    "free_text",
)
#: the five sensitive fields every benchmark record carries, and their field classes
FIELD_CLASS_OF = {
    "email": "email",
    "phone": "phone",
    "full_name": "name",
    "national_id": "national_id",
    "card_number": "card_number",
}
BATCH_TARGET = 50.0  # batch records/s at least this many times the naive records/s
GET_TARGET = 3.0  # GetRecord p50 at most this many times the health-check p50
CLIENT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Params:
    single: int
    batches: int
    batch_size: int
    naive: int
    reads: int
    warmup: int
    audit_block: int
    seed: int


@dataclass
class Results:
    single_rps: float = 0.0
    single_seconds: float = 0.0
    batch_rps: float = 0.0
    batch_seconds: float = 0.0
    naive_rps: float = 0.0
    naive_seconds: float = 0.0
    naive_calls: int = 0
    get_ms: list[float] = field(default_factory=list)
    health_ms: list[float] = field(default_factory=list)
    audit: list[tuple[str, int, int, int]] = field(default_factory=list)  # label, n, all, transit


# --- helpers -------------------------------------------------------------------------------


def per_thousand(count: int, records: int) -> float:
    return count * 1000.0 / records if records else 0.0


def records_for(start: int, count: int) -> list[dict[str, str]]:
    """``count`` valid records (Luhn-valid cards, E.164 phones) numbered from ``start``."""
    return [sample_record(start + i) for i in range(count)]


class Numbering:
    """Hands out record numbers so every generated record's values are unique in the run."""

    def __init__(self) -> None:
        self._next = 0

    def take(self, count: int) -> int:
        start, self._next = self._next, self._next + count
        return start


def new_tenant(label: str) -> str:
    return f"bench-{label}-{uuid.uuid4().hex[:8]}"


def make_service(db: Database, openbao: OpenBaoDevServer) -> RecordsService:
    """A service with its own KeyManager/TransitKeyWrapper and audit log: cold key caches.
    The test policy (tests/data/policy.yaml); the caller is its ``test-admin`` role."""
    return make_test_service(db, openbao)


def timed_ms(call: Callable[[], object], count: int) -> list[float]:
    out: list[float] = []
    for _ in range(count):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


class AuditCounter:
    """Deltas of OpenBao's audit log: requests served since the last :meth:`take`."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._all = count_audit_requests(path)
        self._transit = count_audit_requests(path, "transit/")

    def take(self) -> tuple[int, int]:
        # The file audit device writes the request entry before the request is served, and
        # every call measured here has returned, so the log is complete at this point.
        total = count_audit_requests(self._path)
        transit = count_audit_requests(self._path, "transit/")
        delta = (total - self._all, transit - self._transit)
        self._all, self._transit = total, transit
        return delta


@contextlib.contextmanager
def grpc_server(service: RecordsService) -> Iterator[RunningServer]:
    running = start_server(
        Services.over(service.core), "127.0.0.1:0", authenticator=authenticator()
    )
    try:
        yield running
    finally:
        running.stop(grace=0)


def admin_client(address: str) -> VaultClient:
    """The test policy's ``test-admin`` (every class plain, no limits), purpose ``testing``."""
    return VaultClient(address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=CLIENT_TIMEOUT)


# --- the measurements ----------------------------------------------------------------------


def bench_single(client: VaultClient, tenant: str, numbers: Numbering, p: Params) -> list[str]:
    # Warm-up: the tenant's keys are created on its first write (one transit call per class).
    for rec in records_for(numbers.take(5), 5):
        client.create_record(tenant, rec)
    recs = records_for(numbers.take(p.single), p.single)
    ids: list[str] = []
    t0 = time.perf_counter()
    for rec in recs:
        ids.append(client.create_record(tenant, rec).record_id)
    elapsed = time.perf_counter() - t0
    RESULTS.single_seconds = elapsed
    RESULTS.single_rps = p.single / elapsed
    print(
        f"  CreateRecord      {p.single:>6} records in {elapsed:7.2f} s"
        f"  -> {RESULTS.single_rps:9.1f} records/s  ({elapsed / p.single * 1000:.2f} ms/record)"
    )
    return ids


def bench_batch(client: VaultClient, tenant: str, numbers: Numbering, p: Params) -> list[str]:
    batches = [records_for(numbers.take(p.batch_size), p.batch_size) for _ in range(p.batches)]
    ids: list[str] = []
    per_batch: list[float] = []
    t0 = time.perf_counter()
    for batch in batches:
        b0 = time.perf_counter()
        ids.extend(c.record_id for c in client.batch_create_records(tenant, batch))
        per_batch.append(time.perf_counter() - b0)
    elapsed = time.perf_counter() - t0
    total = p.batches * p.batch_size
    RESULTS.batch_seconds = elapsed
    RESULTS.batch_rps = total / elapsed
    print(
        f"  BatchCreateRecords {total:>5} records in {elapsed:7.2f} s"
        f"  -> {RESULTS.batch_rps:9.1f} records/s  ({p.batches} x {p.batch_size};"
        f" per batch min {min(per_batch) * 1000:.0f} / max {max(per_batch) * 1000:.0f} ms)"
    )
    print(f"    per batch (ms, in order): {' '.join(f'{t * 1000:.0f}' for t in per_batch)}")
    return ids


def bench_naive(openbao: OpenBaoDevServer, numbers: Numbering, p: Params) -> None:
    """Encrypt each field value directly under its transit field key, one call per value."""
    recs = records_for(numbers.take(p.naive), p.naive)
    client = hvac.Client(url=openbao.url, token=openbao.root_token, timeout=30)
    try:
        # one unmeasured call so the connection is open, as it is in the vault's own pool
        client.secrets.transit.encrypt_data(
            name=f"{KEY_PREFIX}-email", plaintext=base64.b64encode(b"warm-up").decode()
        )
        calls = 0
        t0 = time.perf_counter()
        for rec in recs:
            for name, value in rec.items():
                client.secrets.transit.encrypt_data(
                    name=f"{KEY_PREFIX}-{FIELD_CLASS_OF[name]}",
                    plaintext=base64.b64encode(value.encode()).decode(),
                )
                calls += 1
        elapsed = time.perf_counter() - t0
    finally:
        client.adapter.close()
    RESULTS.naive_seconds = elapsed
    RESULTS.naive_calls = calls
    RESULTS.naive_rps = p.naive / elapsed
    print(
        f"  naive transit     {p.naive:>6} records in {elapsed:7.2f} s"
        f"  -> {RESULTS.naive_rps:9.1f} records/s  ({calls} encrypt calls,"
        f" {elapsed / calls * 1000:.2f} ms/call; encryption only: no gRPC, no database)"
    )


def bench_reads(client: VaultClient, tenant: str, ids: Sequence[str], p: Params) -> None:
    rng = random.Random(p.seed)
    order = [rng.choice(ids) for _ in range(p.warmup + p.reads)]
    record = client.get_record(tenant, order[0])
    if any(v.output != "plain" for v in record.fields.values()):
        print("  WARNING: GetRecord did not return plaintext (test-admin role not accepted?)")
    warm, measured = order[: p.warmup], iter(order[p.warmup :])
    for rid in warm:
        client.get_record(tenant, rid)
    for _ in range(p.warmup):
        client.health()
    RESULTS.get_ms = timed_ms(lambda: client.get_record(tenant, next(measured)), p.reads)
    RESULTS.health_ms = timed_ms(client.health, p.reads)
    for label, samples in (("GetRecord", RESULTS.get_ms), ("health", RESULTS.health_ms)):
        print(
            f"  {label:<17} {len(samples):>6} calls: p50 {percentile(samples, 50):6.3f} ms"
            f"  p90 {percentile(samples, 90):6.3f} ms  p99 {percentile(samples, 99):6.3f} ms"
            f"  max {max(samples):7.3f} ms"
        )


def bench_audit(
    client: VaultClient,
    db: Database,
    openbao: OpenBaoDevServer,
    numbers: Numbering,
    p: Params,
) -> None:
    assert openbao.audit_log_path is not None
    counter = AuditCounter(openbao.audit_log_path)
    tenant = new_tenant("audit")
    n, size = p.audit_block, min(p.batch_size, p.audit_block)

    def create_block() -> list[str]:
        ids: list[str] = []
        for start in range(0, n, size):
            count = min(size, n - start)
            recs = records_for(numbers.take(count), count)
            ids.extend(c.record_id for c in client.batch_create_records(tenant, recs))
        return ids

    def record(label: str) -> None:
        total, transit = counter.take()
        RESULTS.audit.append((label, n, total, transit))
        scaled = "" if n == 1000 else f"  (= {per_thousand(total, n):g} per 1,000 records)"
        print(f"  {label:<44} {total:>5} requests ({transit} transit){scaled}")

    first = create_block()
    record(f"create first {n:,} records (new tenant, batch)")
    create_block()
    record(f"create next {n:,} records (batch)")
    for rid in first:
        client.get_record(tenant, rid)
    record(f"read {n:,} back (same service)")
    with (
        grpc_server(make_service(db, openbao)) as fresh,
        admin_client(fresh.address) as cold,
    ):
        for rid in first:
            cold.get_record(tenant, rid)
    record(f"read {n:,} back (fresh service, cold caches)")


RESULTS = Results()


# --- reporting -----------------------------------------------------------------------------


def summary_table(p: Params) -> list[str]:
    r = RESULTS
    ratio = r.batch_rps / r.naive_rps if r.naive_rps else 0.0
    get50, get99 = percentile(r.get_ms, 50), percentile(r.get_ms, 99)
    h50, h99 = percentile(r.health_ms, 50), percentile(r.health_ms, 99)
    rows = [
        "| Measurement | Result |",
        "|---|---|",
        f"| CreateRecord, sequential ({p.single:,} records) | {r.single_rps:,.0f} records/s |",
        f"| BatchCreateRecords ({p.batches} x {p.batch_size:,}) | {r.batch_rps:,.0f} records/s |",
        f"| Naive: one transit encrypt per value ({r.naive_calls:,} calls) "
        f"| {r.naive_rps:,.1f} records/s |",
        f"| Batch / naive (target >= {BATCH_TARGET:.0f}x) | {ratio:,.1f}x "
        f"({verdict(ratio >= BATCH_TARGET)}) |",
        f"| GetRecord p50 / p99 ({p.reads:,} calls, decrypting) | {get50:.2f} / {get99:.2f} ms |",
        f"| gRPC health check p50 / p99 ({p.reads:,} calls) | {h50:.2f} / {h99:.2f} ms |",
        f"| GetRecord p50 / health p50 (target <= {GET_TARGET:.0f}x) "
        f"| {get50 / h50:.1f}x ({verdict(get50 / h50 <= GET_TARGET)}) |",
    ]
    for label, n, count, transit in r.audit:
        scaled = "" if n == 1000 else f" (= {per_thousand(count, n):g} per 1,000)"
        rows.append(f"| OpenBao requests: {label} | {count} ({transit} transit){scaled} |")
    return rows


def print_targets() -> None:
    r = RESULTS
    ratio = r.batch_rps / r.naive_rps
    get_ratio = percentile(r.get_ms, 50) / percentile(r.health_ms, 50)
    print(
        f"  batch / naive records/s  = {r.batch_rps:,.1f} / {r.naive_rps:,.1f} = {ratio:,.1f}x"
        f"   target >= {BATCH_TARGET:.0f}x: {verdict(ratio >= BATCH_TARGET)}"
    )
    print(
        f"  GetRecord p50 / health p50 = {percentile(r.get_ms, 50):.3f} / "
        f"{percentile(r.health_ms, 50):.3f} ms = {get_ratio:.2f}x"
        f"   target <= {GET_TARGET:.0f}x: {verdict(get_ratio <= GET_TARGET)}"
    )


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts (smoke test, < 30 s)")
    parser.add_argument(
        "--records",
        type=int,
        default=None,
        help="records written by BatchCreateRecords (default 10,000; --quick 1,000)",
    )
    parser.add_argument(
        "--reads",
        type=int,
        default=None,
        help="measured GetRecord calls, and as many health checks (default 2,000; --quick 300)",
    )
    parser.add_argument("--single", type=int, default=None, help="CreateRecord calls (300)")
    parser.add_argument("--naive", type=int, default=None, help="naive records (200)")
    parser.add_argument("--batch-size", type=int, default=1000, help="records per batch (1,000)")
    parser.add_argument(
        "--audit-block", type=int, default=None, help="records per audit step (1,000)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed for the read order")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    batch_size = max(1, min(int(args.batch_size), 1000))
    records = args.records if args.records is not None else (1000 if quick else 10_000)
    records = max(batch_size, records)
    single = args.single if args.single is not None else (50 if quick else 300)
    naive = args.naive if args.naive is not None else (40 if quick else 200)
    reads = args.reads if args.reads is not None else (300 if quick else 2000)
    audit = args.audit_block if args.audit_block is not None else (200 if quick else 1000)
    for name, value in (("single", single), ("naive", naive), ("reads", reads), ("audit", audit)):
        if value < 1:
            parser.error(f"--{name} must be at least 1")
    return Params(
        single=single,
        batches=records // batch_size,
        batch_size=batch_size,
        naive=naive,
        reads=reads,
        warmup=min(100, max(10, reads // 10)) if quick else 100,
        audit_block=audit,
        seed=int(args.seed),
    )


def run(p: Params) -> None:
    numbers = Numbering()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cvault-bench-")))
        print("setup")
        t0 = time.perf_counter()
        openbao = OpenBaoDevServer(audit_log_path=tmp / "openbao-audit.log")
        stack.callback(openbao.stop)  # registered before start: a half-started server stops too
        openbao.start()
        init_field_keys(
            openbao.url, openbao.root_token, key_prefix=KEY_PREFIX, field_classes=FIELD_CLASSES
        )
        url = f"sqlite:///{tmp / 'vault.db'}"
        upgrade(url)
        db = Database(url)
        stack.callback(db.dispose)
        server = stack.enter_context(grpc_server(make_service(db, openbao)))
        client = stack.enter_context(admin_client(server.address))
        print(
            f"  OpenBao dev server {openbao.url}, SQLite {tmp / 'vault.db'},"
            f" gRPC {server.address}  ({time.perf_counter() - t0:.1f} s)"
        )
        print(f"  health: {client.health()}")

        tenant = new_tenant("main")
        print("\n1-2. writes (sequential, one client)")
        ids = bench_single(client, tenant, numbers, p)
        ids += bench_batch(client, tenant, numbers, p)
        print("\n3. naive writes: one OpenBao transit encrypt call per value, sequential")
        bench_naive(openbao, numbers, p)
        print("\n4. read latency (sequential, test-admin role: values decrypted and audited)")
        bench_reads(client, tenant, ids, p)
        print("\n5. OpenBao requests, from its audit log")
        bench_audit(client, db, openbao, numbers, p)
        print("\ntargets")
        print_targets()
        print("\nteardown")


def main(argv: Sequence[str] | None = None) -> int:
    p = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    print("customer-vault records benchmark")
    for line in machine_context():
        print(f"  {line}")
    print(
        f"  params     single={p.single} batch={p.batches}x{p.batch_size} naive={p.naive}"
        f" ({p.naive * len(FIELD_CLASS_OF)} calls) reads={p.reads} (+{p.warmup} warm-up)"
        f" audit-block={p.audit_block} fields/record={len(FIELD_CLASS_OF)}"
        f" ({', '.join(FIELD_CLASS_OF)})"
    )
    started = time.perf_counter()
    try:
        run(p)
    except KeyboardInterrupt:
        print("\ninterrupted: stopped the servers and removed the temporary directory")
        return 130
    print(f"  cleaned up; total wall time {time.perf_counter() - started:.1f} s")
    print(f"  load avg at the end: {load_average()}")
    print("\nsummary (Markdown)\n")
    for line in machine_context():
        print(f"{line}  ")
    print()
    print("\n".join(summary_table(p)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
