"""The audit log against real OpenBao (transit key ``cvault-audit``, KV v2) on SQLite and
PostgreSQL. Each test writes a chain of its own, so the session databases stay shared."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import text

from tests.support import make_wrapper
from tests.unit.audit.audit_tamper import event, tamper
from vault.audit import TRUNCATED, AuditLog, AuditUnavailable
from vault.deadline import Deadline
from vault.errors import Unavailable
from vault.keys import KeyManager, KvCheckpointStore, TokenAuth
from vault.keys.openbao_dev import OpenBaoDevServer, audit_request_paths
from vault.storage import Database

pytestmark = pytest.mark.openbao


@pytest.fixture
def chain() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def keys(openbao: OpenBaoDevServer) -> KeyManager:
    return KeyManager(make_wrapper(openbao))


@pytest.fixture
def kv(openbao: OpenBaoDevServer, chain: str) -> Iterator[KvCheckpointStore]:
    store = KvCheckpointStore(
        openbao.url, TokenAuth(openbao.root_token, renew=False), path=f"cvault/audit/{chain}"
    )
    yield store
    store.close()


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[Database]:
    db = Database(postgres_url)
    yield db
    db.dispose()


@pytest.fixture
def deadline() -> Deadline:
    return Deadline.after(60)


def chain_seqs(db: Database, chain: str) -> list[int]:
    with db.engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT seq FROM audit_events WHERE chain = :c ORDER BY seq"), {"c": chain}
            ).scalars()
        )


def test_audit_key_is_wrapped_by_the_transit_audit_key(
    database: Database, openbao: OpenBaoDevServer, keys: KeyManager, chain: str, deadline: Deadline
) -> None:
    AuditLog(database, keys, chain=chain).record([event(0)], deadline=deadline)
    with database.engine.connect() as conn:
        wrapped = conn.execute(text("SELECT wrapped FROM audit_keys")).scalars().all()
    assert len(wrapped) == 1
    assert wrapped[0].startswith("cvk2:vault:v")
    assert openbao.audit_log_path is not None
    start = len(audit_request_paths(openbao.audit_log_path))
    fresh = AuditLog(database, KeyManager(make_wrapper(openbao)), chain=chain)  # a new process
    assert fresh.verify(deadline=deadline).ok
    fresh.record([event(1)], deadline=deadline)
    assert fresh.verify(deadline=deadline).checked == 2
    assert audit_request_paths(openbao.audit_log_path)[start:] == ["transit/decrypt/cvault-audit"]


def test_concurrent_appends_make_one_valid_chain(
    database: Database,
    keys: KeyManager,
    chain: str,
    deadline: Deadline,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("vault.audit._store.STREAM_BATCH", 16)  # verify streams many batches
    logs = [AuditLog(database, keys, chain=chain) for _ in range(8)]
    errors: list[BaseException] = []

    def work(log: AuditLog, t: int) -> None:
        try:
            for i in range(50):
                log.record([event(t * 1000 + i)], deadline=deadline)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(lg, t)) for t, lg in enumerate(logs)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert chain_seqs(database, chain) == list(range(1, 401))
    report = logs[0].verify(deadline=deadline)
    assert report.ok
    assert report.checked == 400


def test_checkpoint_in_kv_finds_a_truncated_tail(
    database: Database, keys: KeyManager, chain: str, kv: KvCheckpointStore, deadline: Deadline
) -> None:
    log = AuditLog(database, keys, chain=chain, checkpoint=kv, checkpoint_in_background=False)
    for i in range(10):
        log.record([event(i)], deadline=deadline)
    assert log.checkpoint_now(deadline=deadline).ok
    stored = kv.read(chain, "10", deadline=deadline)
    assert stored is not None
    assert (stored["chain"], stored["seq"], stored["prev"]) == (chain, "10", "0")
    tamper(
        database,
        ("DELETE FROM audit_events WHERE chain = :c AND seq > 7", {"c": chain}),
        (
            "UPDATE audit_chain_heads SET seq = 7, mac = "
            "(SELECT mac FROM audit_events WHERE chain = :c AND seq = 7) WHERE chain = :c",
            {"c": chain},
        ),
    )
    report = log.verify(deadline=deadline)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 8, TRUNCATED)
    assert report.checkpoint_seq == 10


def test_key_server_unreachable_fails_closed(
    database: Database, openbao: OpenBaoDevServer, chain: str
) -> None:
    dead = KeyManager(make_wrapper(openbao, url="http://127.0.0.1:9"))
    log = AuditLog(database, dead, chain=chain)
    with pytest.raises(AuditUnavailable) as info:
        log.record([event(0)], deadline=Deadline.after(3))
    assert isinstance(info.value, Unavailable)
    assert chain_seqs(database, chain) == []


def test_refused_insert_fails_closed_and_rolls_back(
    database: Database, keys: KeyManager, chain: str, deadline: Deadline
) -> None:
    log = AuditLog(database, keys, chain=chain)
    log.record([event(0)], deadline=deadline)
    name = "audit_ro_" + chain.replace("-", "_")
    if database.dialect == "postgresql":
        create = [
            f"CREATE FUNCTION {name}() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION 'read-only'; END; $$ LANGUAGE plpgsql",
            f"CREATE TRIGGER {name} BEFORE INSERT ON audit_events FOR EACH ROW "
            f"WHEN (NEW.chain = '{chain}') EXECUTE FUNCTION {name}()",
        ]
        drop = [f"DROP TRIGGER {name} ON audit_events", f"DROP FUNCTION {name}()"]
    else:
        create = [
            f"CREATE TRIGGER {name} BEFORE INSERT ON audit_events "
            f"WHEN NEW.chain = '{chain}' BEGIN SELECT RAISE(ABORT, 'read-only'); END"
        ]
        drop = [f"DROP TRIGGER {name}"]
    with database.engine.begin() as conn:
        for sql in create:
            conn.execute(text(sql))
    erased_id = str(uuid.uuid4())

    def service_call() -> None:
        with database.begin(write=True) as conn:
            conn.execute(
                text(
                    "INSERT INTO erasures (record_id, tenant, erased_at, data_key_ids) "
                    "VALUES (:r, 'acme', CURRENT_TIMESTAMP, '')"
                ),
                {"r": erased_id},
            )
            log.append(conn, [event(1)], deadline=deadline)

    try:
        log.prepare(deadline=deadline)
        with pytest.raises(AuditUnavailable):
            service_call()
    finally:
        with database.engine.begin() as conn:
            for sql in drop:
                conn.execute(text(sql))
    with database.engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM erasures WHERE record_id = :r"), {"r": erased_id}
            ).scalar_one()
            == 0
        )
    assert chain_seqs(database, chain) == [1]
    log.record([event(2)], deadline=deadline)
    assert log.verify(deadline=deadline).ok


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_events SET principal = 'x' WHERE chain = :c",
        "DELETE FROM audit_events WHERE chain = :c",
    ],
)
def test_audit_events_are_append_only(
    database: Database, keys: KeyManager, chain: str, deadline: Deadline, sql: str
) -> None:
    AuditLog(database, keys, chain=chain).record([event(0)], deadline=deadline)
    with pytest.raises(Exception, match="append-only"), database.engine.begin() as conn:
        conn.execute(text(sql), {"c": chain})
    assert chain_seqs(database, chain) == [1]


def test_query_across_databases(
    database: Database, keys: KeyManager, chain: str, deadline: Deadline
) -> None:
    log = AuditLog(database, keys, chain=chain)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    t0 = datetime.now().astimezone().replace(microsecond=123456)
    log.record(
        [
            event(1, tenant=tenant, principal="alice", time=t0),
            event(1, tenant=tenant, principal="bob", time=t0 + timedelta(seconds=1)),
            event(2, tenant=tenant, principal="carol"),
        ],
        deadline=deadline,
    )
    rid = event(1).record_id
    assert rid is not None
    found = log.query(tenant, rid, deadline=deadline)
    assert [(e.principal, e.time) for e in found] == [
        ("bob", t0 + timedelta(seconds=1)),
        ("alice", t0),
    ]
    assert log.verify(deadline=deadline).ok


def _audit_statements(database: Database) -> tuple[list[str], Callable[[], None]]:
    """Collect the SQL statements that touch the audit tables; returns (list, remove)."""
    seen: list[str] = []

    def before(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "audit_events" in statement or "audit_chain_heads" in statement:
            seen.append(statement)

    sa_event.listen(database.engine, "before_cursor_execute", before)
    return seen, lambda: sa_event.remove(database.engine, "before_cursor_execute", before)


@pytest.mark.postgres
def test_postgres_append_is_one_round_trip_when_the_head_is_known(
    postgres_database: Database, keys: KeyManager, chain: str, deadline: Deadline
) -> None:
    log = AuditLog(postgres_database, keys, chain=chain)
    log.record([event(0)], deadline=deadline)  # learns the head (locking path)
    seen, remove = _audit_statements(postgres_database)
    try:
        log.record([event(1)], deadline=deadline)
    finally:
        remove()
    assert len(seen) == 1
    assert seen[0].lstrip().startswith("WITH moved AS")
    assert log.verify(deadline=deadline).ok


def test_stale_head_guesses_never_fork_the_chain(
    database: Database, keys: KeyManager, chain: str, deadline: Deadline
) -> None:
    """Two replicas taking turns (each one's guess is always stale), batches of several rows,
    and a transaction rolled back after its append (the guess names a head never committed)."""
    a, b = AuditLog(database, keys, chain=chain), AuditLog(database, keys, chain=chain)
    n = 0
    for _ in range(3):
        for log in (a, b):
            log.record([event(n), event(n + 1), event(n + 2)], deadline=deadline)
            n += 3

    def failing_call() -> None:
        with database.begin(write=True) as conn:
            a.append(conn, [event(n)], deadline=deadline)
            raise RuntimeError("the caller fails after the append: everything rolls back")

    with pytest.raises(RuntimeError):
        failing_call()
    a.record([event(n + 1)], deadline=deadline)
    b.record([event(n + 2)], deadline=deadline)
    assert chain_seqs(database, chain) == list(range(1, n + 3))
    report = a.verify(deadline=deadline)
    assert report.ok
    assert report.checked == n + 2
