"""Key-rotation benchmark: rotate-tenant (local re-wrap) and rotate-field (batched transit
rewrap) against one transit ``rewrap`` call per key.

Runs against the embedded default: a SQLite file in a temporary directory and an OpenBao dev
server started here (with a file audit device, to count its requests); with ``--postgres``
also against PostgreSQL, in a temporary database that is dropped at the end. The rotations are
the operator commands' own functions (``vault.service.operations.rotate_tenant`` and
``rotate_field``), called as ``cvault keys rotate-tenant`` / ``rotate-field`` call them. Prints
figures only: there are no assertions, and nothing measured changes the exit status.

    .venv/bin/python benchmarks/keys.py               # full run (about 45 s on SQLite)
    .venv/bin/python benchmarks/keys.py --quick       # smoke test (about 5 s; 11 s --postgres)
    .venv/bin/python benchmarks/keys.py --postgres    # also on PostgreSQL (about 100 s)

Set up per backend, not measured: a tenant with a few real records written through
``RecordsService``, and enough further ``email`` data keys, wrapped for real under the same
tenant key with ``vault.crypto.wrap_data_key`` and inserted in bulk, to reach ``--data-keys``
(a sample is unwrapped before and after); and ``--tenants`` more tenants whose tenant and index
keys for ``email`` and ``phone`` are made by the service's own ``Keyring`` (one transit call per
class per tenant).

Measured in one run, per backend:

1. rotate-tenant: data keys re-wrapped per second, and the time for all of them (100,000 by
   default), with a fresh key cache as in a new ``cvault`` process; the OpenBao requests it made
   (from the audit log): one unwrap for the old version and one wrap for the new, not one per
   data key.
2. rotate-field: tenant and index keys rewrapped per second by the key server, ``rewrap`` in
   batches of up to 200 keys per call, for ``email`` then ``phone``; its OpenBao requests.
3. The naive way: one transit ``rewrap`` HTTP call per key (hvac, on a sample of the same
   wrapped keys), keys/s, and the ratio rotate-field / naive.

Both rotations also print where their time goes, from ``perf_counter`` marks put around the
storage, crypto and key-server functions they call for the duration of the call (``--no-stages``
leaves them out).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import hvac
from sqlalchemy import Table, event, func, insert, select, text
from sqlalchemy.engine import Connection

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._common import (  # noqa: E402
    BaoRequests,
    count_requests,
    describe_requests,
    load_average,
    machine_context,
    percentile,
    postgres_database,
    postgres_reachable,
    raise_interrupt,
)
from tests.support import (  # noqa: E402
    ADMIN,
    FIELD_CLASSES,
    KEY_PREFIX,
    POSTGRES_URL,
    TEST_POLICY,
    make_service,
    make_wrapper,
    sample_record,
)
from vault import crypto  # noqa: E402
from vault.audit import AuditLog, MemoryCheckpointStore  # noqa: E402
from vault.crypto import uuid7  # noqa: E402
from vault.deadline import Deadline  # noqa: E402
from vault.errors import DecryptionFailed  # noqa: E402
from vault.keys import (  # noqa: E402
    FieldKeyAdmin,
    KeyManager,
    TransitKeyWrapper,
    init_field_keys,
)
from vault.keys._manager import BOUND_PREFIX, transit_ciphertext  # noqa: E402
from vault.keys.openbao_dev import OpenBaoDevServer  # noqa: E402
from vault.policy import PolicyHolder  # noqa: E402
from vault.schema import load_schema  # noqa: E402
from vault.service import Access, Core, Keyring, RecordInput, RecordsService  # noqa: E402
from vault.service._keyring import DATA, TenantKey  # noqa: E402
from vault.service.operations import key_status, rotate_field, rotate_tenant  # noqa: E402
from vault.storage import (  # noqa: E402
    Database,
    keys_repo,
    upgrade,
)
from vault.storage.models import DataKeyRow  # noqa: E402

#: the class whose data keys rotate-tenant re-wraps
TENANT_CLASS = "email"
#: the classes rotate-field rotates (every tenant made in the setup has keys for both)
FIELD_CLASSES_ROTATED = ("email", "phone")
#: records per RecordsService.create call in the setup (its cap is 1,000)
CREATE_BATCH = 200
#: data-key rows per INSERT statement in the setup
INSERT_BATCH = 5000
#: data keys whose plaintext is kept to check them before and after the rotation
SAMPLE = 1000
#: records read back through a fresh service after each rotation
READ_BACK = 20
DEADLINE_SECONDS = 120.0
DKT = cast(Table, DataKeyRow.__table__)


def _dl() -> Deadline:
    return Deadline.after(DEADLINE_SECONDS)


# --- parameters and results ------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    data_keys: int
    records: int
    tenants: int
    naive: int
    tenant_batch: int
    field_batch: int
    stages: bool
    seed: int
    postgres: bool
    postgres_url: str


@dataclass
class Run:
    """The figures of one backend."""

    backend: str
    setup_data_keys_seconds: float = 0.0
    setup_tenants_seconds: float = 0.0
    setup_tenant_calls: int = 0
    tenant_keys_made: int = 0
    # rotate-tenant
    rt_keys: int = 0
    rt_seconds: float = 0.0
    rt_batches: list[float] = field(default_factory=list)
    rt_requests: list[str] = field(default_factory=list)
    rt_stages: dict[str, float] = field(default_factory=dict)
    rt_selects: list[float] = field(default_factory=list)
    rt_versions: str = ""
    rt_plan: str = ""
    rt_empty_select_ms: float = 0.0
    data_key_rows: int = 0
    # rotate-field, per class: (keys rewrapped, seconds)
    rf: dict[str, tuple[int, float]] = field(default_factory=dict)
    rf_requests: list[str] = field(default_factory=list)
    rf_stages: dict[str, float] = field(default_factory=dict)
    rf_rewrap_calls: int = 0
    # naive: seconds of every call
    naive_ms: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def rt_rate(self) -> float:
        return self.rt_keys / self.rt_seconds if self.rt_seconds else 0.0

    @property
    def rf_keys(self) -> int:
        return sum(n for n, _ in self.rf.values())

    @property
    def rf_seconds(self) -> float:
        return sum(s for _, s in self.rf.values())

    @property
    def rf_rate(self) -> float:
        return self.rf_keys / self.rf_seconds if self.rf_seconds else 0.0

    @property
    def rf_transit_rate(self) -> float:
        """Keys per second of the batched rewrap calls alone (timed by TimedAdmin)."""
        rewrap = self.rf_stages.get("rewrap", 0.0)
        return self.rf_keys / rewrap if rewrap else 0.0

    @property
    def naive_rate(self) -> float:
        total = sum(self.naive_ms) / 1000.0
        return len(self.naive_ms) / total if total else 0.0

    @property
    def ratio(self) -> float:
        return self.rf_rate / self.naive_rate if self.naive_rate else 0.0


# --- helpers ---------------------------------------------------------------------------------


class Stages:
    """Seconds spent in named functions during one measured call.

    :meth:`wrap` replaces ``module.name`` by a timing wrapper until :meth:`close`. The code
    measured looks these functions up as module attributes at call time
    (``keys_repo.replace_data_keys``, ``crypto.wrap_data_key``), so the wrappers see every call.
    A wrapper costs about 0.3 us a call (three calls a data key); rotate-tenant spends 150 us
    or more a key.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, list[float]] = {}
        self._restore: list[tuple[ModuleType, str, Any]] = []

    def wrap(self, module: ModuleType, name: str, label: str, *, each: bool = False) -> None:
        """``each``: keep the time of every call too (for a per-batch trend)."""
        if not self.enabled:
            return
        original = getattr(module, name)
        self.seconds.setdefault(label, 0.0)
        seconds = self.seconds
        calls = self.calls.setdefault(label, []) if each else None

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                seconds[label] += elapsed
                if calls is not None:
                    calls.append(elapsed)

        self._restore.append((module, name, original))
        setattr(module, name, timed)

    def close(self) -> None:
        while self._restore:
            module, name, original = self._restore.pop()
            setattr(module, name, original)


@contextlib.contextmanager
def stages(enabled: bool) -> Iterator[Stages]:
    timer = Stages(enabled)
    try:
        yield timer
    finally:
        timer.close()


class TimedKeyring(Keyring):
    """The service's Keyring, with the time spent fetching tenant keys by id counted."""

    def __init__(self, db: Database, keys: KeyManager) -> None:
        super().__init__(db, keys)
        self.by_ids_seconds = 0.0

    def by_ids(
        self, tenant: str, ids: Iterable[str], *, deadline: Deadline
    ) -> dict[str, TenantKey]:
        t0 = time.perf_counter()
        try:
            return super().by_ids(tenant, ids, deadline=deadline)
        finally:
            self.by_ids_seconds += time.perf_counter() - t0


class TimedAdmin(FieldKeyAdmin):
    """``FieldKeyAdmin`` with the time spent in ``rewrap`` (HTTP calls to transit) counted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rewrap_seconds = 0.0

    def rewrap(self, name: str, ciphertexts: Sequence[str]) -> list[str]:
        t0 = time.perf_counter()
        try:
            return super().rewrap(name, ciphertexts)
        finally:
            self.rewrap_seconds += time.perf_counter() - t0


def query_plan(db: Database, call: Callable[[Connection], object]) -> str:
    """The database's plan for the statement ``call`` runs (captured as it is sent, then
    explained with the same parameters), one line per plan row."""
    sent: list[tuple[str, Any]] = []

    def capture(
        conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        sent.append((statement, parameters))

    with db.begin(write=False) as conn:
        event.listen(conn, "before_cursor_execute", capture)
        try:
            call(conn)
        finally:
            event.remove(conn, "before_cursor_execute", capture)
        if not sent:
            return "?"
        statement, parameters = sent[-1]
        prefix = "EXPLAIN QUERY PLAN " if db.dialect == "sqlite" else "EXPLAIN "
        rows = conn.exec_driver_sql(prefix + statement, parameters).all()
    return "; ".join(str(r[-1]).strip() for r in rows)


# --- setup (not measured) --------------------------------------------------------------------


@dataclass
class Fixture:
    """What the setup made: the tenant whose data keys are rotated, with its real records,
    the sample of data keys kept to check them, and the other tenants."""

    tenant: str
    records: dict[str, dict[str, str]]  # record id -> canonical values
    sample: list[tuple[str, str, bytes]]  # (data key id, record id, plaintext data key)
    tenants: list[str]


def setup_data_keys(run: Run, svc: RecordsService, p: Params, rng: random.Random) -> Fixture:
    """A tenant with ``p.records`` real records, then bulk ``email`` data keys up to
    ``p.data_keys``, each wrapped under the tenant's real tenant key, as the service would."""
    tenant = f"bench-keys-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    records: dict[str, dict[str, str]] = {}
    for start in range(0, p.records, CREATE_BATCH):
        recs = [sample_record(i) for i in range(start, min(p.records, start + CREATE_BATCH))]
        stored = svc.create(ADMIN, tenant, [RecordInput(r) for r in recs], deadline=_dl())
        for rec, s in zip(recs, stored, strict=True):
            records[s.record_id] = svc.core.schema.validate(rec)
    t_records = time.perf_counter() - t0

    tk = svc.core.keyring.current(tenant, [TENANT_CLASS], deadline=_dl())[(TENANT_CLASS, DATA)]
    tk_id = uuid.UUID(tk.id)
    bulk = max(0, p.data_keys - len(records))
    keep = set(rng.sample(range(bulk), min(SAMPLE, bulk)))
    sample: list[tuple[str, str, bytes]] = []
    t0 = time.perf_counter()
    t_made = t_insert = 0.0
    now = datetime.now(UTC)
    for start in range(0, bulk, INSERT_BATCH):
        m0 = time.perf_counter()
        rows: list[dict[str, object]] = []
        for i in range(start, min(bulk, start + INSERT_BATCH)):
            dek = crypto.DataKey(uuid7(), crypto.new_key())
            record_id = str(uuid7())  # a record id the service would make (no record row)
            wrapped = crypto.wrap_data_key(
                tk_id, tk.key, dek, tenant=tenant, record_id=record_id, field_class=TENANT_CLASS
            )
            rows.append(
                {
                    "id": str(dek.id),
                    "tenant": tenant,
                    "record_id": record_id,
                    "field_class": TENANT_CLASS,
                    "tenant_key_id": tk.id,
                    "wrapped": wrapped,
                    "created_at": now,
                }
            )
            if i in keep:
                sample.append((str(dek.id), record_id, dek.key))
        i0 = time.perf_counter()
        with svc.core.db.begin() as conn:
            conn.execute(insert(DKT), rows)
        t_made += i0 - m0
        t_insert += time.perf_counter() - i0
    run.setup_data_keys_seconds = time.perf_counter() - t0 + t_records
    if db_is_postgres(svc.core.db):
        # A new table has no planner statistics until autovacuum analyzes it; a database in
        # service has them, and the plan of the rotation's SELECT depends on them.
        with svc.core.db.begin() as conn:
            conn.execute(text("ANALYZE"))
    bad = check_sample(svc.core.db, tk, tenant, sample)
    print(
        f"  {len(records):,} records through RecordsService ({t_records:.1f} s), then"
        f" {bulk:,} more {TENANT_CLASS} data keys wrapped under the tenant's key v{tk.version}"
        f" (made in {t_made:.1f} s, inserted {INSERT_BATCH:,} a statement in {t_insert:.1f} s);"
        f" {len(sample):,} sampled unwrap: {'ok' if not bad else f'{bad} FAILED'}"
        + ("; ANALYZE" if db_is_postgres(svc.core.db) else "")
    )
    if bad:
        run.problems.append(f"setup: {bad} of {len(sample)} sampled data keys did not unwrap")
    return Fixture(tenant, records, sample, [])


def close_wrapper(svc: RecordsService) -> None:
    """Close the HTTP session of a service made by ``tests.support.make_service``."""
    if isinstance(svc.core.keys.wrapper, TransitKeyWrapper):
        svc.core.keys.wrapper.close()


def db_is_postgres(db: Database) -> bool:
    return db.dialect == "postgresql"


def check_sample(
    db: Database, tk: TenantKey, tenant: str, sample: Sequence[tuple[str, str, bytes]]
) -> int:
    """How many sampled data keys do not unwrap, under ``tk``, to the key they were made with
    (or no longer name ``tk``)."""
    ids = [dek_id for dek_id, _, _ in sample]
    stored: dict[str, tuple[str, bytes]] = {}
    with db.begin(write=False) as conn:
        for i in range(0, len(ids), 500):
            for r in conn.execute(
                select(DKT.c.id, DKT.c.tenant_key_id, DKT.c.wrapped).where(
                    DKT.c.id.in_(ids[i : i + 500])
                )
            ):
                stored[r.id] = (r.tenant_key_id, bytes(r.wrapped))
    bad = 0
    for dek_id, record_id, key in sample:
        tk_id, wrapped = stored.get(dek_id, ("", b""))
        try:
            dek = crypto.unwrap_data_key(
                uuid.UUID(tk.id),
                tk.key,
                uuid.UUID(dek_id),
                wrapped,
                tenant=tenant,
                record_id=record_id,
                field_class=TENANT_CLASS,
            )
        except DecryptionFailed:
            bad += 1
            continue
        if tk_id != tk.id or dek.key != key:
            bad += 1
    return bad


def setup_tenants(run: Run, fixture: Fixture, svc: RecordsService, p: Params) -> None:
    """``p.tenants`` tenants with a tenant and an index key for each rotated class, made by the
    service's Keyring (one transit wrap call per class per tenant, as on a first write)."""
    suffix = uuid.uuid4().hex[:6]
    t0 = time.perf_counter()
    for i in range(p.tenants):
        tenant = f"bench-org-{i:05d}-{suffix}"
        svc.core.keyring.current(tenant, FIELD_CLASSES_ROTATED, deadline=_dl())
        fixture.tenants.append(tenant)
    run.setup_tenants_seconds = time.perf_counter() - t0
    run.setup_tenant_calls = p.tenants * len(FIELD_CLASSES_ROTATED)
    with svc.core.db.begin(write=False) as conn:
        run.tenant_keys_made = int(
            conn.execute(
                text("SELECT count(*) FROM tenant_keys WHERE field_class IN ('email', 'phone')")
            ).scalar_one()
        )
    if db_is_postgres(svc.core.db):
        with svc.core.db.begin() as conn:
            conn.execute(text("ANALYZE"))
    print(
        f"  {p.tenants:,} more tenants x {len(FIELD_CLASSES_ROTATED)} classes"
        f" ({', '.join(FIELD_CLASSES_ROTATED)}): tenant and index keys made by Keyring.current,"
        f" {run.setup_tenant_calls:,} transit calls, in {run.setup_tenants_seconds:.1f} s;"
        f" {run.tenant_keys_made:,} {'/'.join(FIELD_CLASSES_ROTATED)} tenant/index keys in all"
    )


def read_back(run: Run, step: str, db: Database, openbao: OpenBaoDevServer, fx: Fixture) -> None:
    """A sample of the real records, read through a fresh service (cold key caches): every
    key on the path (transit field key, tenant key, data key) is the rotated one."""
    fresh = make_service(db, openbao)
    try:
        wrong = 0
        for rid in list(fx.records)[:READ_BACK]:
            view = fresh.get(ADMIN, fx.tenant, rid, deadline=_dl())
            if {n: f.value for n, f in view.fields.items()} != fx.records[rid]:
                wrong += 1
    finally:
        close_wrapper(fresh)
    if wrong:
        run.problems.append(f"{step}: {wrong} of {READ_BACK} records did not read back")
    print(f"    check: {READ_BACK} records read back through a fresh service: ", end="")
    print("ok" if not wrong else f"{wrong} WRONG")


# --- the measurements ------------------------------------------------------------------------


def bench_rotate_tenant(
    run: Run,
    db: Database,
    openbao: OpenBaoDevServer,
    counter: BaoRequests,
    fx: Fixture,
    p: Params,
) -> None:
    # A fresh KeyManager: what `cvault keys rotate-tenant` has in a new process (cold caches).
    wrapper = make_wrapper(openbao)
    keys = KeyManager(wrapper)
    keyring = TimedKeyring(db, keys)
    audit = AuditLog(db, keys, checkpoint=MemoryCheckpointStore(), checkpoint_in_background=False)
    core = Core(db, keys, load_schema(), Access(PolicyHolder(TEST_POLICY), audit), keyring=keyring)
    marks: list[float] = []
    try:
        with stages(p.stages) as timer:
            timer.wrap(keys_repo, "data_keys_under", "select", each=True)
            timer.wrap(keys_repo, "replace_data_keys", "update")
            timer.wrap(crypto, "unwrap_data_key", "crypto")
            timer.wrap(crypto, "wrap_data_key", "crypto")
            counter.take()
            t0 = time.perf_counter()
            marks.append(t0)
            report = rotate_tenant(
                core,
                fx.tenant,
                TENANT_CLASS,
                batch=p.tenant_batch,
                progress=lambda done: marks.append(time.perf_counter()),
            )
            elapsed = time.perf_counter() - t0
            run.rt_requests = counter.take()
        run.rt_stages = dict(timer.seconds)
        run.rt_selects = timer.calls.get("select", [])
        if p.stages:
            run.rt_stages["keyring"] = keyring.by_ids_seconds
    finally:
        wrapper.close()
    run.rt_keys, run.rt_seconds = report.rewrapped, elapsed
    run.rt_batches = [b - a for a, b in itertools.pairwise(marks)]
    run.rt_versions = f"v{report.version - 1} -> v{report.version}" if report.started else ""
    if report.rewrapped != p.data_keys or report.destroyed != 1 or not report.started:
        run.problems.append(f"rotate-tenant: {report}")

    # checks, and the plan of the SELECT that finds the next batch (outside the timings)
    check_wrapper = make_wrapper(openbao)
    try:
        new = Keyring(db, KeyManager(check_wrapper)).current(
            fx.tenant, [TENANT_CLASS], deadline=_dl()
        )[(TENANT_CLASS, DATA)]
    finally:
        check_wrapper.close()
    with db.begin(write=False) as conn:
        per_key = {
            str(r[0]): int(r[1])
            for r in conn.execute(
                select(DKT.c.tenant_key_id, func.count())
                .where(DKT.c.tenant == fx.tenant, DKT.c.field_class == TENANT_CLASS)
                .group_by(DKT.c.tenant_key_id)
            )
        }
        run.data_key_rows = int(conn.execute(select(func.count()).select_from(DKT)).scalar_one())
    if per_key != {new.id: p.data_keys}:
        run.problems.append(f"rotate-tenant: data keys per tenant key afterwards {per_key}")
    bad = check_sample(db, new, fx.tenant, fx.sample)
    if bad:
        run.problems.append(f"rotate-tenant: {bad} sampled data keys wrong under the new key")

    def next_batch(conn: Connection) -> object:
        old = keys_repo.older_tenant_keys(conn, fx.tenant, TENANT_CLASS, "data", new.version)
        return keys_repo.data_keys_under(conn, old, p.tenant_batch)

    run.rt_plan = query_plan(db, next_batch)
    t0 = time.perf_counter()
    with db.begin(write=False) as conn:
        next_batch(conn)
    run.rt_empty_select_ms = (time.perf_counter() - t0) * 1000.0

    print(
        f"    {report.rewrapped:,} data keys re-wrapped in {elapsed:.2f} s"
        f"  -> {run.rt_rate:,.0f} data keys/s ({elapsed / max(1, report.rewrapped) * 1e6:.0f} us"
        f" a key); tenant key {run.rt_versions}, {report.destroyed} old version destroyed"
    )
    print(f"    OpenBao requests: {describe_requests(run.rt_requests)}")
    print_batches(run, p)
    if p.stages:
        print_tenant_stages(run)
    print(
        f"    plan of the SELECT in data_keys_under: {run.rt_plan}; with nothing"
        f" left to find it takes {run.rt_empty_select_ms:.1f} ms ({run.data_key_rows:,} rows"
        " in data_keys)"
    )
    print(
        f"    check: {len(fx.sample):,} sampled data keys unwrap to their keys under"
        f" the new version: {'ok' if not bad else f'{bad} WRONG'};"
        f" all {p.data_keys:,} name it: {'ok' if per_key == {new.id: p.data_keys} else 'NO'}"
    )


def print_batches(run: Run, p: Params) -> None:
    b = [s * 1000.0 for s in run.rt_batches]
    if not b:
        return
    head = " ".join(f"{x:.0f}" for x in b[:3])
    tail = " ".join(f"{x:.0f}" for x in b[-3:])
    print(
        f"    per batch of {p.tenant_batch:,} (ms): first {head}, median"
        f" {statistics.median(b):.0f}, last {tail}  ({len(b)} batches)"
    )
    s = [x * 1000.0 for x in run.rt_selects]
    if len(s) >= 3:
        # data_keys_under runs once before the loop (is a rotation under way? limit 1),
        # once per batch, and once more to find that nothing is left
        batches = s[1:-1]
        print(
            f"    the SELECT of data_keys_under (ms): before the loop {s[0]:.1f}; per batch"
            f" first {batches[0]:.1f}, median {statistics.median(batches):.1f}, last"
            f" {batches[-1]:.1f}; the final one, with nothing left, {s[-1]:.1f}"
        )


TENANT_STAGES = (
    ("select", "SELECT data_keys_under (each batch, +2)"),
    ("keyring", "tenant keys by id (Keyring.by_ids, cached)"),
    ("crypto", "AES-GCM unwrap + wrap (vault.crypto)"),
    ("update", "UPDATE ... compare-and-set, one executemany a batch"),
)


def print_tenant_stages(run: Run) -> None:
    total = run.rt_seconds
    per = 1e6 / max(1, run.rt_keys)
    print(f"    where the time goes ({total:.2f} s; us a key):")
    known = 0.0
    for key, label in TENANT_STAGES:
        s = run.rt_stages.get(key, 0.0)
        known += s
        print(f"      {label:<52} {s:7.2f} s {s * per:7.1f} us {s / total:6.1%}")
    rest = total - known
    label = "the rest: BEGIN/COMMIT, loop, new version, destroy"
    print(f"      {label:<52} {rest:7.2f} s {rest * per:7.1f} us {rest / total:6.1%}")


def bench_rotate_field(
    run: Run,
    db: Database,
    openbao: OpenBaoDevServer,
    counter: BaoRequests,
    transit: hvac.Client,
    fx: Fixture,
    p: Params,
    rng: random.Random,
) -> None:
    # The naive sample: wrapped keys of the rotated classes as they are before the rotation.
    with db.begin(write=False) as conn:
        rows = keys_repo.wrapped_keys(conn)
    naive_work: dict[str, list[str]] = {}
    for c in FIELD_CLASSES_ROTATED:
        mine = [
            r.wrapped for r in rows if r.field_class == c and r.wrapped.startswith(BOUND_PREFIX)
        ]
        half = p.naive // len(FIELD_CLASSES_ROTATED)
        naive_work[c] = [transit_ciphertext(w) for w in rng.sample(mine, min(half, len(mine)))]
    # the keys of a few tenants before, to compare after
    picked = rng.sample(fx.tenants, min(READ_BACK, len(fx.tenants)))
    before = {t: current_keys(db, openbao, t) for t in picked}

    admin = TimedAdmin(openbao.url, openbao.root_token, key_prefix=KEY_PREFIX)
    with admin:
        # one unmeasured call on each connection: both are open, as in a running command
        admin.info(FIELD_CLASSES_ROTATED[0])
        transit.secrets.transit.read_key(name=f"{KEY_PREFIX}-{FIELD_CLASSES_ROTATED[0]}")
        for c in FIELD_CLASSES_ROTATED:
            with stages(p.stages) as timer:
                timer.wrap(keys_repo, "wrapped_keys", "select")
                timer.wrap(keys_repo, "replace_wrapped", "update")
                counter.take()
                rewrap0 = admin.rewrap_seconds
                t0 = time.perf_counter()
                report = rotate_field(db, admin, c, batch=p.field_batch)
                elapsed = time.perf_counter() - t0
                paths = counter.take()
            run.rf_requests += paths
            for k, s in timer.seconds.items():
                run.rf_stages[k] = run.rf_stages.get(k, 0.0) + s
            run.rf_stages["rewrap"] = run.rf_stages.get("rewrap", 0.0) + (
                admin.rewrap_seconds - rewrap0
            )
            run.rf[c] = (report.rewrapped, elapsed)
            rewraps = sum(1 for x in paths if x.startswith("transit/rewrap/"))
            run.rf_rewrap_calls += rewraps
            print(
                f"    {c:<6} v{report.version - 1} -> v{report.version}: {report.rewrapped:,}"
                f" tenant/index keys rewrapped in {elapsed:.2f} s"
                f"  -> {report.rewrapped / elapsed:,.0f} keys/s;"
                f" OpenBao requests {describe_requests(paths)}"
            )
            if not report.rotated or report.converted:
                run.problems.append(f"rotate-field {c}: {report}")
            # the naive way on this class's sample, now below the newest version
            bench_naive(run, transit, c, naive_work[c], report.version)
        infos = {c: admin.info(c) for c in FIELD_CLASSES_ROTATED}
    status = key_status(db, infos)
    below = sum(f.below_latest for f in status.field_keys)
    after = {t: current_keys(db, openbao, t) for t in picked}
    changed = sum(1 for t in picked if after[t] != before[t])
    if below or changed:
        run.problems.append(f"rotate-field: {below} keys below the newest, {changed} changed")
    print(
        f"    rotate-field, both classes: {run.rf_keys:,} keys in {run.rf_seconds:.2f} s"
        f"  -> {run.rf_rate:,.0f} keys/s ({run.rf_rewrap_calls} rewrap calls of up to"
        f" {min(p.field_batch, 200)} keys)"
    )
    if p.stages:
        print_field_stages(run)
    print(
        f"    check: key status shows {below} keys below the newest version;"
        f" {len(picked)} tenants' keys unwrap (fresh cache) to the same keys as before:"
        f" {'ok' if not changed else f'{changed} CHANGED'}"
    )


def current_keys(db: Database, openbao: OpenBaoDevServer, tenant: str) -> dict[str, bytes]:
    """A tenant's current tenant and index keys, unwrapped with a cold cache."""
    wrapper = make_wrapper(openbao)
    try:
        got = Keyring(db, KeyManager(wrapper)).current(
            tenant, FIELD_CLASSES_ROTATED, deadline=_dl()
        )
    finally:
        wrapper.close()
    return {f"{c}/{k}": v.key for (c, k), v in got.items()}


FIELD_STAGES = (
    ("select", "read every wrapped key (keys_repo.wrapped_keys)"),
    ("rewrap", "transit rewrap calls (HTTP, OpenBao)"),
    ("update", "UPDATE ... compare-and-set, one executemany a batch"),
)


def print_field_stages(run: Run) -> None:
    total = run.rf_seconds
    per = 1e6 / max(1, run.rf_keys)
    print(f"    where the time goes ({total:.2f} s; us a key):")
    known = 0.0
    for key, label in FIELD_STAGES:
        s = run.rf_stages.get(key, 0.0)
        known += s
        print(f"      {label:<52} {s:7.2f} s {s * per:7.1f} us {s / total:6.1%}")
    rest = total - known
    label = "the rest: key info, rotate, BEGIN/COMMIT, the loop"
    print(f"      {label:<52} {rest:7.2f} s {rest * per:7.1f} us {rest / total:6.1%}")


def bench_naive(
    run: Run, transit: hvac.Client, field_class: str, ciphertexts: Sequence[str], version: int
) -> None:
    """One transit ``rewrap`` call per key (the plaintext stays in OpenBao, as in rotate-field,
    but nothing is batched), on wrapped keys read before the rotation. Only the calls are
    timed: the results are not stored, so no database work is counted."""
    name = f"{KEY_PREFIX}-{field_class}"
    wrong = 0
    ms: list[float] = []
    for ct in ciphertexts:
        t0 = time.perf_counter()
        answer = transit.secrets.transit.rewrap_data(name=name, ciphertext=ct)
        ms.append((time.perf_counter() - t0) * 1000.0)
        if not str(answer["data"]["ciphertext"]).startswith(f"vault:v{version}:"):
            wrong += 1
    run.naive_ms += ms
    if wrong:
        run.problems.append(f"naive {field_class}: {wrong} rewraps not under v{version}")
    if ms:
        print(
            f"    naive  {len(ms)} {field_class} keys, one transit rewrap call each:"
            f" {len(ms) / (sum(ms) / 1000.0):,.0f} keys/s (p50 {percentile(ms, 50):.2f} ms,"
            f" p99 {percentile(ms, 99):.2f} ms a call)"
        )


# --- one backend -----------------------------------------------------------------------------


def run_backend(
    backend: str,
    url: str,
    openbao: OpenBaoDevServer,
    counter: BaoRequests,
    transit: hvac.Client,
    p: Params,
    stack: contextlib.ExitStack,
) -> Run:
    run = Run(backend)
    rng = random.Random(p.seed)
    upgrade(url)
    db = Database(url)
    stack.callback(db.dispose)
    svc = make_service(db, openbao)
    stack.callback(close_wrapper, svc)

    print("  setup (not measured)")
    fx = setup_data_keys(run, svc, p, rng)
    setup_tenants(run, fx, svc, p)

    print(
        f"\n  1. rotate-tenant {fx.tenant}/{TENANT_CLASS}: batch {p.tenant_batch:,}, fresh key"
        " cache (as a new cvault process)"
    )
    bench_rotate_tenant(run, db, openbao, counter, fx, p)
    read_back(run, "rotate-tenant", db, openbao, fx)

    print(
        f"\n  2-3. rotate-field (batch {p.field_batch}, transit rewrap of up to 200 keys a call),"
        " each class followed by the naive way on a sample of its keys"
    )
    bench_rotate_field(run, db, openbao, counter, transit, fx, p, rng)
    read_back(run, "rotate-field", db, openbao, fx)
    print(
        f"\n    rotate-field / naive = {run.rf_rate:,.0f} / {run.naive_rate:,.0f} keys/s ="
        f" {run.ratio:.1f}x"
    )
    if run.naive_rate and run.rf_transit_rate:
        print(
            f"    transit calls alone: batched rewrap / one call per key ="
            f" {run.rf_transit_rate:,.0f} / {run.naive_rate:,.0f} keys/s ="
            f" {run.rf_transit_rate / run.naive_rate:.1f}x"
        )
    if run.naive_rate:
        print(
            f"    (for scale: {run.rt_keys:,} data keys wrapped by transit, one rewrap call each,"
            f" would take about {run.rt_keys / run.naive_rate:.0f} s at the naive rate;"
            f" rotate-tenant took {run.rt_seconds:.1f} s and {len(run.rt_requests)} key-server"
            " calls)"
        )
    for problem in run.problems:
        print(f"  WARNING: {problem}")
    return run


# --- reporting -------------------------------------------------------------------------------


def summary_table(runs: Sequence[Run], p: Params) -> list[str]:
    rows = ["| Backend | Measurement | Result |", "|---|---|---|"]
    for r in runs:
        b = r.backend
        rows += [
            f"| {b} | setup, not counted: {r.rt_keys:,} data keys ({p.records} through the"
            f" service) / {r.tenant_keys_made:,} tenant and index keys of {p.tenants:,} tenants"
            f" | {r.setup_data_keys_seconds:.1f} s / {r.setup_tenants_seconds:.1f} s |",
            f"| {b} | rotate-tenant: data keys re-wrapped locally ({r.rt_keys:,}, batch"
            f" {p.tenant_batch}) | {r.rt_rate:,.0f} data keys/s |",
            f"| {b} | rotate-tenant: time for {r.rt_keys:,} data keys | {r.rt_seconds:.1f} s |",
            f"| {b} | rotate-tenant: OpenBao requests | {count_requests(r.rt_requests)} |",
            f"| {b} | rotate-field: tenant/index keys rewrapped, batched transit rewrap"
            f" ({r.rf_keys:,} keys, {r.rf_rewrap_calls} calls) | {r.rf_rate:,.0f} keys/s |",
            f"| {b} | Naive: one transit rewrap call per key ({len(r.naive_ms):,} calls)"
            f" | {r.naive_rate:,.0f} keys/s |",
            f"| {b} | **rotate-field / naive** | **{r.ratio:.1f}x** |",
        ]
        if r.rf_transit_rate:
            rows.append(
                f"| {b} | transit calls alone: batched rewrap / one call per key"
                f" | {r.rf_transit_rate:,.0f} / {r.naive_rate:,.0f} keys/s ="
                f" {r.rf_transit_rate / r.naive_rate:.1f}x |"
            )
        rows.append(f"| {b} | rotate-field: OpenBao requests | {count_requests(r.rf_requests)} |")
        if p.stages:
            rows.append(
                f"| {b} | rotate-tenant: where the time goes"
                f" | {shares(r.rt_stages, r.rt_seconds, TENANT_STAGES)} |"
            )
            rows.append(
                f"| {b} | rotate-field: where the time goes"
                f" | {shares(r.rf_stages, r.rf_seconds, FIELD_STAGES)} |"
            )
    return rows


def shares(seconds: dict[str, float], total: float, names: Sequence[tuple[str, str]]) -> str:
    """``"update 63%, select 27%, ..., rest 5%"``, largest first."""
    parts = [(seconds.get(key, 0.0), key) for key, _ in names]
    parts.append((total - sum(s for s, _ in parts), "rest"))
    return ", ".join(f"{k} {s / total:.0%}" for s, k in sorted(parts, reverse=True) if total)


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts (smoke test)")
    parser.add_argument(
        "--data-keys",
        type=int,
        default=None,
        help="data keys re-wrapped by rotate-tenant (100,000; --quick 10,000)",
    )
    parser.add_argument(
        "--records",
        type=int,
        default=None,
        help="of which real records written through RecordsService (200; --quick 50)",
    )
    parser.add_argument(
        "--tenants",
        type=int,
        default=None,
        help="tenants with email and phone keys for rotate-field (2,000; --quick 200)",
    )
    parser.add_argument(
        "--naive",
        type=int,
        default=None,
        help="keys rewrapped one call each, half per class (500; --quick 200)",
    )
    parser.add_argument(
        "--tenant-batch", type=int, default=500, help="rotate-tenant --batch (500, its default)"
    )
    parser.add_argument(
        "--field-batch", type=int, default=200, help="rotate-field --batch (200, its default)"
    )
    parser.add_argument(
        "--no-stages",
        action="store_true",
        help="no timers around the functions the rotations call (no breakdown)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed for the samples")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also run on PostgreSQL at CVAULT_TEST_POSTGRES_URL (a temporary database)",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    data_keys = args.data_keys if args.data_keys is not None else (10_000 if quick else 100_000)
    records = args.records if args.records is not None else (50 if quick else 200)
    tenants = args.tenants if args.tenants is not None else (200 if quick else 2000)
    naive = args.naive if args.naive is not None else (200 if quick else 500)
    for name, value in (
        ("data-keys", data_keys),
        ("tenants", tenants),
        ("naive", naive),
        ("tenant-batch", args.tenant_batch),
        ("field-batch", args.field_batch),
    ):
        if value < 1:
            parser.error(f"--{name} must be at least 1")
    if not 1 <= records <= data_keys:
        parser.error("--records must be 1..--data-keys")
    return Params(
        data_keys=data_keys,
        records=records,
        tenants=tenants,
        naive=naive,
        tenant_batch=int(args.tenant_batch),
        field_batch=int(args.field_batch),
        stages=not args.no_stages,
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
        openbao = OpenBaoDevServer(audit_log_path=tmp / "openbao-audit.log")
        stack.callback(openbao.stop)  # registered before start: a half-started server stops too
        openbao.start()
        init_field_keys(
            openbao.url, openbao.root_token, key_prefix=KEY_PREFIX, field_classes=FIELD_CLASSES
        )
        assert openbao.audit_log_path is not None
        counter = BaoRequests(openbao.audit_log_path)
        transit = hvac.Client(url=openbao.url, token=openbao.root_token, timeout=30)
        stack.callback(transit.adapter.close)
        print(f"  OpenBao dev server {openbao.url} ({time.perf_counter() - t0:.1f} s)")

        print(f"\nSQLite (WAL, synchronous=NORMAL): {tmp / 'vault.db'}")
        with contextlib.ExitStack() as inner:
            url = f"sqlite:///{tmp / 'vault.db'}"
            runs.append(run_backend("SQLite", url, openbao, counter, transit, p, inner))

        if p.postgres:
            why = postgres_reachable(p.postgres_url)
            if why is not None:
                print(f"\nPostgreSQL: not reachable at CVAULT_TEST_POSTGRES_URL ({why}); skipped")
            else:
                with contextlib.ExitStack() as inner:
                    url = inner.enter_context(postgres_database(p.postgres_url))
                    print(f"\nPostgreSQL: temporary database {url.rpartition('/')[2]}")
                    runs.append(run_backend("PostgreSQL", url, openbao, counter, transit, p, inner))
        print("\nteardown")
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    p = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    print(
        "customer-vault key-rotation benchmark: rotate-tenant (local) and rotate-field"
        " (batched transit rewrap) vs one rewrap call per key"
    )
    for line in machine_context():
        print(f"  {line}")
    print(
        f"  params     data-keys={p.data_keys:,} (records={p.records:,}) tenants={p.tenants:,}"
        f" naive={p.naive} tenant-batch={p.tenant_batch} field-batch={p.field_batch}"
        f" stages={p.stages} seed={p.seed} postgres={p.postgres}"
    )
    started = time.perf_counter()
    try:
        runs = run(p)
    except KeyboardInterrupt:
        print("\ninterrupted: stopped OpenBao, dropped the temporary database, removed files")
        return 130
    print(f"  cleaned up; total wall time {time.perf_counter() - started:.1f} s")
    print(f"  load avg at the end: {load_average()}")
    print("\nsummary (Markdown)\n")
    for line in machine_context():
        print(f"{line}  ")
    print()
    print("\n".join(summary_table(runs, p)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
