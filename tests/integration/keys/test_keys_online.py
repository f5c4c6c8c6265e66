"""Key rotation while the service serves, and rotation killed part-way (issue 5 acceptance).

Online: client threads keep creating, reading, tokenizing and revealing over gRPC while
``rotate_tenant``, ``rotate_field``, ``retire`` and ``trim`` run for every class (each unit
held half-done while every client does a round). No client call may fail, everything written
before and during the run reads back through a new process, and afterwards nothing is left
under an old tenant-key or field-key version. Once with the service's default key caches, and
once with caches that turn over during the run, as they do in production.

Crash: ``cvault keys rotate-tenant|rotate-field --all`` is SIGKILLed in the middle of its
second unit and run again: it finishes the interrupted unit ("resumed at"), nothing is lost or
left behind, and every version has moved by exactly one.

Last, the interleavings the online test meets only now and then, each made certain by pausing
the service at the point in question.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import pytest

from tests.support import (
    ADMIN,
    ADMIN_KEY,
    FIELD_CLASSES,
    KEY_PREFIX,
    SESSION_AUDIT_SINKS,
    TEST_POLICY,
    TEST_PURPOSE,
    USED_NEEDLES,
    authenticator,
    make_service,
    make_wrapper,
    sample_record,
)
from vault.api import start_server
from vault.api._status import status_of
from vault.audit import AuditLog, MemoryCheckpointStore
from vault.client import TokenItem, VaultClient
from vault.deadline import Deadline
from vault.errors import VaultServiceError
from vault.keys import (
    CacheLimits,
    CacheSettings,
    FieldKeyAdmin,
    FieldKeyInfo,
    KeyManager,
    NewKey,
    wrapped_version,
)
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.policy import PolicyHolder
from vault.schema import load_schema
from vault.service import Access, Core, Keyring, RecordInput, RecordsService, RecordView, Services
from vault.service._keyring import TenantKey
from vault.service.operations import (
    KeyOpRefused,
    KeyStatus,
    key_status,
    retire,
    rotate_field,
    rotate_tenant,
    trim,
)
from vault.service.tokens import TokenizeItem, TokenKind
from vault.storage import Database, keys_repo, upgrade

pytestmark = pytest.mark.openbao

CLASSES = (*FIELD_CLASSES, "audit")
WORKERS = 4
#: keys per rotation transaction in the online test: small, so that each unit takes several
BATCH = 5
#: how long a wait for the client threads may take before the test calls them stalled
STALL_SECONDS = 60.0

T = TypeVar("T")
P = ParamSpec("P")


#: key caches that turn over during the test, as they do in production when more tenants are
#: active than the cache holds, or with ``tenant_keys_max_uses`` / ``data_keys_max_uses`` set
#: low: keys are unwrapped again and again from the rows as they are at that moment
TURNING_OVER = CacheSettings(
    tenant_keys=CacheLimits(max_uses=20), data_keys=CacheLimits(max_uses=2)
)


def _service(db: Database, keys: KeyManager, keyring: Keyring | None = None) -> RecordsService:
    """make_service's service, over ``keys`` (and ``keyring``)."""
    audit = AuditLog(
        db,
        keys,
        sinks=SESSION_AUDIT_SINKS,
        checkpoint=MemoryCheckpointStore(),
        checkpoint_in_background=False,
    )
    access = Access(PolicyHolder(TEST_POLICY), audit)
    return RecordsService(Core(db, keys, load_schema(), access, keyring=keyring))


def _server_service(db: Database, bao: OpenBaoDevServer, caches: str) -> RecordsService:
    """The gRPC server's service, with its key caches as ``caches`` says."""
    if caches == "default":
        return make_service(db, bao)
    return _service(db, KeyManager(make_wrapper(bao), TURNING_OVER))


def _dl() -> Deadline:
    return Deadline.after(60)


def _email(tag: str) -> str:
    """A distinctive token value, registered for the session's log scan."""
    needle = f"{secrets.token_hex(3)}@example.com"
    USED_NEEDLES.add(needle)
    return f"{tag}.{needle}"


# --- what the clients saw ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed client call: no value in it, only what went wrong and when."""

    worker: int
    call: str
    error: str  # exception class, or "wrong value"
    status: str  # gRPC status of the error class
    reason: str
    step_at_start: str  # the rotation step running when the call began ...
    step_at_end: str  # ... and when it failed

    @property
    def what(self) -> str:
        return f"{self.call}: {self.error} {self.status} ({self.reason})"


def _grouped(failures: list[Failure]) -> list[str]:
    """Failures alike counted once, with the rotation steps of the first and the last."""
    groups: dict[str, list[Failure]] = {}
    for f in failures:
        groups.setdefault(f.what, []).append(f)
    return [
        f"{len(fs)} x {what}, from rotation step {fs[0].step_at_start!r} to {fs[-1].step_at_end!r}"
        for what, fs in groups.items()
    ]


class Load:
    """Client threads doing create / get / tokenize / reveal over gRPC in a loop, recording
    every failure and everything written."""

    def __init__(
        self,
        address: str,
        records: list[tuple[str, str, dict[str, str]]],
        tokens: list[tuple[str, str, str]],
        tenants: list[str],
    ) -> None:
        self._address = address
        self._schema = load_schema()
        self._tenants = tenants
        self._lock = threading.Lock()
        #: (tenant, record id, canonical values): written before the run and by the clients
        self.records = records
        #: (tenant, token, value)
        self.tokens = tokens
        self.failures: list[Failure] = []
        #: (call, step it began in) of every successful call
        self.done: list[tuple[str, str]] = []
        self.step = "before"
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._loops = [0] * WORKERS
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"load-{i}", daemon=True)
            for i in range(WORKERS)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(STALL_SECONDS)
        assert not any(t.is_alive() for t in self._threads), "a client thread did not stop"

    def wait_loops(self, more: int = 1) -> None:
        """Until every client thread has completed ``more`` further loops (all four calls)."""
        with self._cond:
            marks = list(self._loops)
            ok = self._cond.wait_for(
                lambda: all(n >= m + more for n, m in zip(self._loops, marks, strict=True)),
                STALL_SECONDS,
            )
        assert ok, f"client threads stalled at loops {self._loops} (from {marks})"

    def _call(
        self, worker: int, call: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T | None:
        began = self.step
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            status = status_of(exc).name if isinstance(exc, VaultServiceError) else "-"
            reason = getattr(exc, "reason", "-")
            self._fail(Failure(worker, call, type(exc).__name__, status, reason, began, self.step))
            return None
        with self._lock:
            self.done.append((call, began))
        return result

    def _fail(self, failure: Failure) -> None:
        with self._lock:
            self.failures.append(failure)

    def _pick(self, items: list[T], rng: random.Random) -> T:
        with self._lock:
            return rng.choice(items)

    def _work(self, worker: int) -> None:
        rng = random.Random(worker)
        with VaultClient(
            self._address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=30
        ) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                # now and then a tenant that did not exist: its keys are made (wrapped by
                # the field keys) while the field keys are being rotated
                tenant = (
                    f"new-{worker}-{n}-{uuid.uuid4().hex[:6]}"
                    if n % 8 == 0
                    else rng.choice(self._tenants)
                )
                fields = sample_record(100_000 + worker * 10_000 + n)
                created = self._call(worker, "create", client.create_record, tenant, fields)
                if created is not None:
                    with self._lock:
                        self.records.append(
                            (tenant, created.record_id, self._schema.validate(fields))
                        )

                rt, rid, expected = self._pick(self.records, rng)
                view = self._call(worker, "get", client.get_record, rt, rid)
                if view is not None and view.values() != expected:
                    self._fail(Failure(worker, "get", "wrong value", "-", "-", self.step, ""))

                value = _email(f"w{worker}n{n}")
                kind = "deterministic" if n % 3 == 0 else "random"
                item = TokenItem(value, "email", kind=kind)
                made = self._call(worker, "tokenize", client.tokenize, tenant, [item])
                if made is not None:
                    with self._lock:
                        self.tokens.append((tenant, made[0], value))

                tt, token, expected_value = self._pick(self.tokens, rng)
                shown = self._call(worker, "reveal", client.reveal, tt, [token])
                if shown is not None and (shown[0].error or shown[0].value != expected_value):
                    self._fail(
                        Failure(worker, "reveal", "wrong value", "-", shown[0].error, self.step, "")
                    )
                with self._cond:
                    self._loops[worker] += 1
                    self._cond.notify_all()


# --- helpers shared by the tests ---------------------------------------------------------------


def _seed(
    svc: RecordsService, tenants: list[str], per_tenant: int
) -> tuple[list[tuple[str, str, dict[str, str]]], list[tuple[str, str, str]]]:
    """Records (in every class of sample_record) and pool tokens for each tenant."""
    tokens_svc = Services.over(svc.core).tokens
    records: list[tuple[str, str, dict[str, str]]] = []
    tokens: list[tuple[str, str, str]] = []
    for n, tenant in enumerate(tenants):
        recs = [sample_record(1000 * n + i) for i in range(per_tenant)]
        stored = svc.create(ADMIN, tenant, [RecordInput(r) for r in recs], deadline=_dl())
        records += [
            (tenant, s.record_id, svc.core.schema.validate(r))
            for r, s in zip(recs, stored, strict=True)
        ]
        values = [_email(f"seed{n}t{i}") for i in range(3)]
        kinds = [TokenKind.RANDOM, TokenKind.RANDOM, TokenKind.DETERMINISTIC]
        made = tokens_svc.tokenize(
            ADMIN,
            tenant,
            [TokenizeItem(v, "email", kind=k) for v, k in zip(values, kinds, strict=True)],
            deadline=_dl(),
        )
        tokens += [(tenant, t, v) for t, v in zip(made, values, strict=True)]
    return records, tokens


def _unreadable(
    url: str,
    bao: OpenBaoDevServer,
    records: list[tuple[str, str, dict[str, str]]],
    tokens: list[tuple[str, str, str]],
) -> list[str]:
    """What does not read back to its value through a new process (empty key caches)."""
    db = Database(url)
    try:
        fresh = make_service(db, bao)
        bad: list[str] = []
        for tenant, rid, expected in records:
            try:
                view = fresh.get(ADMIN, tenant, rid, deadline=_dl())
            except VaultServiceError as exc:
                bad.append(f"record {tenant}/{rid}: {type(exc).__name__}")
                continue
            if {n: f.value for n, f in view.fields.items()} != expected:
                bad.append(f"record {tenant}/{rid}: wrong value")
        tokens_svc = Services.over(fresh.core).tokens
        by_tenant: dict[str, list[tuple[str, str]]] = {}
        for tenant, token, value in tokens:
            by_tenant.setdefault(tenant, []).append((token, value))
        for tenant, pairs in by_tenant.items():
            try:
                shown = tokens_svc.reveal(ADMIN, tenant, [t for t, _ in pairs], deadline=_dl())
            except VaultServiceError as exc:
                bad.append(f"tokens of {tenant}: {type(exc).__name__}")
                continue
            bad += [
                f"token {tenant}/{t}: {r.error or 'wrong value'}"
                for (t, v), r in zip(pairs, shown, strict=True)
                if r.error is not None or r.value != v
            ]
        return bad
    finally:
        db.dispose()


def _status(url: str, admin: FieldKeyAdmin) -> tuple[KeyStatus, dict[str, FieldKeyInfo]]:
    infos = {c: admin.info(c) for c in CLASSES}
    db = Database(url)
    try:
        return key_status(db, infos), infos
    finally:
        db.dispose()


def _left_behind(url: str, status: KeyStatus, infos: dict[str, FieldKeyInfo]) -> list[str]:
    """Keys under anything but the newest versions: each wrapped key below its field key's
    newest version (named, so a failure says whose), and tenant-key versions other than the
    newest (a row left behind keeps the data keys of an old backup unwrappable, even with no
    live data key under it)."""
    db = Database(url)
    try:
        with db.begin(write=False) as conn:
            rows = keys_repo.wrapped_keys(conn)
    finally:
        db.dispose()
    out = [
        f"{r.kind} key {r.tenant or '-'}/{r.field_class} v{r.version}: under field-key v{v}"
        f" of {infos[r.field_class].latest_version}"
        for r in rows
        if (v := wrapped_version(r.wrapped)) is None or v < infos[r.field_class].latest_version
    ]
    out += [
        f"tenant key {t.tenant}/{t.field_class}: data keys by version {dict(t.data_keys_by_version)}"
        for t in status.tenants
        if list(t.data_keys_by_version) != [t.current_version]
    ]
    return out


def _assert_none(problems: dict[str, list[str]]) -> None:
    """Fail with every kind of problem found, each item on its line."""
    found = {what: items for what, items in problems.items() if items}
    assert not found, "\n".join(
        f"{what}:\n" + "\n".join(f"    {i}" for i in items) for what, items in found.items()
    )


# --- online rotation under load ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("database", "caches"),
    [
        ("sqlite", "default"),
        pytest.param("postgres", "default", marks=pytest.mark.postgres),
        ("sqlite", "turning-over"),
    ],
)
def test_rotation_under_load_fails_no_call_and_loses_nothing(
    bao: OpenBaoDevServer, request: pytest.FixtureRequest, database: str, caches: str
) -> None:
    private_url = str(request.getfixturevalue(f"private_{database}_url"))
    db = Database(private_url)
    tenants = [f"t{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    records, tokens = _seed(make_service(db, bao), tenants, per_tenant=12)
    seeded_records, seeded_tokens = len(records), len(tokens)

    # the server is a process of its own: its key caches start empty
    running = start_server(
        Services.over(_server_service(db, bao, caches).core),
        "127.0.0.1:0",
        authenticator=authenticator(),
        health_interval=0.5,
    )
    load = Load(running.address, records, tokens, tenants)
    # the operator's process: its own connections and key caches
    op_db = Database(private_url)
    op_wrapper = make_wrapper(bao)
    op_core = _service(op_db, KeyManager(op_wrapper)).core
    refused: list[str] = []

    def step(name: str, fn: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
        load.step = name
        try:
            fn(*args, **kwargs)
        except AssertionError:
            raise  # the clients stalled (from midway): no point going on
        except Exception as exc:
            refused.append(f"{name}: {type(exc).__name__}: {exc}")

    def midway(done: int, total: int = 0) -> None:
        # the first batch of each unit is written, the rest still under the old version:
        # every client thread does a whole loop in that state
        if done <= BATCH:
            load.wait_loops()

    admin = FieldKeyAdmin(bao.url, bao.root_token, key_prefix=KEY_PREFIX)
    try:
        load.start()
        load.wait_loops(2)
        with op_db.begin(write=False) as conn:
            pairs = keys_repo.tenant_classes(conn)
        for tenant, c in pairs:
            step(
                f"rotate_tenant {tenant}/{c}",
                rotate_tenant,
                op_core,
                tenant,
                c,
                batch=BATCH,
                progress=midway,
            )
        for c in CLASSES:
            step(
                f"rotate_field {c}",
                rotate_field,
                op_db,
                admin,
                c,
                batch=BATCH,
                progress=midway,
            )
        for c in CLASSES:
            step(f"retire {c}", retire, op_db, admin, c)
        load.wait_loops()
        for c in CLASSES:
            step(f"trim {c}", trim, op_db, admin, c)
        load.step = "after"
        load.wait_loops(2)
    finally:
        load.stop()
        running.stop(grace=0)
        op_wrapper.close()
        op_db.dispose()
        db.dispose()

    try:
        # the load really ran while keys were being rotated
        during = {call for call, began in load.done if began not in ("before", "after")}
        assert during == {"create", "get", "tokenize", "reveal"}
        assert len(load.records) > seeded_records
        assert len(load.tokens) > seeded_tokens

        status, infos = _status(private_url, admin)
        by_pair = {(t.tenant, t.field_class): t.current_version for t in status.tenants}
        problems = {
            "failed client calls": _grouped(load.failures),
            "rotation steps that failed": refused,
            "unreadable by a new process": _unreadable(private_url, bao, load.records, load.tokens),
            "keys left under an old version": _left_behind(private_url, status, infos),
            "(tenant, class) not at tenant-key v2": [
                f"{t}/{c}: v{by_pair[(t, c)]}" for t, c in pairs if by_pair[(t, c)] != 2
            ],
            "field keys not at v2 alone": [
                f"{c}: latest v{i.latest_version}, min_decryption v{i.min_decryption_version},"
                f" held {i.versions}"
                for c, i in infos.items()
                if (i.latest_version, i.min_decryption_version, i.versions) != (2, 2, (2,))
            ],
        }
        _assert_none(problems)
    finally:
        admin.close()


# --- rotation killed part-way ----------------------------------------------------------------

#: stderr progress lines of the two commands: the unit (tenant/class, or class) and the count
PROGRESS = {
    "rotate-tenant": re.compile(r"^  rotate-tenant (\S+/\S+): \d+/\d+ keys"),
    "rotate-field": re.compile(r"^  rotate-field (\S+): \d+/\d+ keys"),
}
#: stdout result lines: the unit, what was done, the version
RESULT = {
    "rotate-tenant": re.compile(r"^(\S+/\S+): (rotated to|resumed at) v(\d+);"),
    "rotate-field": re.compile(r"^(\S+): (rotated to|resumed at) v(\d+);"),
}


def _versions(command: str, status: KeyStatus) -> dict[str, int]:
    """The version each unit of the command is at: tenant-key version per tenant/class, or
    field-key version per class."""
    if command == "rotate-tenant":
        return {f"{t.tenant}/{t.field_class}": t.current_version for t in status.tenants}
    return {f.field_class: f.latest_version for f in status.field_keys}


def _key_counts(command: str, status: KeyStatus) -> dict[str, int]:
    """How many keys each unit holds: data keys per tenant/class, wrapped keys per class."""
    if command == "rotate-tenant":
        return {
            f"{t.tenant}/{t.field_class}": sum(t.data_keys_by_version.values())
            for t in status.tenants
        }
    return {f.field_class: sum(f.wrapped_by_version.values()) for f in status.field_keys}


def _midway(command: str, status: KeyStatus, before: dict[str, int]) -> list[str]:
    """Units a new version was started for while keys are still under an older one."""
    if command == "rotate-tenant":
        return [
            f"{t.tenant}/{t.field_class}"
            for t in status.tenants
            if t.current_version > before[f"{t.tenant}/{t.field_class}"]
            and t.oldest_in_use is not None
            and t.oldest_in_use < t.current_version
        ]
    return [
        f.field_class
        for f in status.field_keys
        if f.latest_version > before[f.field_class] and f.below_latest
    ]


@pytest.mark.parametrize(
    ("command", "rate"),
    # slow enough that the kill lands in the middle of the second unit
    [("rotate-tenant", "100"), ("rotate-field", "20")],
)
def test_rotation_killed_partway_resumes_and_moves_every_version_once(
    bao: OpenBaoDevServer, tmp_path: Path, command: str, rate: str
) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    upgrade(url)
    db = Database(url)
    # 4 tenants x 5 classes: 20 tenant keys and 20 index keys, 200 records' data keys + pools
    tenants = [f"c{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
    records, tokens = _seed(make_service(db, bao), tenants, per_tenant=10)
    db.dispose()
    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        f'database_url = "{url}"\n[openbao]\nurl = "{bao.url}"\nkey_prefix = "{KEY_PREFIX}"\n'
    )
    env = dict(os.environ, BAO_TOKEN=bao.root_token, CVAULT_OPENBAO_TOKEN=bao.root_token)
    argv = [
        sys.executable,
        "-m",
        "vault.cli",
        "keys",
        command,
        "--all",
        "--batch",
        "1",
        "--max-per-second",
        rate,
        "--config",
        str(cfg),
    ]
    with FieldKeyAdmin(bao.url, bao.root_token, key_prefix=KEY_PREFIX) as admin:
        status, _ = _status(url, admin)
        before = _versions(command, status)
        counts = _key_counts(command, status)

        # killed once the first unit is done and the second has begun
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        assert proc.stderr is not None
        seen: list[str] = []
        for line in proc.stderr:
            m = PROGRESS[command].match(line.rstrip("\n"))
            if m and m.group(1) not in seen:
                seen.append(m.group(1))
                if len(seen) == 2:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, f"not killed mid-way: {seen} {err[-2000:]}"
        status, _ = _status(url, admin)
        assert _midway(command, status, before) == [seen[1]]

        again = subprocess.run(
            argv, capture_output=True, text=True, timeout=120, env=env, check=False
        )
        assert again.returncode == 0, again.stderr[-2000:]
        results = {
            m.group(1): (m.group(2), int(m.group(3)))
            for line in again.stdout.splitlines()
            if (m := RESULT[command].match(line))
        }
        status, infos = _status(url, admin)
        after = _versions(command, status)
        counts_after = _key_counts(command, status)

    problems = {
        "unreadable by a new process": _unreadable(url, bao, records, tokens),
        "keys left under an old version": _left_behind(url, status, infos),
        "keys lost or gained": [
            f"{u}: {n} -> {counts_after.get(u, 0)}"
            for u, n in counts.items()
            if counts_after.get(u, 0) != n
        ],
        # the interrupted unit is finished, not rotated once more
        "interrupted unit not resumed": [f"{seen[1]}: {results.get(seen[1])}"]
        if results.get(seen[1]) != ("resumed at", before[seen[1]] + 1)
        else [],
        # the units done before the kill, and those not begun, end one version up as well
        "versions not moved by exactly one": [
            f"{u}: v{before[u]} -> v{after.get(u)} ({results.get(u)})"
            for u in before
            if after.get(u) != before[u] + 1
        ],
    }
    _assert_none(problems)


# --- the races above, one interleaving each, made certain -----------------------------------


class _PausingKeys(KeyManager):
    """Once: stops right after the key server wrapped new keys of ``field_class``, as a
    request making a new tenant's keys would be between that call and storing them."""

    def __init__(self, bao: OpenBaoDevServer, field_class: str) -> None:
        super().__init__(make_wrapper(bao))
        self._field_class = field_class
        self.paused = threading.Event()
        self.go = threading.Event()

    def new_keys(
        self, field_class: str, associated_data: Sequence[bytes], *, deadline: Deadline
    ) -> list[NewKey]:
        made = super().new_keys(field_class, associated_data, deadline=deadline)
        if field_class == self._field_class and not self.paused.is_set():
            self.paused.set()
            self.go.wait(STALL_SECONDS)
        return made


class _PausingKeyring(Keyring):
    """Once armed: stops before looking up tenant keys by id, as a read that has loaded its
    data-key rows would be."""

    def __init__(self, db: Database, keys: KeyManager) -> None:
        super().__init__(db, keys)
        self.armed = False
        self.paused = threading.Event()
        self.go = threading.Event()

    def by_ids(
        self, tenant: str, ids: Iterable[str], *, deadline: Deadline
    ) -> dict[str, TenantKey]:
        if self.armed:
            self.armed = False
            self.paused.set()
            self.go.wait(STALL_SECONDS)
        return super().by_ids(tenant, ids, deadline=deadline)


def _in_thread(
    fn: Callable[[], T], finished: threading.Event
) -> tuple[threading.Thread, dict[str, T | Exception]]:
    """Run ``fn`` in a thread; its result or exception lands in ``out["result"]``, then
    ``finished`` is set (so a wait for a pause also ends if the call never pauses)."""
    out: dict[str, T | Exception] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except Exception as exc:
            out["result"] = exc
        finally:
            finished.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_new_tenant_keys_wrapped_just_before_rotate_field_are_not_lost(
    bao: OpenBaoDevServer, private_sqlite_url: str
) -> None:
    """A request makes a new tenant's keys (wrapped under field-key v1), then rotate-field,
    retire and trim run before it stores them: what it stores must stay readable (or retire
    and trim must refuse)."""
    db = Database(private_sqlite_url)
    keys = _PausingKeys(bao, "email")
    svc = _service(db, keys)
    fields = sample_record(1)
    thread, out = _in_thread(
        lambda: svc.create(ADMIN, "newco", [RecordInput(fields)], deadline=_dl()), keys.paused
    )
    refused: list[str] = []
    try:
        assert keys.paused.wait(STALL_SECONDS)
        with FieldKeyAdmin(bao.url, bao.root_token, key_prefix=KEY_PREFIX) as admin:
            rotate_field(db, admin, "email")
            for op in (retire, trim):
                try:
                    op(db, admin, "email")
                except KeyOpRefused as exc:
                    refused.append(str(exc))
    finally:
        keys.go.set()
        thread.join(STALL_SECONDS)
    stored = out["result"]
    assert isinstance(stored, list), repr(stored)
    unreadable = _unreadable(
        private_sqlite_url,
        bao,
        [("newco", stored[0].record_id, svc.core.schema.validate(fields))],
        [],
    )
    db.dispose()
    assert unreadable == [], f"after rotate-field, retire and trim (refused: {refused})"


def test_a_read_meeting_the_end_of_rotate_tenant_does_not_fail(
    bao: OpenBaoDevServer, private_sqlite_url: str
) -> None:
    """A read loads a record's data-key rows (under tenant-key v1); rotate-tenant then
    re-wraps them and destroys v1 before the read looks v1 up."""
    db = Database(private_sqlite_url)
    fields = sample_record(2)
    [stored] = make_service(db, bao).create(ADMIN, "acme", [RecordInput(fields)], deadline=_dl())
    keys = KeyManager(make_wrapper(bao))  # a process that has not read this record yet
    keyring = _PausingKeyring(db, keys)
    svc = _service(db, keys, keyring)
    keyring.armed = True
    thread, out = _in_thread(
        lambda: svc.get(ADMIN, "acme", stored.record_id, deadline=_dl()), keyring.paused
    )
    try:
        assert keyring.paused.wait(STALL_SECONDS)
        report = rotate_tenant(_service(db, KeyManager(make_wrapper(bao))).core, "acme", "email")
    finally:
        keyring.go.set()
        thread.join(STALL_SECONDS)
    db.dispose()
    assert report.destroyed == 1
    view = out["result"]
    assert isinstance(view, RecordView), repr(view)
    assert {n: f.value for n, f in view.fields.items()} == svc.core.schema.validate(fields)
