"""Incremental checkpoints and a shorter hold of the chain head's lock (issue 13, points 2
and 4), on SQLite and PostgreSQL.

- A checkpoint of rows this process appended itself (from a verified row, up to the head the
  database has) reads none of them back; rows another writer added are read back; what was
  verified is kept when the store write fails; a verified row that is gone later refuses the
  checkpoint.
- A tamper the checkpoint thread does not read is still named by ``verify``.
- The locking append on PostgreSQL is two statements, and a stale guess of the head is retried
  with the guess another appender of the process left before the lock is taken.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import text

from tests.support import make_wrapper
from tests.unit.audit.audit_tamper import event, tamper
from vault.audit import EDITED, TRUNCATED, AuditEvent, AuditLog, MemoryCheckpointStore
from vault.audit import _store as audit_store
from vault.deadline import Deadline
from vault.errors import KeyServerUnavailable
from vault.keys import KeyManager
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.storage import Database


@pytest.fixture
def chain() -> str:
    return f"i-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def keys(openbao: OpenBaoDevServer) -> KeyManager:
    """The suite's key server: the session databases' audit key is wrapped there."""
    return KeyManager(make_wrapper(openbao))


@pytest.fixture
def store() -> MemoryCheckpointStore:
    return MemoryCheckpointStore()


@pytest.fixture
def deadline() -> Deadline:
    return Deadline.after(60)


pytestmark = pytest.mark.openbao


@pytest.fixture
def rows_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows were streamed back from ``audit_events`` (verify and checkpoints)."""
    read = [0]
    original = audit_store.stream_rows

    def counting(conn: object, chain: str, *, after_seq: int = 0) -> Iterator[object]:
        for row in original(conn, chain, after_seq=after_seq):  # type: ignore[arg-type]
            read[0] += 1
            yield row

    monkeypatch.setattr(audit_store, "stream_rows", counting)
    return read


def new_log(db: Database, keys: KeyManager, chain: str, store: MemoryCheckpointStore) -> AuditLog:
    return AuditLog(db, keys, chain=chain, checkpoint=store, checkpoint_in_background=False)


def record(log: AuditLog, n: int, deadline: Deadline, start: int = 0) -> None:
    for i in range(n):
        log.record([event(start + i)], deadline=deadline)


def row_mac(db: Database, chain: str, seq: int) -> bytes:
    with db.engine.connect() as conn:
        return bytes(
            conn.execute(
                text("SELECT mac FROM audit_events WHERE chain = :c AND seq = :s"),
                {"c": chain, "s": seq},
            ).scalar_one()
        )


def roll_back_after_append(
    db: Database, log: AuditLog, events: list[AuditEvent], deadline: Deadline
) -> None:
    """An append in a transaction the caller then fails: everything rolls back."""

    class CallerFailed(Exception):
        pass

    try:
        with db.begin(write=True) as conn:
            log.append(conn, events, deadline=deadline)
            raise CallerFailed
    except CallerFailed:
        pass


def checkpointed(store: MemoryCheckpointStore, chain: str) -> list[int]:
    return sorted(int(n) for n in store.names(chain, deadline=Deadline.after(5)))


class FailingOnce(MemoryCheckpointStore):
    """A store whose first write fails as a key-server outage does."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def create(self, chain: str, name: str, data: Mapping[str, str], *, deadline: Deadline) -> bool:
        if not self.failed:
            self.failed = True
            raise KeyServerUnavailable("key server unavailable: secret/data/x")
        return super().create(chain, name, data, deadline=deadline)


# --- incremental checkpoints ----------------------------------------------------------------


def test_own_appends_are_checkpointed_without_reading_them_back(
    database: Database,
    keys: KeyManager,
    chain: str,
    store: MemoryCheckpointStore,
    deadline: Deadline,
    rows_read: list[int],
) -> None:
    log = new_log(database, keys, chain, store)
    for batch in range(4):
        record(log, 5, deadline, start=batch * 10)
        with database.begin() as conn:  # a batch call: several rows in one append
            log.append(conn, [event(i) for i in range(7)], deadline=deadline)
        report = log.checkpoint_now(deadline=deadline)
        assert (report.ok, report.checked, report.last_seq) == (True, 12, 12 * (batch + 1))
    assert rows_read[0] == 0  # the old checkpoint read 12 rows back each time
    assert checkpointed(store, chain) == [12, 24, 36, 48]
    assert store.get(deadline=deadline)["mac"] == row_mac(database, chain, 48).hex()  # type: ignore[index]
    report = log.verify(deadline=deadline)
    assert (report.ok, report.checkpoint_seq, report.checkpoints) == (True, 48, 4)


def test_a_tamper_the_checkpoint_does_not_read_is_still_named_by_verify(
    database: Database,
    keys: KeyManager,
    chain: str,
    store: MemoryCheckpointStore,
    deadline: Deadline,
    rows_read: list[int],
) -> None:
    log = new_log(database, keys, chain, store)
    record(log, 5, deadline)
    assert log.checkpoint_now(deadline=deadline).ok
    tamper(
        database,
        ("UPDATE audit_events SET purpose = 'x' WHERE chain = :c AND seq = 3", {"c": chain}),
    )
    record(log, 5, deadline, start=5)
    assert log.checkpoint_now(deadline=deadline).ok
    assert rows_read[0] == 0  # row 3 is before the previous checkpoint: never read again
    report = log.verify(deadline=deadline)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 3, EDITED)


def test_rows_of_another_writer_are_read_back(
    database: Database,
    keys: KeyManager,
    chain: str,
    store: MemoryCheckpointStore,
    deadline: Deadline,
    rows_read: list[int],
) -> None:
    """A chain shared with another process: the rows since the newest verified one are
    recomputed from the database, as before."""
    a, b = new_log(database, keys, chain, store), new_log(database, keys, chain, store)
    record(a, 3, deadline)
    record(b, 2, deadline, start=3)
    record(a, 1, deadline, start=5)
    report = a.checkpoint_now(deadline=deadline)
    assert (report.ok, report.last_seq, rows_read[0]) == (True, 6, 6)
    record(b, 2, deadline, start=6)
    report = a.checkpoint_now(deadline=deadline)
    assert (report.ok, report.last_seq, rows_read[0]) == (True, 8, 8)  # only the two new rows
    assert a.verify(deadline=deadline).ok


def test_what_was_verified_is_kept_when_the_store_write_fails(
    database: Database, keys: KeyManager, chain: str, deadline: Deadline, rows_read: list[int]
) -> None:
    writer = new_log(database, keys, chain, MemoryCheckpointStore())
    record(writer, 10, deadline)
    store = FailingOnce()
    checker = new_log(database, keys, chain, store)  # another process: reads the rows back
    with pytest.raises(KeyServerUnavailable):
        checker.checkpoint_now(deadline=deadline)
    assert rows_read[0] == 10
    report = checker.checkpoint_now(deadline=deadline)
    assert (report.ok, report.last_seq) == (True, 10)
    assert rows_read[0] == 10  # the retry read nothing twice (the old one read all 10 again)
    assert checkpointed(store, chain) == [10]


def test_a_verified_row_gone_later_refuses_the_checkpoint(
    database: Database, keys: KeyManager, chain: str, deadline: Deadline
) -> None:
    """Rows verified (here: their checkpoint write failed) and then deleted, with the head
    rewritten to match and new rows appended on top: the old checkpoint re-walked from its last
    checkpoint and certified the rewritten tail; now the rows this process verified pin it."""
    store = FailingOnce()
    store.failed = True  # the first write works
    log = new_log(database, keys, chain, store)
    record(log, 5, deadline)
    assert log.checkpoint_now(deadline=deadline).ok
    record(log, 5, deadline, start=5)
    store.failed = False
    with pytest.raises(KeyServerUnavailable):
        log.checkpoint_now(deadline=deadline)  # rows 6-10 verified, not checkpointed
    tamper(
        database,
        ("DELETE FROM audit_events WHERE chain = :c AND seq > 7", {"c": chain}),
        (
            "UPDATE audit_chain_heads SET seq = 7, mac = "
            "(SELECT mac FROM audit_events WHERE chain = :c AND seq = 7) WHERE chain = :c",
            {"c": chain},
        ),
    )
    record(log, 3, deadline, start=10)  # seqs 8-10 again, other rows
    report = log.checkpoint_now(deadline=deadline)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 10, TRUNCATED)
    assert checkpointed(store, chain) == [5]


def test_rolled_back_appends_and_another_writer_never_mislead_the_checkpoint(
    database: Database, keys: KeyManager, chain: str, store: MemoryCheckpointStore
) -> None:
    """Appends that roll back leave a path to a head never committed; another writer then takes
    the seqs they had. The checkpoint follows only what leads to the head the database has."""
    deadline = Deadline.after(60)
    a, b = new_log(database, keys, chain, store), new_log(database, keys, chain, store)
    record(a, 3, deadline)

    def rolled_back(log: AuditLog, n: int) -> None:
        roll_back_after_append(database, log, [event(i) for i in range(n)], deadline)

    rolled_back(a, 2)
    record(b, 2, deadline, start=3)  # seqs 4-5: what a's rolled-back rows had
    record(a, 1, deadline, start=5)
    assert a.checkpoint_now(deadline=deadline).ok
    rolled_back(a, 1)
    record(a, 2, deadline, start=6)
    assert a.checkpoint_now(deadline=deadline).ok
    assert checkpointed(store, chain) == [6, 8]
    assert store.get(deadline=deadline)["mac"] == row_mac(database, chain, 8).hex()  # type: ignore[index]
    report = a.verify(deadline=deadline)
    assert (report.ok, report.checkpoints) == (True, 2)


def test_threads_with_rollbacks_and_background_checkpoints_keep_one_valid_chain(
    database: Database, keys: KeyManager, chain: str, store: MemoryCheckpointStore
) -> None:
    deadline = Deadline.after(120)
    log = AuditLog(database, keys, chain=chain, checkpoint=store, checkpoint_every=7)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        rng = random.Random(t)
        try:
            for i in range(40):
                events = [event(t * 1000 + i)] * rng.choice((1, 1, 3))
                if rng.random() < 0.15:
                    roll_back_after_append(database, log, events, deadline)
                else:
                    log.record(events, deadline=deadline)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    log.close()
    assert errors == []
    final = log.checkpoint_now(deadline=deadline)
    assert final.ok
    report = log.verify(deadline=deadline)  # every checkpoint written agrees with the rows
    assert report.ok, report
    assert report.checkpoint_seq == report.last_seq
    assert report.checkpoints == len(checkpointed(store, chain)) >= 2


# --- the chain head's lock (PostgreSQL) -----------------------------------------------------


def _audit_statements(db: Database) -> tuple[list[str], Callable[[], None]]:
    seen: list[str] = []

    def before(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "audit_events" in statement or "audit_chain_heads" in statement:
            seen.append(statement.lstrip())

    sa_event.listen(db.engine, "before_cursor_execute", before)
    return seen, lambda: sa_event.remove(db.engine, "before_cursor_execute", before)


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Database]:
    db = Database(postgres_url)
    yield db
    db.dispose()


@pytest.mark.postgres
def test_the_locking_append_is_two_statements(
    pg: Database, keys: KeyManager, chain: str, deadline: Deadline
) -> None:
    """Lock the head, then rows and head in one statement (it was lock, insert, update)."""
    AuditLog(pg, keys, chain=chain).record([event(0)], deadline=deadline)
    fresh = AuditLog(pg, keys, chain=chain)  # no guess of the head: takes the lock
    seen, remove = _audit_statements(pg)
    try:
        fresh.record([event(1)], deadline=deadline)
    finally:
        remove()
    assert [s.split()[0] for s in seen] == ["SELECT", "WITH"]  # was SELECT, INSERT, UPDATE
    assert "FOR UPDATE" in seen[0]
    assert fresh.verify(deadline=deadline).ok


@pytest.mark.postgres
def test_a_stale_guess_is_retried_with_the_newer_one_before_locking(
    pg: Database,
    keys: KeyManager,
    chain: str,
    deadline: Deadline,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another appender of the process won the head: its guess is tried next, in one round
    trip, instead of taking the lock and writing in two more."""
    log, other = AuditLog(pg, keys, chain=chain), AuditLog(pg, keys, chain=chain)
    log.record([event(0)], deadline=deadline)
    other.record([event(1)], deadline=deadline)  # log's guess is stale now
    original = audit_store.advance_head

    def advance(conn, chain_, expected, new, rows):  # type: ignore[no-untyped-def]
        moved = original(conn, chain_, expected, new, rows)
        if not moved:  # as if a thread of this process had written the head meanwhile
            log._head_hint = other._head_hint
        return moved

    monkeypatch.setattr(audit_store, "advance_head", advance)
    seen, remove = _audit_statements(pg)
    try:
        log.record([event(2)], deadline=deadline)
    finally:
        remove()
    assert [s.split()[0] for s in seen] == ["WITH", "WITH"]
    assert not any("FOR UPDATE" in s for s in seen)
    report = log.verify(deadline=deadline)
    assert (report.ok, report.last_seq) == (True, 3)
