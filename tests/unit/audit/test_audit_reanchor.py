"""Re-anchoring a chain after a database restore (issue 12, part 6), on SQLite with checkpoints
in memory: a restore is a copy of the database file taken earlier, put back."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.unit.audit.audit_tamper import event, remac, tamper
from vault.audit import (
    CHECKPOINT_MISMATCH,
    MISSING_CHECKPOINT,
    REANCHOR_ACTION,
    TRUNCATED,
    AuditEvent,
    AuditLog,
    MemoryCheckpointStore,
    Reanchor,
    ReanchorRefused,
    parse_checkpoint,
)
from vault.deadline import Deadline
from vault.keys import KeyManager
from vault.storage import Database

OPERATOR = AuditEvent(
    action=REANCHOR_ACTION,
    outcome="allowed",
    principal="operator:alice",
    role="operator",
    purpose="",
    tenant="",
    reason="INC-4711 restore of the 02:00 backup",
)


def record(log: AuditLog, n: int, deadline: Deadline, start: int = 0) -> None:
    for i in range(n):
        log.record([event(start + i)], deadline=deadline)


class Backups:
    """Copies of the SQLite file, put back as a restore does (connections closed first)."""

    def __init__(self, db: Database, folder: Path) -> None:
        self.db = db
        self.live = Path(str(db.engine.url.database))
        self.folder = folder

    def take(self, name: str) -> None:
        self.db.dispose()
        shutil.copy(self.live, self.folder / name)

    def restore(self, name: str) -> None:
        self.db.dispose()
        shutil.copy(self.folder / name, self.live)


@pytest.fixture
def backups(db: Database, tmp_path: Path) -> Backups:
    return Backups(db, tmp_path)


@pytest.fixture
def restored(log: AuditLog, backups: Backups, deadline: Deadline) -> AuditLog:
    """Checkpoints at 5 and 10, a backup at 12, checkpoints at 15 and 20, the backup restored."""
    for _ in range(2):
        record(log, 5, deadline)
        assert log.checkpoint_now(deadline=deadline).ok
    record(log, 2, deadline)
    backups.take("at-12")
    for _ in range(2):
        record(log, 4, deadline)
        assert log.checkpoint_now(deadline=deadline).ok  # at 16, then 20
    backups.restore("at-12")
    return log


def reanchor(log: AuditLog, deadline: Deadline) -> Reanchor:
    return log.reanchor(OPERATOR, deadline=deadline)


def test_after_a_restore_verify_fails_and_says_how_to_re_anchor(
    restored: AuditLog, deadline: Deadline
) -> None:
    report = restored.verify(deadline=deadline)
    assert (report.ok, report.problem, report.first_bad_seq) == (False, TRUNCATED, 13)
    assert "cvault audit re-anchor" in report.detail


def test_a_re_anchor_records_the_restore_and_verify_passes_reporting_it(
    restored: AuditLog, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    done = reanchor(restored, deadline)
    assert (done.seq, done.epoch, done.anchor, done.head, done.checkpointed) == (13, 1, 10, 12, 20)
    assert (done.principal, done.reason) == ("operator:alice", OPERATOR.reason)
    # its own checkpoint opens epoch 1 and does not collide with the write-once one at 16
    first = parse_checkpoint(store.read("main", "e1-13", deadline=deadline) or {})
    assert first is not None
    assert (first.seq, first.epoch, first.prev) == (13, 1, 0)
    report = restored.verify(deadline=deadline)
    assert report.ok, report.detail
    assert (report.last_seq, report.excused, report.checkpoints) == (13, 2, 3)
    assert report.reanchors == (replace(done, time=report.reanchors[0].time),)
    assert "restored chain ended at seq 12" in report.reanchors[0].describe()
    # the row holds the range and the reason, no value
    with restored.db.engine.connect() as conn:
        row = (
            conn.execute(
                text("SELECT * FROM audit_events WHERE action = :a"), {"a": REANCHOR_ACTION}
            )
            .mappings()
            .one()
        )
    assert (row["seq"], row["principal"], row["role"], row["outcome"]) == (
        13,
        "operator:alice",
        "operator",
        "allowed",
    )
    assert row["request_id"] == "reanchor e=1 anchor=10 head=12 checkpointed=20"
    assert (row["tenant"], row["record_ref"], row["field_classes"]) == ("", None, "")


def test_after_a_re_anchor_checkpoints_continue_in_the_new_epoch(
    restored: AuditLog,
    db: Database,
    keys: KeyManager,
    store: MemoryCheckpointStore,
    deadline: Deadline,
) -> None:
    reanchor(restored, deadline)
    record(restored, 3, deadline, start=100)
    assert restored.checkpoint_now(deadline=deadline).ok
    assert store.read("main", "e1-16", deadline=deadline) is not None
    fresh = AuditLog(db, keys, checkpoint=store, checkpoint_in_background=False)
    record(fresh, 7, deadline, start=200)  # now at 23: past every checkpoint of epoch 0
    report = fresh.checkpoint_now(deadline=deadline)
    assert (report.ok, report.last_seq) == (True, 23)
    written = parse_checkpoint(store.read("main", "e1-23", deadline=deadline) or {})
    assert written is not None
    assert (written.epoch, written.prev) == (1, 16)
    assert store.read("main", "23", deadline=deadline) is None
    final = fresh.verify(deadline=deadline)
    assert final.ok, final.detail
    assert (final.last_seq, len(final.reanchors)) == (23, 1)


def test_rows_appended_after_the_restore_are_covered_too(
    restored: AuditLog, deadline: Deadline
) -> None:
    record(restored, 4, deadline, start=300)  # e.g. `audit verify` auditing itself: 13..16
    assert restored.verify(deadline=deadline).problem == CHECKPOINT_MISMATCH  # at 16
    done = reanchor(restored, deadline)
    assert (done.seq, done.anchor, done.head, done.checkpointed) == (17, 10, 16, 20)
    assert restored.verify(deadline=deadline).ok


def test_a_truncation_without_a_re_anchor_still_fails(
    log: AuditLog, db: Database, deadline: Deadline
) -> None:
    for _ in range(3):
        record(log, 5, deadline)
        assert log.checkpoint_now(deadline=deadline).ok
    tamper(
        db,
        "DELETE FROM audit_events WHERE seq > 12",
        "UPDATE audit_chain_heads SET seq = 12, mac = "
        "(SELECT mac FROM audit_events WHERE seq = 12)",
    )
    assert log.verify(deadline=deadline).problem == TRUNCATED


def test_a_forged_re_anchor_row_without_the_audit_key_fails_verify(
    restored: AuditLog, db: Database, deadline: Deadline
) -> None:
    """The attacker deletes rows (here: the restore did) and adds a re-anchor row by hand."""
    with db.engine.begin() as conn:
        row = dict(conn.execute(text("SELECT * FROM audit_events WHERE seq = 12")).mappings().one())
    row.update(
        seq=13,
        action=REANCHOR_ACTION,
        request_id="reanchor e=1 anchor=10 head=12 checkpointed=20",
        mac=bytes(32),
    )
    columns = ", ".join(row)
    tamper(
        db,
        (f"INSERT INTO audit_events ({columns}) VALUES ({', '.join(':' + c for c in row)})", row),
        ("UPDATE audit_chain_heads SET seq = 13, mac = :m", {"m": bytes(32)}),
    )
    report = restored.verify(deadline=deadline)
    assert not report.ok
    assert report.first_bad_seq == 13


def test_a_re_anchor_by_a_holder_of_the_audit_key_is_recorded_not_hidden(
    restored: AuditLog, db: Database, keys: KeyManager, deadline: Deadline
) -> None:
    """Whoever holds the audit key can append a re-anchor (that is what the command does):
    verify passes but names it, and the lost range stays in the chain."""
    reanchor(restored, deadline)
    report = restored.verify(deadline=deadline)
    assert report.ok
    assert [r.seq for r in report.reanchors] == [13]
    # deleting the re-anchor row afterwards (and re-MACing) brings the failure back
    tamper(db, "DELETE FROM audit_events WHERE seq = 13")
    remac(db, keys, "main", deadline=deadline)
    assert not restored.verify(deadline=deadline).ok


def test_a_re_anchor_is_refused_when_there_is_nothing_to_re_anchor(
    log: AuditLog, deadline: Deadline
) -> None:
    record(log, 5, deadline)
    assert log.checkpoint_now(deadline=deadline).ok
    with pytest.raises(ReanchorRefused, match="matches every checkpoint"):
        reanchor(log, deadline)


def test_a_re_anchor_is_refused_over_a_broken_row(
    restored: AuditLog, db: Database, deadline: Deadline
) -> None:
    tamper(db, "UPDATE audit_events SET role = 'dpo' WHERE seq = 11")
    with pytest.raises(ReanchorRefused, match="broken at seq 11"):
        reanchor(restored, deadline)
    assert not restored.verify(deadline=deadline).ok


def test_a_re_anchor_is_refused_when_a_checkpoint_was_deleted(
    restored: AuditLog, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    store.replace("main", "10", None)
    with pytest.raises(ReanchorRefused, match="missing checkpoint"):
        reanchor(restored, deadline)


def test_a_re_anchor_whose_checkpoint_was_not_written_is_completed_by_running_it_again(
    restored: AuditLog, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    done = reanchor(restored, deadline)
    store.replace("main", "e1-13", None)  # as if the key server failed after the row
    report = restored.verify(deadline=deadline)
    assert (report.ok, report.problem, report.first_bad_seq) == (False, MISSING_CHECKPOINT, 13)
    again = reanchor(restored, deadline)
    assert (again.seq, again.epoch) == (done.seq, done.epoch)
    assert restored.verify(deadline=deadline).ok


def test_a_second_restore_of_an_older_backup_starts_another_epoch(
    log: AuditLog, backups: Backups, deadline: Deadline
) -> None:
    record(log, 5, deadline)
    assert log.checkpoint_now(deadline=deadline).ok  # 5
    record(log, 2, deadline)
    backups.take("at-7")
    record(log, 5, deadline)
    assert log.checkpoint_now(deadline=deadline).ok  # 12
    backups.restore("at-7")
    first = reanchor(log, deadline)  # row 8, epoch 1
    record(log, 6, deadline, start=400)
    assert log.checkpoint_now(deadline=deadline).ok  # e1-14
    backups.restore("at-7")  # the same old backup again: the first re-anchor is lost too
    second = reanchor(log, deadline)
    assert (first.epoch, second.epoch) == (1, 2)
    assert (second.seq, second.anchor, second.head, second.checkpointed) == (8, 5, 7, 14)
    report = log.verify(deadline=deadline)
    assert report.ok, report.detail
    assert [r.epoch for r in report.reanchors] == [2]
