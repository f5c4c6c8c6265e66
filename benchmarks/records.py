"""Records benchmark: write throughput, read latency and key-server traffic of the vault.

Runs against the embedded default: a SQLite file in a temporary directory, an OpenBao dev server
started here (with a file audit device, to count its requests) and the real gRPC server on
127.0.0.1 (in this process; every client call goes over gRPC loopback). Prints figures only:
there are no assertions, and a missed target never changes the exit status.

    .venv/bin/python benchmarks/records.py            # full run (a few minutes at most)
    .venv/bin/python benchmarks/records.py --quick    # smoke test (well under 30 s)
    .venv/bin/python benchmarks/records.py --postgres # the same on PostgreSQL
    .venv/bin/python benchmarks/records.py --postgres --scale 100000   # storage per record

With ``--postgres`` the database is one of the script's own on the PostgreSQL server at
``--postgres-url`` (default: CVAULT_TEST_POSTGRES_URL, else postgresql://postgres@127.0.0.1:5432/
test), created at the start and dropped at the end.

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

``--scale N`` measures storage instead: N records written through BatchCreateRecords, then the
size of every table with its indexes (``pg_table_size``, ``pg_indexes_size`` and
``pg_total_relation_size`` after ``VACUUM ANALYZE`` on PostgreSQL; SQLite's ``dbstat``) and the
bytes per record, against the target of at most 3.5 KB per 5-field record.
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
from sqlalchemy import func, select, table, text

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
    POSTGRES_URL,
    TEST_PURPOSE,
    authenticator,
    sample_record,
)
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
STORAGE_TARGET = 3.5 * 1024  # bytes per 5-field record, every table and index included
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
    postgres: bool = False
    postgres_url: str = POSTGRES_URL
    #: records written for the storage measurement (None: the throughput/latency run)
    scale: int | None = None


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
    storage: list[TableSize] = field(default_factory=list)


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


# --- storage (--scale) -----------------------------------------------------------------------


@dataclass(frozen=True)
class TableSize:
    """One table on disk: its rows, heap (with TOAST and the free-space and visibility maps on
    PostgreSQL) and indexes, in bytes."""

    name: str
    rows: int
    heap: int
    indexes: int

    @property
    def total(self) -> int:
        return self.heap + self.indexes


def write_scale(client: VaultClient, tenant: str, numbers: Numbering, p: Params) -> float:
    """Write ``p.scale`` records through BatchCreateRecords; the seconds it took."""
    assert p.scale is not None
    written, shown = 0, 0
    t0 = time.perf_counter()
    while written < p.scale:
        count = min(p.batch_size, p.scale - written)
        client.batch_create_records(tenant, records_for(numbers.take(count), count))
        written += count
        if written - shown >= max(p.scale // 10, p.batch_size) or written == p.scale:
            shown = written
            elapsed = time.perf_counter() - t0
            print(f"    {written:>9,} records  {elapsed:7.1f} s  ({written / elapsed:,.0f}/s)")
    return time.perf_counter() - t0


_PG_SIZES = text(
    "SELECT c.relname AS name, pg_table_size(c.oid) AS heap, pg_indexes_size(c.oid) AS indexes"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema() ORDER BY c.relname"
)
# dbstat: every b-tree page by the table or index it belongs to (sqlite_schema is the catalog)
_SQLITE_SIZES = text(
    "SELECT coalesce(m.tbl_name, d.name) AS name,"
    " sum(CASE WHEN m.type = 'index' THEN 0 ELSE d.pgsize END) AS heap,"
    " sum(CASE WHEN m.type = 'index' THEN d.pgsize ELSE 0 END) AS indexes"
    " FROM dbstat d LEFT JOIN sqlite_schema m ON m.name = d.name"
    " GROUP BY coalesce(m.tbl_name, d.name) ORDER BY 1"
)


def table_sizes(db: Database) -> list[TableSize]:
    """Every table's size and row count: after VACUUM ANALYZE on PostgreSQL (the state
    autovacuum keeps a live database in); on SQLite as ``dbstat`` sees the pages (the WAL's
    included)."""
    with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
            sizes = conn.execute(_PG_SIZES).all()
        else:
            sizes = conn.execute(_SQLITE_SIZES).all()
        out: list[TableSize] = []
        for r in sizes:
            name = str(r.name)
            rows = 0
            if name != "sqlite_schema":  # the catalog: not a table one can count
                rows = conn.execute(select(func.count()).select_from(table(name))).scalar_one()
            out.append(TableSize(name, int(rows), int(r.heap), int(r.indexes)))
    return sorted(out, key=lambda t: (-t.total, t.name))


def sqlite_pages(db: Database) -> int:
    """The SQLite database's size in bytes (page count x page size, the WAL's pages included)."""
    with db.engine.connect() as conn:
        count = conn.execute(text("PRAGMA page_count")).scalar_one()
        size = conn.execute(text("PRAGMA page_size")).scalar_one()
    return int(count) * int(size)


def print_sizes(sizes: Sequence[TableSize], records: int, backend: str) -> None:
    print(
        f"  {'table':<24} {'rows':>10} {'rows/rec':>8} {'heap':>13} {'indexes':>13}"
        f" {'total':>13} {'bytes/record':>12}"
    )
    for t in sizes:
        print(
            f"  {t.name:<24} {t.rows:>10,} {t.rows / records:>8.2f} {t.heap:>13,}"
            f" {t.indexes:>13,} {t.total:>13,} {t.total / records:>12,.1f}"
        )
    heap, indexes = sum(t.heap for t in sizes), sum(t.indexes for t in sizes)
    total = heap + indexes
    print(
        f"  {'all tables':<24} {'':>10} {'':>8} {heap:>13,} {indexes:>13,} {total:>13,}"
        f" {total / records:>12,.1f}"
    )
    per = total / records
    target = (
        f"target <= {STORAGE_TARGET / 1024:.1f} KB: {verdict(per <= STORAGE_TARGET)}"
        if backend == "PostgreSQL"
        else "for information (the target is PostgreSQL's)"
    )
    print(
        f"  {backend}: {per:,.0f} bytes per 5-field record ({per / 1024:.2f} KB) at"
        f" {records:,} records; {target}"
    )


def bench_storage(client: VaultClient, db: Database, numbers: Numbering, p: Params) -> None:
    assert p.scale is not None
    empty = sum(t.total for t in table_sizes(db))
    print(
        f"  empty schema: {empty:,} bytes; writing {p.scale:,} records in batches of"
        f" {p.batch_size:,}"
    )
    seconds = write_scale(client, new_tenant("scale"), numbers, p)
    print(f"  written in {seconds:.1f} s ({p.scale / seconds:,.0f} records/s)\n")
    backend = "PostgreSQL" if db.dialect == "postgresql" else "SQLite"
    sizes = table_sizes(db)
    RESULTS.storage = list(sizes)
    print_sizes(sizes, p.scale, backend)
    if db.dialect == "sqlite":
        size = sqlite_pages(db)
        print(f"  SQLite database: {size:,} bytes ({size / p.scale:,.1f} per record)")


def storage_table(p: Params) -> list[str]:
    assert p.scale is not None
    n = p.scale
    rows = [
        "| Table | Rows/record | Heap | Indexes | Total | Bytes/record |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for t in RESULTS.storage:
        rows.append(
            f"| {t.name} | {t.rows / n:.2f} | {t.heap:,} | {t.indexes:,} | {t.total:,}"
            f" | {t.total / n:,.1f} |"
        )
    total = sum(t.total for t in RESULTS.storage)
    target = (
        f"target <= {STORAGE_TARGET:,.0f}: {verdict(total / n <= STORAGE_TARGET)}"
        if p.postgres
        else "SQLite, for information"
    )
    rows.append(
        f"| **all tables** ({n:,} records) | | {sum(t.heap for t in RESULTS.storage):,}"
        f" | {sum(t.indexes for t in RESULTS.storage):,} | {total:,} | **{total / n:,.1f}**"
        f" ({target}) |"
    )
    return rows


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
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="run on PostgreSQL (a database of this run's own, dropped at the end), not SQLite",
    )
    parser.add_argument(
        "--postgres-url",
        default=POSTGRES_URL,
        help="the PostgreSQL server for --postgres (default: CVAULT_TEST_POSTGRES_URL, else"
        " postgresql://postgres@127.0.0.1:5432/test)",
    )
    parser.add_argument(
        "--scale",
        type=int,
        default=None,
        metavar="N",
        help="measure storage instead: write N records, report bytes per record per table",
    )
    args = parser.parse_args(argv)
    if args.scale is not None and args.scale < 1:
        parser.error("--scale must be at least 1")
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
        postgres=bool(args.postgres),
        postgres_url=str(args.postgres_url),
        scale=args.scale,
    )


@contextlib.contextmanager
def database_url(p: Params, tmp: Path) -> Iterator[str]:
    """A SQLite file in ``tmp``, or with ``--postgres`` a PostgreSQL database of this run's own
    (created here, dropped on the way out)."""
    if p.postgres:
        with postgres_database(p.postgres_url) as url:
            yield url
    else:
        yield f"sqlite:///{tmp / 'vault.db'}"


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
        url = stack.enter_context(database_url(p, tmp))
        upgrade(url)
        db = Database(url)
        stack.callback(db.dispose)
        server = stack.enter_context(grpc_server(make_service(db, openbao)))
        client = stack.enter_context(admin_client(server.address))
        where = (
            f"PostgreSQL database {url.rpartition('/')[2]}" if p.postgres else f"SQLite {url[10:]}"
        )
        print(
            f"  OpenBao dev server {openbao.url}, {where},"
            f" gRPC {server.address}  ({time.perf_counter() - t0:.1f} s)"
        )
        print(f"  health: {client.health()}")
        if p.scale is not None:
            print("\nstorage: bytes per record")
            bench_storage(client, db, numbers, p)
        else:
            run_throughput(client, db, openbao, numbers, p)
        print("\nteardown")


def run_throughput(
    client: VaultClient, db: Database, openbao: OpenBaoDevServer, numbers: Numbering, p: Params
) -> None:
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


def main(argv: Sequence[str] | None = None) -> int:
    p = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    print("customer-vault records benchmark")
    for line in machine_context():
        print(f"  {line}")
    if p.postgres and (why := postgres_reachable(p.postgres_url)) is not None:
        print(f"  PostgreSQL not reachable at --postgres-url ({why})")
        return 2
    if p.scale is not None:
        print(
            f"  params     storage: {p.scale:,} records in batches of {p.batch_size:,},"
            f" fields/record={len(FIELD_CLASS_OF)} ({', '.join(FIELD_CLASS_OF)}),"
            f" {'PostgreSQL' if p.postgres else 'SQLite'}"
        )
    else:
        print(
            f"  params     single={p.single} batch={p.batches}x{p.batch_size} naive={p.naive}"
            f" ({p.naive * len(FIELD_CLASS_OF)} calls) reads={p.reads} (+{p.warmup} warm-up)"
            f" audit-block={p.audit_block} fields/record={len(FIELD_CLASS_OF)}"
            f" ({', '.join(FIELD_CLASS_OF)}) database={'PostgreSQL' if p.postgres else 'SQLite'}"
        )
    started = time.perf_counter()
    try:
        run(p)
    except KeyboardInterrupt:
        print("\ninterrupted: stopped the servers, removed the temporary files and database")
        return 130
    print(f"  cleaned up; total wall time {time.perf_counter() - started:.1f} s")
    print(f"  load avg at the end: {load_average()}")
    print("\nsummary (Markdown)\n")
    for line in machine_context():
        print(f"{line}  ")
    print()
    print("\n".join(storage_table(p) if p.scale is not None else summary_table(p)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
