"""AuditLog around the chain: fail closed, keys, sinks, pseudonyms, query, checkpoint triggers."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.unit.audit.audit_tamper import event
from vault.audit import (
    AuditEntry,
    AuditEvent,
    AuditLog,
    AuditUnavailable,
    JsonLinesSink,
    MemoryCheckpointStore,
    StdoutSink,
)
from vault.deadline import Deadline
from vault.errors import (
    ConfigError,
    KeyServerPermissionDenied,
    KeyServerUnavailable,
    Unavailable,
)
from vault.keys import KeyManager
from vault.storage import Database
from vault.testing import InMemoryKeyWrapper

SINK_KEYS = {
    "time",
    "chain",
    "seq",
    "principal",
    "role",
    "action",
    "purpose",
    "tenant",
    "record_ref",
    "field_classes",
    "outcome",
    "reason",
    "request_id",
    "on_behalf_of",
    "peer",
}


def count(db: Database, table: str = "audit_events") -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


# --- fail closed -----------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [KeyServerUnavailable, KeyServerPermissionDenied])
def test_no_audit_key_fails_closed(
    db: Database, wrapper: InMemoryKeyWrapper, deadline: Deadline, failure: type[Exception]
) -> None:
    AuditLog(db, KeyManager(wrapper)).record([event(0)], deadline=deadline)
    wrapper.fail_with = failure
    fresh = AuditLog(db, KeyManager(wrapper))  # a new process: nothing cached
    with pytest.raises(AuditUnavailable) as info:
        fresh.record([event(1)], deadline=deadline)
    assert isinstance(info.value, Unavailable)
    assert info.value.reason == "audit_unavailable"
    with pytest.raises(AuditUnavailable), db.begin(write=True) as conn:
        fresh.append(conn, [event(2)], deadline=deadline)
    assert count(db) == 1


def test_first_key_cannot_be_made_fails_closed(
    db: Database, wrapper: InMemoryKeyWrapper, deadline: Deadline
) -> None:
    wrapper.fail_with = KeyServerUnavailable
    with pytest.raises(AuditUnavailable):
        AuditLog(db, KeyManager(wrapper)).record([event(0)], deadline=deadline)
    assert count(db) == count(db, "audit_keys") == 0


def test_refused_insert_fails_closed_and_rolls_back_the_caller(
    log: AuditLog, db: Database, deadline: Deadline
) -> None:
    log.record([event(0)], deadline=deadline)
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TRIGGER audit_read_only BEFORE INSERT ON audit_events "
                "BEGIN SELECT RAISE(ABORT, 'read-only'); END"
            )
        )
    log.prepare(deadline=deadline)

    def service_call() -> None:
        with db.begin(write=True) as conn:
            # the caller's own write, then the audit rows, in one transaction
            conn.execute(
                text(
                    "INSERT INTO erasures (record_id, tenant, erased_at, data_key_ids) "
                    "VALUES ('r-1', 'acme', '2026-01-01 00:00:00', '')"
                )
            )
            log.append(conn, [event(1)], deadline=deadline)

    with pytest.raises(AuditUnavailable):
        service_call()
    assert count(db) == 1
    assert count(db, "erasures") == 0
    with db.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER audit_read_only"))
    log.record([event(2)], deadline=deadline)
    assert log.verify(deadline=deadline).ok


def test_append_needs_a_write_transaction(log: AuditLog, db: Database, deadline: Deadline) -> None:
    with pytest.raises(ValueError, match="write transaction"), db.begin(write=False) as conn:
        log.append(conn, [event(0)], deadline=deadline)


def test_steady_state_makes_no_key_server_calls(
    log: AuditLog, db: Database, wrapper: InMemoryKeyWrapper, deadline: Deadline
) -> None:
    log.record([event(0)], deadline=deadline)
    calls = len(wrapper.calls)
    wrapper.fail_with = KeyServerUnavailable  # would fail any call that is made
    for i in range(1, 50):
        log.prepare(deadline=deadline)
        with db.begin(write=True) as conn:
            entries = log.append(conn, [event(i)], deadline=deadline)
        log.after_commit(entries)
    assert len(wrapper.calls) == calls
    assert count(db) == 50


def test_a_new_process_unwraps_the_key_once(
    log: AuditLog, db: Database, wrapper: InMemoryKeyWrapper, deadline: Deadline
) -> None:
    log.record([event(0)], deadline=deadline)
    fresh = AuditLog(db, KeyManager(wrapper))
    before = list(wrapper.calls)
    for i in range(1, 10):
        fresh.record([event(i)], deadline=deadline)
    assert wrapper.calls[len(before) :] == [("unwrap", "audit", 1)]
    assert fresh.verify(deadline=deadline).ok


def test_key_made_inside_a_rolled_back_transaction_is_not_reused(
    db: Database, keys: KeyManager, deadline: Deadline
) -> None:
    log = AuditLog(db, keys)  # prepare() never called: the key is made in the caller's txn

    class Boom(Exception):
        pass

    def failing_call() -> None:
        with db.begin(write=True) as conn:
            log.append(conn, [event(0)], deadline=deadline)
            raise Boom

    with pytest.raises(Boom):
        failing_call()
    assert count(db, "audit_keys") == 0
    with db.begin(write=True) as conn:
        log.append(conn, [event(1)], deadline=deadline)
        log.append(conn, [event(2)], deadline=deadline)
    log.record([event(3)], deadline=deadline)
    assert count(db, "audit_keys") == 1
    report = log.verify(deadline=deadline)
    assert report.ok
    assert report.checked == 3


def test_concurrent_first_use_makes_one_key(
    db: Database, wrapper: InMemoryKeyWrapper, deadline: Deadline
) -> None:
    logs = [AuditLog(db, KeyManager(wrapper)) for _ in range(6)]  # as if 6 new processes
    barrier = threading.Barrier(len(logs))
    errors: list[BaseException] = []

    def first_use(log: AuditLog, i: int) -> None:
        try:
            barrier.wait()
            log.record([event(i)], deadline=deadline)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(lg, i)) for i, lg in enumerate(logs)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert count(db, "audit_keys") == 1
    assert count(db) == len(logs)
    assert logs[0].verify(deadline=deadline).ok


# --- events ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"principal": "p" * 257}, "principal"),
        ({"purpose": "x\nsecond line"}, "purpose"),
        ({"request_id": "a\x00b"}, "request_id"),
        ({"outcome": "maybe"}, "outcome"),
        ({"action": ""}, "action"),
        ({"record_id": ""}, "record_id"),
        ({"field_classes": ("email,phone",)}, "field_classes"),
        ({"field_classes": ["email"]}, "field_classes"),
        ({"time": datetime(2026, 1, 1)}, "time"),  # naive on purpose
    ],
)
def test_bad_events_are_refused_naming_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field) as info:
        event(0, **overrides)
    for value in overrides.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in str(info.value)


def test_record_id_is_not_in_the_event_repr() -> None:
    assert event(7).record_id is not None
    assert str(event(7).record_id) not in repr(event(7))


def test_raw_record_ids_are_never_stored(
    log: AuditLog, db: Database, deadline: Deadline, tmp_path: Path
) -> None:
    ids = [event(i).record_id for i in range(20)]
    for i in range(20):
        log.record([event(i)], deadline=deadline)
    db.dispose()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("audit.db"))
    assert raw
    for record_id in ids:
        assert record_id is not None
        assert record_id.encode() not in raw


# --- pseudonyms and query --------------------------------------------------------------------


def test_pseudonym_is_stable_and_keyed(
    log: AuditLog,
    db: Database,
    wrapper: InMemoryKeyWrapper,
    deadline: Deadline,
    migrated_template: Path,
    tmp_path: Path,
) -> None:
    rid = "0193a1b2-0000-7000-8000-000000000001"
    ref = log.pseudonym("acme", rid, deadline=deadline)
    assert ref == log.pseudonym("acme", rid, deadline=deadline)
    assert ref == AuditLog(db, KeyManager(wrapper)).pseudonym("acme", rid, deadline=deadline)
    assert ref != log.pseudonym("globex", rid, deadline=deadline)
    assert ref != log.pseudonym("acme", rid[:-1] + "2", deadline=deadline)
    assert len(ref) == 32
    assert set(ref) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    # another deployment (another audit key) cannot link the same record
    other_path = tmp_path / "other.db"
    other_path.write_bytes(migrated_template.read_bytes())
    other_db = Database(f"sqlite:///{other_path}")
    try:
        other = AuditLog(other_db, KeyManager(InMemoryKeyWrapper()))
        assert other.pseudonym("acme", rid, deadline=deadline) != ref
    finally:
        other_db.dispose()


def test_query_answers_who_saw_this_record(log: AuditLog, deadline: Deadline) -> None:
    rid = event(1).record_id
    assert rid is not None
    t0 = datetime.now().astimezone()
    log.record(
        [
            event(1, principal="alice", purpose="support", time=t0),
            event(2, principal="bob"),
            event(1, tenant="globex", principal="mallory"),
            event(1, principal="carol", action="record.reveal", time=t0 + timedelta(seconds=1)),
        ],
        deadline=deadline,
    )
    log.record(
        [
            event(
                1,
                principal="dave",
                outcome="denied",
                reason="no_consent",
                time=t0 + timedelta(seconds=2),
            )
        ],
        deadline=deadline,
    )
    found = log.query("acme", rid, deadline=deadline)
    assert [(e.principal, e.action, e.outcome, e.reason) for e in found] == [
        ("dave", "record.read", "denied", "no_consent"),
        ("carol", "record.reveal", "allowed", ""),
        ("alice", "record.read", "allowed", ""),
    ]
    assert found[-1].purpose == "support"
    assert found[-1].field_classes == ("email", "phone")
    assert found[-1].time == t0
    assert len(log.query("acme", rid, deadline=deadline, limit=2)) == 2
    assert log.query("acme", "0193a1b2-ffff-7000-8000-000000000000", deadline=deadline) == []
    with pytest.raises(ValueError, match="limit"):
        log.query("acme", rid, deadline=deadline, limit=0)


def test_query_on_an_empty_log(log: AuditLog, deadline: Deadline) -> None:
    assert log.query("acme", "r", deadline=deadline) == []


# --- sinks -----------------------------------------------------------------------------------


def test_json_lines_sink_writes_every_event_without_values(
    db: Database, keys: KeyManager, deadline: Deadline, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    stream = io.StringIO()
    file_sink = JsonLinesSink(path)
    log = AuditLog(db, keys, sinks=[file_sink, JsonLinesSink(stream)])
    events = [event(i) for i in range(5)] + [event(9, record_id=None, action="admin.keys")]
    entries = log.record(events, deadline=deadline)
    file_sink.close()
    lines = path.read_text().splitlines()
    assert lines == stream.getvalue().splitlines()
    assert len(lines) == 6
    for line, entry, ev in zip(lines, entries, events, strict=True):
        obj = json.loads(line)
        assert set(obj) == SINK_KEYS
        assert obj["seq"] == entry.seq
        assert obj["record_ref"] == entry.record_ref
        assert obj["field_classes"] == list(ev.field_classes)
        assert datetime.fromisoformat(obj["time"]) == ev.time
        if ev.record_id is not None:
            assert ev.record_id not in line
    assert json.loads(lines[-1])["record_ref"] is None


def test_stdout_sink(
    db: Database, keys: KeyManager, deadline: Deadline, capsys: pytest.CaptureFixture[str]
) -> None:
    AuditLog(db, keys, sinks=[StdoutSink()]).record([event(3)], deadline=deadline)
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["request_id"] == "req-3"
    assert str(event(3).record_id) not in line


def test_failing_sink_never_fails_the_call(
    db: Database, keys: KeyManager, deadline: Deadline, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def write(self, entries: Sequence[AuditEntry]) -> None:
            raise OSError(f"disk full while writing {entries[0].principal}")

    stream = io.StringIO()
    log = AuditLog(db, keys, sinks=[Broken(), JsonLinesSink(stream)])
    with caplog.at_level(logging.ERROR, logger="vault.audit"):
        log.record([event(0, principal="secret-principal-name")], deadline=deadline)
    assert len(stream.getvalue().splitlines()) == 1  # later sinks still run
    assert "OSError" in caplog.text
    assert "secret-principal-name" not in caplog.text
    assert "disk full" not in caplog.text


# --- checkpoint scheduling -------------------------------------------------------------------


def test_checkpoint_every_n_rows(
    db: Database, keys: KeyManager, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    log = AuditLog(db, keys, checkpoint=store, checkpoint_every=5, checkpoint_in_background=False)
    for i in range(4):
        log.record([event(i)], deadline=deadline)
    assert store.puts == 0
    log.record([event(4)], deadline=deadline)
    assert store.puts == 1
    assert store.get(deadline=deadline)["seq"] == "5"  # type: ignore[index]
    for i in range(5, 12):
        log.record([event(i)], deadline=deadline)
    assert store.get(deadline=deadline)["seq"] == "10"  # type: ignore[index]


def test_checkpoint_in_the_background(
    db: Database, keys: KeyManager, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    log = AuditLog(db, keys, checkpoint=store, checkpoint_every=3)
    for i in range(3):
        log.record([event(i)], deadline=deadline)
    log.close()
    assert store.puts == 1
    assert log.verify(deadline=deadline).checkpoint_seq == 3


def test_checkpoint_by_age(
    db: Database, keys: KeyManager, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    log = AuditLog(
        db,
        keys,
        checkpoint=store,
        checkpoint_every=1000,
        checkpoint_max_age=0.001,
        checkpoint_in_background=False,
    )
    log.record([event(0)], deadline=deadline)
    assert store.puts == 1


class _DownStore(MemoryCheckpointStore):
    """A checkpoint store whose key server does not answer."""

    def create(self, chain: str, name: str, data: Mapping[str, str], *, deadline: Deadline) -> bool:
        raise KeyServerUnavailable("key server unavailable: secret/data/x")


def test_failing_checkpoint_store_never_fails_the_call(
    db: Database, keys: KeyManager, deadline: Deadline, caplog: pytest.LogCaptureFixture
) -> None:
    log = AuditLog(
        db, keys, checkpoint=_DownStore(), checkpoint_every=1, checkpoint_in_background=False
    )
    with caplog.at_level(logging.WARNING, logger="vault.audit"):
        log.record([event(0)], deadline=deadline)
    assert "checkpoint" in caplog.text
    assert count(db) == 1


def test_checkpoint_now_without_a_store(log: AuditLog, db: Database, keys: KeyManager) -> None:
    with pytest.raises(ConfigError):
        AuditLog(db, keys).checkpoint_now(deadline=Deadline.after(5))


def test_each_chain_has_checkpoints_of_its_own(
    db: Database, keys: KeyManager, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    """Per-process chains share one store: each checkpoints into its own folder, and neither
    takes the other's checkpoints for its own."""
    a = AuditLog(db, keys, chain="replica-a", checkpoint=store, checkpoint_in_background=False)
    b = AuditLog(db, keys, chain="replica-b", checkpoint=store, checkpoint_in_background=False)
    for i in range(3):
        a.record([event(i)], deadline=deadline)
        b.record([event(i), event(i + 10)], deadline=deadline)
    assert a.checkpoint_now(deadline=deadline).ok
    assert b.checkpoint_now(deadline=deadline).ok
    assert store.names("replica-a", deadline=deadline) == ["3"]
    assert store.names("replica-b", deadline=deadline) == ["6"]
    assert (a.verify(deadline=deadline).checkpoint_seq, b.verify(deadline=deadline).ok) == (3, True)


def test_close_checkpoints_the_tail(
    db: Database, keys: KeyManager, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    """A stop (SIGTERM or normal) leaves no rows that only the next start would checkpoint;
    a second close with nothing appended since writes nothing more."""
    log = AuditLog(db, keys, checkpoint=store, checkpoint_in_background=False)
    for i in range(3):
        log.record([event(i)], deadline=deadline)
    assert store.puts == 0  # under checkpoint_every and checkpoint_max_age
    log.close()  # an operator command's: no final checkpoint
    assert store.puts == 0
    log.close(final_checkpoint=True)
    assert store.names("main", deadline=deadline) == ["3"]
    log.close(final_checkpoint=True)
    assert store.puts == 1
    assert log.verify(deadline=deadline).checkpoint_seq == 3


def test_close_with_the_store_down_logs_and_returns(
    db: Database, keys: KeyManager, deadline: Deadline, caplog: pytest.LogCaptureFixture
) -> None:
    log = AuditLog(db, keys, checkpoint=_DownStore(), checkpoint_in_background=False)
    log.record([event(0)], deadline=deadline)
    with caplog.at_level(logging.WARNING, logger="vault.audit"):
        log.close(final_checkpoint=True)
    assert "audit checkpoint of chain main failed" in caplog.text


@pytest.mark.parametrize("chain", ["", "a b", "x" * 33, "main;drop"])
def test_bad_chain_names_are_refused(db: Database, keys: KeyManager, chain: str) -> None:
    with pytest.raises(ConfigError):
        AuditLog(db, keys, chain=chain)


def test_event_time_defaults_to_now_utc() -> None:
    ev = AuditEvent("auth.denied", "denied", "", "", "", "", reason="unauthenticated")
    assert ev.time.utcoffset() == timedelta(0)
