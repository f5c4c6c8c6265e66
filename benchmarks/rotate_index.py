"""Index-key rotation benchmark (issue 15, point 7): ``rotate_index`` in batches against the
per-record way it worked before, and against a floor of the same decrypt and HMAC work alone.

Runs against the embedded default: a SQLite file in a temporary directory and an OpenBao dev
server started here; with ``--postgres`` also against PostgreSQL, in a temporary database that
is dropped at the end. Prints figures only: there are no assertions, and nothing measured
changes the exit status.

    .venv/bin/python benchmarks/rotate_index.py               # full run (20,000 records)
    .venv/bin/python benchmarks/rotate_index.py --quick       # smoke test (1,000 records)
    .venv/bin/python benchmarks/rotate_index.py --postgres    # also on PostgreSQL

Set up per backend, not measured: one tenant with ``--records`` records (``tests.support.
sample_record``) written through ``RecordsService.create`` 1,000 at a time; each has one
searchable ``email`` value, the class rotated. Each measurement starts with a fresh service
(empty key caches, as a new ``cvault`` process).

Measured in one run, per backend, in values indexed per second:

1. old: the per-record path ``rotate-index`` had before: batches of ``unindexed_values``
   (200), then per record ``index_rows`` (its own read transaction, its own
   ``data_keys.open``), then each row inserted in a savepoint of its own; on the first
   ``--old`` values of the tenant, under an index key made for it and dropped afterwards (that
   scan restarts from the first record each batch: on a large tenant the old way is slower
   still than this sample shows).
2. new: ``vault.service.operations.rotate_index`` as ``cvault keys rotate-index`` calls it
   (``--batch``, default 500), over every value, timed end to end (new key, every batch, the
   token fingerprint pass, the drop check and the drop); then a sample is found by
   ``FindRecords``.
3. floor: a plain loop over the same values, already read and with their data keys already
   unwrapped: ``vault.crypto.open_value`` then ``vault.crypto.blind_index``, nothing else (no
   database, no service, no canonical form).

Then the ratios new / old (the target: at least 10x on PostgreSQL) and new / floor.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from sqlalchemy import Table, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._common import (  # noqa: E402
    load_average,
    machine_context,
    postgres_database,
    postgres_reachable,
    raise_interrupt,
)
from tests.support import (  # noqa: E402
    ADMIN,
    FIELD_CLASSES,
    KEY_PREFIX,
    POSTGRES_URL,
    make_service,
    sample_record,
)
from vault import crypto  # noqa: E402
from vault.deadline import Deadline  # noqa: E402
from vault.keys import init_field_keys  # noqa: E402
from vault.keys.openbao_dev import OpenBaoDevServer  # noqa: E402
from vault.service import RecordInput, RecordsService  # noqa: E402
from vault.service._datakeys import DataKeyRef  # noqa: E402
from vault.service._keyring import INDEX  # noqa: E402
from vault.service.operations import index_rows, rotate_index  # noqa: E402
from vault.storage import Database, NewIndex, keys_repo, upgrade  # noqa: E402
from vault.storage.models import BlindIndexRow  # noqa: E402

#: the class rotated, and its one searchable field in the default schema
CLASS = "email"
FIELD = "email"
#: records per RecordsService.create call in the setup (its cap)
CREATE_BATCH = 1000
#: the batch the per-record path used (rotate-index's old default)
OLD_BATCH = 200
#: records looked up with FindRecords after the rotation
FIND_SAMPLE = 20
DEADLINE_SECONDS = 120.0


def _dl() -> Deadline:
    return Deadline.after(DEADLINE_SECONDS)


@dataclass(frozen=True)
class Params:
    records: int
    old: int
    batch: int
    postgres: bool


@dataclass
class Run:
    """The figures of one backend: (values, seconds) of each way."""

    backend: str
    setup_seconds: float = 0.0
    old: tuple[int, float] = (0, 0.0)
    new: tuple[int, float] = (0, 0.0)
    floor: tuple[int, float] = (0, 0.0)
    found: str = ""

    @staticmethod
    def rate(figure: tuple[int, float]) -> float:
        return figure[0] / figure[1] if figure[1] else 0.0

    def ratio(self, a: tuple[int, float], b: tuple[int, float]) -> float:
        return self.rate(a) / self.rate(b) if self.rate(b) else 0.0


# --- setup (not measured) --------------------------------------------------------------------


def setup(svc: RecordsService, p: Params) -> tuple[str, dict[str, str]]:
    """A tenant with ``p.records`` records; its name and a sample record id -> email."""
    tenant = f"bench-index-{uuid.uuid4().hex[:8]}"
    sample: dict[str, str] = {}
    every = max(1, p.records // FIND_SAMPLE)
    for start in range(0, p.records, CREATE_BATCH):
        recs = [sample_record(i) for i in range(start, min(p.records, start + CREATE_BATCH))]
        stored = svc.create(ADMIN, tenant, [RecordInput(r) for r in recs], deadline=_dl())
        for i, (rec, s) in enumerate(zip(recs, stored, strict=True), start):
            if i % every == 0:
                sample[s.record_id] = rec[FIELD]
    if svc.core.db.dialect == "postgresql":
        with svc.core.db.begin() as conn:
            conn.execute(text("ANALYZE"))  # as autovacuum would have on a database in service
    return tenant, sample


# --- 1. old: the per-record path -------------------------------------------------------------


def _old_add_index_rows(conn: Connection, rows: Sequence[NewIndex]) -> int:
    """The old ``keys_repo.add_index_rows``: one row at a time, each in a savepoint."""
    table = cast(Table, BlindIndexRow.__table__)
    n = 0
    for row in rows:
        try:
            with conn.begin_nested():
                conn.execute(table.insert(), row._asdict())
            n += 1
        except IntegrityError:
            pass
    return n


def bench_old(run: Run, svc: RecordsService, tenant: str, p: Params) -> None:
    """The old ``_Indexer`` loop, on the first ``p.old`` values, under a key of its own."""
    core = svc.core
    t0 = time.perf_counter()
    ik = core.keyring.new_version(tenant, CLASS, INDEX, deadline=_dl())
    done = 0
    while done < p.old:
        with core.db.begin(write=False) as conn:
            todo = keys_repo.unindexed_values(conn, tenant, [FIELD], ik.id, OLD_BATCH)
        if not todo:
            break
        by_record: dict[str, list[str]] = {}
        for rid, name in todo:
            by_record.setdefault(rid, []).append(name)
        rows: list[NewIndex] = []
        for rid, fields in by_record.items():
            rows += index_rows(core, tenant, rid, fields, ik, deadline=_dl())
        with core.db.begin() as conn:
            done += _old_add_index_rows(conn, rows)
    run.old = (done, time.perf_counter() - t0)
    with core.db.begin() as conn:  # not measured: the new rotation starts from one version
        keys_repo.drop_index_keys(conn, [ik.id], datetime.now(UTC))
    print(f"  1. old    {done:,} values one record at a time: {Run.rate(run.old):,.0f} values/s")


# --- 2. new: rotate_index --------------------------------------------------------------------


def bench_new(
    run: Run, svc: RecordsService, tenant: str, sample: dict[str, str], p: Params
) -> None:
    t0 = time.perf_counter()
    report = rotate_index(svc.core, tenant, CLASS, batch=p.batch)
    run.new = (report.indexed, time.perf_counter() - t0)
    missed = sum(
        svc.find(ADMIN, tenant, {FIELD: email}, deadline=_dl()) != [rid]
        for rid, email in sample.items()
    )
    run.found = f"{len(sample) - missed}/{len(sample)} found"
    print(
        f"  2. new    {report.indexed:,} values, rotate_index batch {p.batch}:"
        f" {Run.rate(run.new):,.0f} values/s ({run.new[1]:.1f} s; v{report.version},"
        f" {report.dropped:,} old rows dropped; FindRecords sample {run.found})"
    )


# --- 3. floor: the crypto alone --------------------------------------------------------------


def bench_floor(run: Run, svc: RecordsService, tenant: str) -> None:
    """Decrypt and HMAC every value of the tenant, read and with keys unwrapped beforehand."""
    core = svc.core
    with core.db.begin(write=False) as conn:
        todo = keys_repo.values_to_index(conn, tenant, [FIELD], str(uuid.uuid4()), None, 10**9)
    refs = [
        DataKeyRef(v.data_key_id, v.record_id, v.field_class, v.tenant_key_id, v.wrapped_dek)
        for v in todo
    ]
    deks = core.data_keys.open(tenant, refs, deadline=_dl(), cache=False)
    ik = core.keyring.current(tenant, [CLASS], deadline=_dl())[(CLASS, INDEX)]
    work = [(deks[v.data_key_id], v.record_id, v.ciphertext) for v in todo]
    t0 = time.perf_counter()
    for dek, rid, ct in work:
        value = crypto.open_value(dek, tenant, rid, FIELD, ct)
        crypto.blind_index(ik.key, FIELD, value.encode())
    run.floor = (len(work), time.perf_counter() - t0)
    print(
        f"  3. floor  {len(work):,} values, open_value + blind_index in a loop:"
        f" {Run.rate(run.floor):,.0f} values/s"
    )


# --- one backend -----------------------------------------------------------------------------


def run_backend(backend: str, url: str, openbao: OpenBaoDevServer, p: Params) -> Run:
    run = Run(backend)
    upgrade(url)
    db = Database(url)
    try:
        t0 = time.perf_counter()
        tenant, sample = setup(make_service(db, openbao), p)
        run.setup_seconds = time.perf_counter() - t0
        print(f"  setup (not measured): {p.records:,} records in {run.setup_seconds:.1f} s")
        bench_old(run, make_service(db, openbao), tenant, p)
        bench_new(run, make_service(db, openbao), tenant, sample, p)
        bench_floor(run, make_service(db, openbao), tenant)
        print(
            f"  {backend}: new / old = {run.ratio(run.new, run.old):.1f}x,"
            f" new / floor = {run.ratio(run.new, run.floor):.3f}x"
        )
    finally:
        db.dispose()
    return run


def summary_table(runs: Sequence[Run], p: Params) -> list[str]:
    rows = ["| Backend | Measurement | Result |", "|---|---|---|"]
    for r in runs:
        b = r.backend
        rows += [
            f"| {b} | rotate-index, old per-record path ({r.old[0]:,} values)"
            f" | {r.rate(r.old):,.0f} values/s |",
            f"| {b} | rotate-index in batches of {p.batch} ({r.new[0]:,} values, end to end)"
            f" | {r.rate(r.new):,.0f} values/s |",
            f"| {b} | floor: open_value + blind_index loop | {r.rate(r.floor):,.0f} values/s |",
            f"| {b} | **new / old** | **{r.ratio(r.new, r.old):.1f}x** |",
            f"| {b} | new / floor | {r.ratio(r.new, r.floor):.3f}x |",
        ]
    return rows


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts (smoke test)")
    parser.add_argument(
        "--records", type=int, default=None, help="records of the tenant (20,000; --quick 1,000)"
    )
    parser.add_argument(
        "--old", type=int, default=None, help="values indexed the old way (2,000; --quick 200)"
    )
    parser.add_argument("--batch", type=int, default=500, help="rotate_index batch (500)")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also run on PostgreSQL at CVAULT_TEST_POSTGRES_URL (a temporary database)",
    )
    args = parser.parse_args(argv)
    records = args.records if args.records is not None else (1000 if args.quick else 20_000)
    old = args.old if args.old is not None else (200 if args.quick else 2000)
    if records < 1 or args.batch < 1 or not 1 <= old <= records:
        parser.error("--records and --batch must be at least 1, --old 1..--records")
    return Params(records=records, old=old, batch=int(args.batch), postgres=bool(args.postgres))


def run(p: Params) -> list[Run]:
    runs: list[Run] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cvault-bench-")))
        openbao = OpenBaoDevServer()
        stack.callback(openbao.stop)  # registered before start: a half-started server stops too
        openbao.start()
        init_field_keys(
            openbao.url, openbao.root_token, key_prefix=KEY_PREFIX, field_classes=FIELD_CLASSES
        )
        print(f"\nSQLite (WAL): {tmp / 'vault.db'}")
        runs.append(run_backend("SQLite", f"sqlite:///{tmp / 'vault.db'}", openbao, p))
        if p.postgres:
            why = postgres_reachable(POSTGRES_URL)
            if why is not None:
                print(f"\nPostgreSQL: not reachable at CVAULT_TEST_POSTGRES_URL ({why}); skipped")
            else:
                with postgres_database(POSTGRES_URL) as url:
                    print(f"\nPostgreSQL: temporary database {url.rpartition('/')[2]}")
                    runs.append(run_backend("PostgreSQL", url, openbao, p))
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    p = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    print("customer-vault rotate-index benchmark: batches vs one record at a time vs the crypto")
    for line in machine_context():
        print(f"  {line}")
    print(f"  params     records={p.records:,} old={p.old:,} batch={p.batch} postgres={p.postgres}")
    started = time.perf_counter()
    try:
        runs = run(p)
    except KeyboardInterrupt:
        print("\ninterrupted: stopped OpenBao, dropped the temporary database, removed files")
        return 130
    print(f"\n  cleaned up; total wall time {time.perf_counter() - started:.1f} s")
    print(f"  load avg at the end: {load_average()}")
    print("\nsummary (Markdown)\n")
    print("\n".join(summary_table(runs, p)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
