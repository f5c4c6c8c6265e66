"""The MAC chain: appends verify, and every kind of tampering is found and named by its seq."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tests.unit.audit.audit_tamper import event, tamper
from vault.audit import (
    BAD_CHECKPOINT,
    BAD_KEY,
    CHECKPOINT_MISMATCH,
    DELETED,
    EDITED,
    HEAD_MISMATCH,
    INSERTED,
    REORDERED,
    TRUNCATED,
    AuditLog,
    MemoryCheckpointStore,
)
from vault.audit._keys import key_aad
from vault.deadline import Deadline
from vault.keys import KeyManager
from vault.storage import Database
from vault.testing import InMemoryKeyWrapper

N = 10


def fill(log: AuditLog, n: int, deadline: Deadline, *, per_txn: int = 3) -> None:
    for start in range(0, n, per_txn):
        log.record([event(i) for i in range(start, min(n, start + per_txn))], deadline=deadline)


def seqs(db: Database, chain: str = "main") -> list[int]:
    with db.engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT seq FROM audit_events WHERE chain = :c ORDER BY seq"), {"c": chain}
            ).scalars()
        )


def mac_of(db: Database, seq: int) -> bytes:
    with db.engine.connect() as conn:
        return bytes(
            conn.execute(
                text("SELECT mac FROM audit_events WHERE chain = 'main' AND seq = :s"), {"s": seq}
            ).scalar_one()
        )


def set_head(db: Database, seq: int) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_chain_heads SET seq = :s, mac = :m WHERE chain = 'main'"),
            {"s": seq, "m": mac_of(db, seq)},
        )


def move(db: Database, *pairs: tuple[int, int]) -> None:
    """Give the rows at each ``old`` seq the ``new`` seq (all at once, through negatives)."""
    stmts: list[str | tuple[str, dict[str, object]]] = [
        (
            "UPDATE audit_events SET seq = :tmp WHERE chain = 'main' AND seq = :old",
            {"tmp": -new, "old": old},
        )
        for old, new in pairs
    ]
    stmts.append("UPDATE audit_events SET seq = -seq WHERE chain = 'main' AND seq < 0")
    tamper(db, *stmts)


def test_round_trip_verifies(log: AuditLog, db: Database, deadline: Deadline) -> None:
    fill(log, N, deadline)
    report = log.verify(deadline=deadline)
    assert report.ok, report
    assert (report.checked, report.last_seq, report.first_bad_seq, report.problem) == (
        N,
        N,
        None,
        "",
    )
    assert seqs(db) == list(range(1, N + 1))


def test_empty_chain_verifies(log: AuditLog, deadline: Deadline) -> None:
    report = log.verify(deadline=deadline)
    assert report.ok
    assert report.checked == 0


def test_append_returns_entries_in_order(log: AuditLog, db: Database, deadline: Deadline) -> None:
    with db.begin(write=True) as conn:
        entries = log.append(conn, [event(0), event(1, record_id=None)], deadline=deadline)
    assert [e.seq for e in entries] == [1, 2]
    assert entries[0].record_ref == log.pseudonym(
        "acme", event(0).record_id or "", deadline=deadline
    )
    assert entries[1].record_ref is None
    assert entries[0].field_classes == ("email", "phone")


def test_chains_are_independent(
    db: Database, keys: KeyManager, log: AuditLog, deadline: Deadline
) -> None:
    other = AuditLog(db, keys, chain="admin")
    for i in range(4):
        log.record([event(i)], deadline=deadline)
        other.record([event(i, action="admin.audit.verify")], deadline=deadline)
    assert seqs(db, "main") == seqs(db, "admin") == [1, 2, 3, 4]
    assert log.verify(deadline=deadline).ok
    assert other.verify(deadline=deadline).ok


def test_concurrent_appenders_build_one_chain(
    db: Database, keys: KeyManager, deadline: Deadline
) -> None:
    logs = [AuditLog(db, keys) for _ in range(8)]  # as if 8 processes
    errors: list[BaseException] = []

    def work(log: AuditLog, t: int) -> None:
        try:
            for i in range(25):
                log.record([event(t * 1000 + i)], deadline=deadline)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(lg, t)) for t, lg in enumerate(logs)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert seqs(db) == list(range(1, 201))
    report = logs[0].verify(deadline=deadline)
    assert report.ok
    assert report.checked == 200


# --- edits -----------------------------------------------------------------------------------

EDITS = {
    "time": "'2020-01-01 00:00:00.000000'",
    "principal": "'spiffe://acme/someone-else'",
    "role": "'admin'",
    "action": "'record.write'",
    "purpose": "'marketing'",
    "tenant": "'globex'",
    "record_ref": "'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'",
    "field_classes": "'email'",
    "outcome": "'denied'",
    "reason": "'no_consent'",
    "request_id": "'req-forged'",
    "mac": "X'" + "00" * 32 + "'",
}


@pytest.mark.parametrize("column", sorted(EDITS))
def test_edited_column_is_found(
    log: AuditLog, db: Database, deadline: Deadline, column: str
) -> None:
    fill(log, N, deadline)
    tamper(db, f"UPDATE audit_events SET {column} = {EDITS[column]} WHERE seq = 5")
    report = log.verify(deadline=deadline)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 5, EDITED)
    assert report.checked == 4


def test_record_ref_set_to_null_is_found(log: AuditLog, db: Database, deadline: Deadline) -> None:
    fill(log, N, deadline)
    tamper(db, "UPDATE audit_events SET record_ref = NULL WHERE seq = 3")
    report = log.verify(deadline=deadline)
    assert (report.first_bad_seq, report.problem) == (3, EDITED)


def test_audit_key_id_pointed_at_another_key_is_found(
    log: AuditLog, db: Database, keys: KeyManager, deadline: Deadline
) -> None:
    fill(log, N, deadline)
    key_id = str(uuid.uuid4())
    (made,) = keys.new_keys("audit", [key_aad(key_id, 2)], deadline=deadline)
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_keys (id, version, wrapped, created_at) "
                "VALUES (:i, 2, :w, '2026-01-01 00:00:00.000000')"
            ),
            {"i": key_id, "w": made.wrapped},
        )
    tamper(db, ("UPDATE audit_events SET audit_key_id = :k WHERE seq = 6", {"k": key_id}))
    report = log.verify(deadline=deadline)
    assert (report.first_bad_seq, report.problem) == (6, EDITED)


def test_tampered_audit_key_is_reported(
    log: AuditLog, db: Database, wrapper: InMemoryKeyWrapper, deadline: Deadline
) -> None:
    fill(log, N, deadline)
    with db.engine.begin() as conn:
        wrapped = conn.execute(text("SELECT wrapped FROM audit_keys")).scalar_one()
        flipped = wrapped[:-6] + ("AAAA" if wrapped[-6:-2] != "AAAA" else "BBBB") + wrapped[-2:]
        conn.execute(text("UPDATE audit_keys SET wrapped = :w"), {"w": flipped})
    fresh = AuditLog(db, KeyManager(wrapper))  # nothing cached: must unwrap the stored blob
    report = fresh.verify(deadline=deadline)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 1, BAD_KEY)


@pytest.mark.parametrize(("column", "value"), [("chain", "'other'"), ("seq", "10000")])
def test_row_moved_out_of_place_is_a_deletion(
    log: AuditLog, db: Database, deadline: Deadline, column: str, value: str
) -> None:
    fill(log, N, deadline)
    tamper(db, f"UPDATE audit_events SET {column} = {value} WHERE seq = 5")
    report = log.verify(deadline=deadline)
    assert (report.first_bad_seq, report.problem) == (5, DELETED)


# --- deletions -------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 5, N - 1])
def test_deleted_row_is_found(log: AuditLog, db: Database, deadline: Deadline, k: int) -> None:
    fill(log, N, deadline)
    tamper(db, f"DELETE FROM audit_events WHERE seq = {k}")
    report = log.verify(deadline=deadline)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, k, DELETED)


def test_deleted_row_with_renumbering_is_found(
    log: AuditLog, db: Database, deadline: Deadline
) -> None:
    fill(log, N, deadline)
    tamper(db, "DELETE FROM audit_events WHERE seq = 4")
    move(db, *[(s, s - 1) for s in range(5, N + 1)])
    set_head(db, N - 1)
    report = log.verify(deadline=deadline)
    assert (report.first_bad_seq, report.problem) == (4, DELETED)


def test_deleted_tail_is_found_by_the_head_table(
    log: AuditLog, db: Database, deadline: Deadline
) -> None:
    fill(log, N, deadline)
    tamper(db, f"DELETE FROM audit_events WHERE seq > {N - 3}")
    report = log.verify(deadline=deadline)
    assert (report.first_bad_seq, report.problem) == (N - 2, TRUNCATED)
    assert "head" in report.detail


def test_deleted_tail_with_rewritten_head_is_found_by_the_checkpoint(
    log: AuditLog, db: Database, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    fill(log, N, deadline)
    assert log.checkpoint_now(deadline=deadline).ok
    tamper(db, f"DELETE FROM audit_events WHERE seq > {N - 3}")
    set_head(db, N - 3)
    report = log.verify(deadline=deadline)
    assert (report.first_bad_seq, report.problem) == (N - 2, TRUNCATED)
    assert report.checkpoint_seq == N
    assert "checkpoint" in report.detail


def test_window_rows_after_the_checkpoint_deleted_with_the_head_go_unnoticed(
    log: AuditLog, db: Database, deadline: Deadline
) -> None:
    """The documented window: the checkpoint only knows rows up to when it was written."""
    fill(log, N, deadline)
    assert log.checkpoint_now(deadline=deadline).last_seq == N
    fill(log, 3, deadline)
    tamper(db, f"DELETE FROM audit_events WHERE seq > {N}")
    set_head(db, N)
    assert log.verify(deadline=deadline).ok


def test_truncation_is_not_laundered_by_later_checkpoints(
    log: AuditLog, db: Database, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    fill(log, N, deadline)
    log.checkpoint_now(deadline=deadline)
    before = store.get(deadline=deadline)
    tamper(db, f"DELETE FROM audit_events WHERE seq > {N - 3}")
    set_head(db, N - 3)
    fill(log, 6, deadline)  # new rows take seqs N-2 .. N+3: row N is now another row
    report = log.checkpoint_now(deadline=deadline)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, N, CHECKPOINT_MISMATCH)
    assert store.get(deadline=deadline) == before
    report = log.verify(deadline=deadline)
    assert (report.first_bad_seq, report.problem) == (N, CHECKPOINT_MISMATCH)


def test_checkpoint_refuses_a_tampered_tail_it_reads_back(
    log: AuditLog,
    db: Database,
    keys: KeyManager,
    store: MemoryCheckpointStore,
    deadline: Deadline,
) -> None:
    """Rows another writer of the chain appended are read back before they are checkpointed."""
    fill(log, N, deadline)
    log.checkpoint_now(deadline=deadline)
    fill(log, 5, deadline)
    tamper(db, f"UPDATE audit_events SET purpose = 'x' WHERE seq = {N + 2}")
    before = store.get(deadline=deadline)
    other = AuditLog(db, keys, checkpoint=store, checkpoint_in_background=False)
    report = other.checkpoint_now(deadline=deadline)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, N + 2, EDITED)
    assert store.get(deadline=deadline) == before


def test_a_tail_edited_after_its_append_is_not_certified(
    log: AuditLog, db: Database, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    """The process's own rows are not read back: the checkpoint keeps the MACs as appended,
    so the edited row does not agree with it and verify names it."""
    fill(log, N, deadline)
    log.checkpoint_now(deadline=deadline)
    fill(log, 5, deadline)
    appended = mac_of(db, N + 5)
    tamper(db, f"UPDATE audit_events SET purpose = 'x' WHERE seq = {N + 2}")
    assert log.checkpoint_now(deadline=deadline).ok
    assert store.get(deadline=deadline)["mac"] == appended.hex()  # type: ignore[index]
    report = log.verify(deadline=deadline)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, N + 2, EDITED)


def test_checkpoint_only_moves_forward(
    log: AuditLog, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    fill(log, N, deadline)
    assert log.checkpoint_now(deadline=deadline).last_seq == N
    assert log.checkpoint_now(deadline=deadline).ok
    assert store.puts == 1
    fill(log, 2, deadline)
    report = log.checkpoint_now(deadline=deadline)
    assert (report.ok, report.checked, report.last_seq) == (True, 2, N + 2)
    assert store.puts == 2


# --- insertions and reordering ---------------------------------------------------------------


def _forge(db: Database, seq: int) -> None:
    tamper(
        db,
        (
            "INSERT INTO audit_events (chain, seq, time, principal, role, action, purpose, "
            "tenant, record_ref, field_classes, outcome, reason, request_id, audit_key_id, mac) "
            "SELECT chain, :s, time, 'spiffe://acme/intruder', role, action, purpose, tenant, "
            "record_ref, field_classes, outcome, reason, request_id, audit_key_id, :m "
            "FROM audit_events WHERE chain = 'main' AND seq = 1",
            {"s": seq, "m": bytes(range(32))},
        ),
    )


def test_forged_row_at_the_tail_is_found(log: AuditLog, db: Database, deadline: Deadline) -> None:
    fill(log, N, deadline)
    _forge(db, N + 1)
    report = log.verify(deadline=deadline)
    assert (report.first_bad_seq, report.problem) == (N + 1, INSERTED)


def test_forged_row_at_the_tail_with_head_rewritten_is_found(
    log: AuditLog, db: Database, deadline: Deadline
) -> None:
    fill(log, N, deadline)
    _forge(db, N + 1)
    set_head(db, N + 1)
    report = log.verify(deadline=deadline)
    assert (report.ok, report.first_bad_seq) == (False, N + 1)


def test_forged_row_in_the_middle_is_found(log: AuditLog, db: Database, deadline: Deadline) -> None:
    fill(log, N, deadline)
    move(db, *[(s, s + 1) for s in range(4, N + 1)])
    _forge(db, 4)
    set_head(db, N + 1)
    report = log.verify(deadline=deadline)
    assert (report.first_bad_seq, report.problem) == (4, INSERTED)


@pytest.mark.parametrize(("a", "b"), [(3, 4), (3, 8), (2, N)])
def test_swapped_rows_are_found(
    log: AuditLog, db: Database, deadline: Deadline, a: int, b: int
) -> None:
    fill(log, N, deadline)
    move(db, (a, b), (b, a))
    report = log.verify(deadline=deadline)
    assert (report.first_bad_seq, report.problem) == (a, REORDERED)


@pytest.mark.parametrize(("a", "b"), [(3, 4), (3, 8), (2, N)])
def test_swapped_contents_keeping_macs_are_found(
    log: AuditLog, db: Database, deadline: Deadline, a: int, b: int
) -> None:
    fill(log, N, deadline)
    mac_a, mac_b = mac_of(db, a), mac_of(db, b)
    move(db, (a, b), (b, a))
    tamper(
        db,
        ("UPDATE audit_events SET mac = :m WHERE seq = :s", {"m": mac_a, "s": a}),
        ("UPDATE audit_events SET mac = :m WHERE seq = :s", {"m": mac_b, "s": b}),
    )
    report = log.verify(deadline=deadline)
    assert (report.first_bad_seq, report.problem) == (a, REORDERED)


# --- head and checkpoint ---------------------------------------------------------------------


def test_edited_head_is_found(log: AuditLog, db: Database, deadline: Deadline) -> None:
    fill(log, N, deadline)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_chain_heads SET mac = :m"), {"m": bytes(32)})
    report = log.verify(deadline=deadline)
    assert (report.first_bad_seq, report.problem) == (N, HEAD_MISMATCH)


def test_deleted_head_is_found(log: AuditLog, db: Database, deadline: Deadline) -> None:
    fill(log, N, deadline)
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_chain_heads"))
    report = log.verify(deadline=deadline)
    assert (report.ok, report.problem) == (False, HEAD_MISMATCH)


def test_checkpoint_that_disagrees_is_found(
    log: AuditLog, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    fill(log, N, deadline)
    log.checkpoint_now(deadline=deadline)
    data = store.get(deadline=deadline)
    assert data is not None
    store.replace("main", str(N), {**data, "mac": "00" * 32})  # past the key server's policy
    report = log.verify(deadline=deadline)
    assert (report.first_bad_seq, report.problem) == (N, CHECKPOINT_MISMATCH)


def test_malformed_checkpoint_is_reported(
    log: AuditLog, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    fill(log, N, deadline)
    store.create("main", "5", {"format": "2", "chain": "main", "seq": "many"}, deadline=deadline)
    report = log.verify(deadline=deadline)
    assert (report.first_bad_seq, report.problem) == (5, BAD_CHECKPOINT)
    assert log.checkpoint_now(deadline=deadline).problem == BAD_CHECKPOINT
    assert store.names("main", deadline=deadline) == ["5"]


def test_time_round_trips_exactly(log: AuditLog, deadline: Deadline) -> None:
    odd = datetime(2026, 3, 29, 1, 59, 59, 999999, tzinfo=UTC)
    log.record([event(0, time=odd)], deadline=deadline)
    (entry,) = log.query("acme", event(0).record_id or "", deadline=deadline)
    assert entry.time == odd
    assert log.verify(deadline=deadline).ok


_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), max_size=64)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    principal=_TEXT,
    purpose=_TEXT,
    tenant=_TEXT,
    record_id=st.one_of(st.none(), _TEXT.filter(bool)),
    reason=_TEXT,
    classes=st.lists(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), max_size=4),
)
def test_arbitrary_unicode_round_trips(
    db: Database,
    keys: KeyManager,
    deadline: Deadline,
    principal: str,
    purpose: str,
    tenant: str,
    record_id: str | None,
    reason: str,
    classes: list[str],
) -> None:
    log = AuditLog(db, keys, chain=f"h{uuid.uuid4().hex[:12]}")
    ev = event(
        0,
        principal=principal,
        purpose=purpose,
        tenant=tenant,
        record_id=record_id,
        reason=reason,
        field_classes=tuple(classes),
    )
    (entry,) = log.record([ev, ev], deadline=deadline)[1:]
    assert log.verify(deadline=deadline).ok
    assert (entry.principal, entry.purpose, entry.tenant, entry.reason) == (
        principal,
        purpose,
        tenant,
        reason,
    )
    assert entry.field_classes == tuple(sorted(set(classes)))
    if record_id is not None:
        found = log.query(tenant, record_id, deadline=deadline)
        assert [e.seq for e in found if e.chain == log.chain] == [2, 1]
