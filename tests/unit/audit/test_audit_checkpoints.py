"""Write-once checkpoints (issue 11, point 6): each checkpoint is a new document, verify compares
the chain with every one of them, legacy single checkpoints keep verifying, and the checkpoint
thread still makes one store write per checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from tests.unit.audit.audit_tamper import event, remac, tamper
from vault.audit import (
    BAD_CHECKPOINT,
    CHECKPOINT_MISMATCH,
    MISSING_CHECKPOINT,
    TRUNCATED,
    AuditLog,
    Checkpoint,
    MemoryCheckpointStore,
    checkpoint_document,
    parse_checkpoint,
)
from vault.deadline import Deadline
from vault.errors import ConfigError
from vault.keys import KeyManager
from vault.storage import Database


class CountingStore(MemoryCheckpointStore):
    """Counts the store calls, by method."""

    def __init__(self, legacy: Mapping[str, str] | None = None) -> None:
        super().__init__(legacy)
        self.calls: list[str] = []

    def create(self, chain: str, name: str, data: Mapping[str, str], *, deadline: Deadline) -> bool:
        self.calls.append("create")
        return super().create(chain, name, data, deadline=deadline)

    def names(self, chain: str, *, deadline: Deadline) -> list[str]:
        self.calls.append("names")
        return super().names(chain, deadline=deadline)

    def read(self, chain: str, name: str, *, deadline: Deadline) -> dict[str, str] | None:
        self.calls.append("read")
        return super().read(chain, name, deadline=deadline)

    def legacy(self, *, deadline: Deadline) -> dict[str, str] | None:
        self.calls.append("legacy")
        return super().legacy(deadline=deadline)


def record(log: AuditLog, n: int, deadline: Deadline) -> None:
    for i in range(n):
        log.record([event(i)], deadline=deadline)


def mac_at(db: Database, seq: int, chain: str = "main") -> bytes:
    with db.engine.connect() as conn:
        return bytes(
            conn.execute(
                text("SELECT mac FROM audit_events WHERE chain = :c AND seq = :s"),
                {"c": chain, "s": seq},
            ).scalar_one()
        )


def stored(store: MemoryCheckpointStore, seq: int, chain: str = "main") -> Checkpoint:
    doc = store.read(chain, str(seq), deadline=Deadline.after(5))
    assert doc is not None
    parsed = parse_checkpoint(doc)
    assert parsed is not None
    return parsed


@pytest.fixture
def checkpointed(log: AuditLog, deadline: Deadline) -> AuditLog:
    """A chain of 15 rows with checkpoints at 5, 10 and 15."""
    for _ in range(3):
        record(log, 5, deadline)
        assert log.checkpoint_now(deadline=deadline).ok
    return log


# --- writing ---------------------------------------------------------------------------------


def test_each_checkpoint_is_a_new_document_linked_to_the_one_before(
    checkpointed: AuditLog, store: MemoryCheckpointStore
) -> None:
    assert sorted(store.names("main", deadline=Deadline.after(5)), key=int) == ["5", "10", "15"]
    assert [(stored(store, s).seq, stored(store, s).prev) for s in (5, 10, 15)] == [
        (5, 0),
        (10, 5),
        (15, 10),
    ]
    assert store.puts == 3


def test_a_checkpoint_is_one_store_write_and_no_read_once_the_process_knows_the_last(
    db: Database, keys: KeyManager, deadline: Deadline
) -> None:
    store = CountingStore()
    log = AuditLog(db, keys, checkpoint=store, checkpoint_in_background=False)
    record(log, 3, deadline)
    log.checkpoint_now(deadline=deadline)
    assert store.calls == ["names", "legacy", "create"]  # first of the process: find the last
    for _ in range(3):
        store.calls.clear()
        record(log, 2, deadline)
        assert log.checkpoint_now(deadline=deadline).ok
        assert store.calls == ["create"]


def test_a_new_process_carries_on_from_the_newest_checkpoint(
    checkpointed: AuditLog, db: Database, keys: KeyManager, store: MemoryCheckpointStore
) -> None:
    deadline = Deadline.after(30)
    fresh = AuditLog(db, keys, checkpoint=store, checkpoint_in_background=False)
    record(fresh, 2, deadline)
    report = fresh.checkpoint_now(deadline=deadline)
    assert (report.ok, report.checked, report.last_seq) == (True, 2, 17)
    assert stored(store, 17).prev == 15


def test_replicas_sharing_a_chain_writing_the_same_checkpoint_agree(
    db: Database, keys: KeyManager, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    a = AuditLog(db, keys, checkpoint=store, checkpoint_in_background=False)
    b = AuditLog(db, keys, checkpoint=store, checkpoint_in_background=False)
    record(a, 4, deadline)
    assert a.checkpoint_now(deadline=deadline).ok
    assert b.checkpoint_now(deadline=deadline).ok  # same seq: found there, same MAC
    assert store.puts == 1
    assert a.verify(deadline=deadline).ok


def test_a_different_checkpoint_already_at_the_seq_is_reported_not_replaced(
    db: Database, keys: KeyManager, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    log = AuditLog(db, keys, checkpoint=store, checkpoint_in_background=False)
    record(log, 4, deadline)
    forged = checkpoint_document(Checkpoint("main", 4, bytes(32), 0), datetime.now(UTC))
    store.create("main", "4", forged, deadline=deadline)
    report = log.checkpoint_now(deadline=deadline)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 4, CHECKPOINT_MISMATCH)
    assert store.read("main", "4", deadline=deadline) == forged
    assert log.verify(deadline=deadline).problem == CHECKPOINT_MISMATCH


# --- verifying against every checkpoint ------------------------------------------------------


def test_verify_compares_every_checkpoint(
    checkpointed: AuditLog, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    report = checkpointed.verify(deadline=deadline)
    assert (report.ok, report.checkpoints, report.checkpoint_seq) == (True, 3, 15)
    doc = store.read("main", "5", deadline=deadline)
    assert doc is not None
    store.replace("main", "5", {**doc, "mac": "00" * 32})  # an old one, not the newest
    report = checkpointed.verify(deadline=deadline)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 5, CHECKPOINT_MISMATCH)
    assert "seq 5" in report.detail


def test_re_macd_chain_disagrees_with_the_checkpoints_written_before(
    checkpointed: AuditLog, db: Database, keys: KeyManager, store: MemoryCheckpointStore
) -> None:
    """The insider's attack: edit a row, re-MAC the chain with the audit key, rewrite the head,
    and add a checkpoint of their own for the forged chain (adding is all the policy allows)."""
    deadline = Deadline.after(30)
    tamper(db, "UPDATE audit_events SET principal = 'spiffe://acme/nobody' WHERE seq = 7")
    macs = remac(db, keys, "main", deadline=deadline)
    forged = Checkpoint("main", 7, macs[7], 5)
    store.create("main", "7", checkpoint_document(forged, datetime.now(UTC)), deadline=deadline)
    report = checkpointed.verify(deadline=deadline)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 10, CHECKPOINT_MISMATCH)
    # nor does a new process certify the forged chain
    fresh = AuditLog(db, keys, checkpoint=store, checkpoint_in_background=False)
    record(fresh, 1, deadline)
    assert fresh.checkpoint_now(deadline=deadline).problem == CHECKPOINT_MISMATCH


def test_a_deleted_checkpoint_is_missing(
    checkpointed: AuditLog, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    store.replace("main", "10", None)  # what the service's credential may not do
    report = checkpointed.verify(deadline=deadline)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 10, MISSING_CHECKPOINT)
    assert "seq 15" in report.detail


def test_a_checkpoint_past_the_chain_is_a_truncated_tail(
    checkpointed: AuditLog, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    bogus = Checkpoint("main", 1_000_000, bytes(32), 15)
    store.create(
        "main", "1000000", checkpoint_document(bogus, datetime.now(UTC)), deadline=deadline
    )
    report = checkpointed.verify(deadline=deadline)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 16, TRUNCATED)
    assert "1000000" in report.detail


@pytest.mark.parametrize(
    ("name", "doc"),
    [
        ("12", {"seq": "13"}),  # names another row
        ("12", {"chain": "other"}),  # another chain's, in this chain's folder
        ("12", {"prev": "12"}),  # a link that is not backwards
        ("12", {"format": "1"}),  # the legacy format, where only write-once ones belong
        ("0012", {"seq": "12"}),  # not a canonical name
        ("latest", {}),
    ],
)
def test_a_malformed_checkpoint_is_bad(
    checkpointed: AuditLog,
    db: Database,
    store: MemoryCheckpointStore,
    deadline: Deadline,
    name: str,
    doc: dict[str, str],
) -> None:
    good = checkpoint_document(Checkpoint("main", 12, mac_at(db, 12), 10), datetime.now(UTC))
    store.create("main", name, {**good, **doc}, deadline=deadline)
    report = checkpointed.verify(deadline=deadline)
    assert (report.ok, report.problem) == (False, BAD_CHECKPOINT)


# --- the single checkpoint of earlier versions -----------------------------------------------


def legacy_doc(db: Database, seq: int, chain: str = "main") -> dict[str, str]:
    """What versions before write-once checkpoints wrote at ``<kv_path>``."""
    return {
        "format": "1",
        "chain": chain,
        "seq": str(seq),
        "mac": mac_at(db, seq, chain).hex(),
        "time": datetime.now(UTC).isoformat(),
    }


def test_a_legacy_checkpoint_is_one_more_checkpoint(
    log: AuditLog, db: Database, keys: KeyManager, deadline: Deadline
) -> None:
    record(log, 10, deadline)
    store = MemoryCheckpointStore(legacy=legacy_doc(db, 8))
    upgraded = AuditLog(db, keys, checkpoint=store, checkpoint_in_background=False)
    report = upgraded.verify(deadline=deadline)
    assert (report.ok, report.checkpoints, report.checkpoint_seq) == (True, 1, 8)
    # the first write-once checkpoint starts from it, and links to no write-once one
    report = upgraded.checkpoint_now(deadline=deadline)
    assert (report.ok, report.checked, report.last_seq) == (True, 2, 10)
    assert stored(store, 10).prev == 0
    assert upgraded.verify(deadline=deadline).checkpoints == 2
    tamper(db, "UPDATE audit_events SET role = 'dpo' WHERE seq = 3")
    remac(db, keys, "main", deadline=deadline)
    report = upgraded.verify(deadline=deadline)
    assert (report.first_bad_seq, report.problem) == (8, CHECKPOINT_MISMATCH)


def test_a_legacy_checkpoint_of_another_chain_is_left_to_that_chain(
    db: Database, keys: KeyManager, deadline: Deadline
) -> None:
    """Earlier deployments whose chains shared one kv_path: the document names its chain."""
    other = AuditLog(db, keys, chain="other")
    record(other, 4, deadline)
    store = MemoryCheckpointStore(legacy=legacy_doc(db, 4, chain="other"))
    main = AuditLog(db, keys, checkpoint=store, checkpoint_in_background=False)
    record(main, 2, deadline)
    assert (main.verify(deadline=deadline).ok, main.verify(deadline=deadline).checkpoints) == (
        True,
        0,
    )
    assert main.checkpoint_now(deadline=deadline).ok
    reports = {r.chain: r for r in main.verify_all(deadline=deadline)}
    assert (reports["other"].ok, reports["other"].checkpoint_seq) == (True, 4)


def test_a_malformed_legacy_checkpoint_is_bad(
    log: AuditLog, db: Database, keys: KeyManager, deadline: Deadline
) -> None:
    record(log, 3, deadline)
    store = MemoryCheckpointStore(legacy={"format": "1", "chain": "main", "seq": "x"})
    upgraded = AuditLog(db, keys, checkpoint=store, checkpoint_in_background=False)
    assert upgraded.verify(deadline=deadline).problem == BAD_CHECKPOINT
    assert upgraded.checkpoint_now(deadline=deadline).problem == BAD_CHECKPOINT


# --- every chain -----------------------------------------------------------------------------


def test_verify_all_walks_every_chain_in_the_database_and_the_store(
    db: Database, keys: KeyManager, store: MemoryCheckpointStore, deadline: Deadline
) -> None:
    gone = AuditLog(db, keys, chain="gone", checkpoint=store, checkpoint_in_background=False)
    record(gone, 3, deadline)
    assert gone.checkpoint_now(deadline=deadline).ok
    kept = AuditLog(db, keys, chain="kept", checkpoint=store, checkpoint_in_background=False)
    record(kept, 2, deadline)
    # every row and the head of chain "gone" deleted: only its checkpoint remembers it
    tamper(
        db,
        "DELETE FROM audit_events WHERE chain = 'gone'",
        "DELETE FROM audit_chain_heads WHERE chain = 'gone'",
    )
    operator = AuditLog(db, keys, checkpoint=store)  # chain "main": no rows at all
    reports = {r.chain: r for r in operator.verify_all(deadline=deadline)}
    assert sorted(reports) == ["gone", "kept", "main"]
    assert (reports["gone"].ok, reports["gone"].problem) == (False, TRUNCATED)
    assert (reports["kept"].ok, reports["kept"].checked) == (True, 2)
    assert (reports["main"].ok, reports["main"].checked) == (True, 0)
    assert operator.verify_chain("kept", deadline=deadline).ok
    with pytest.raises(ConfigError):
        operator.verify_chain("..", deadline=deadline)


@pytest.mark.parametrize("chain", [".", ".."])
def test_chain_names_that_are_path_steps_are_refused(
    db: Database, keys: KeyManager, chain: str
) -> None:
    with pytest.raises(ConfigError):
        AuditLog(db, keys, chain=chain)
