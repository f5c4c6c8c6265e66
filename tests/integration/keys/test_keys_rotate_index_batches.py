"""rotate-index in batches (issue 15, point 7): the work per batch, not per record (one read,
one ``data_keys.open``, one bulk insert), a stopped run carried on to the end with every value
indexed once, erased records skipped, and duplicate rows from a concurrent writer skipped, on
SQLite and PostgreSQL. Speed itself is measured by benchmarks/rotate_index.py, never here."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Connection

from tests.support import ADMIN, sample_record
from vault.deadline import Deadline
from vault.service import RecordInput, RecordsService
from vault.service._datakeys import DataKeyRef
from vault.service.operations import rotate_index
from vault.storage import Database, NewIndex, keys_repo

pytestmark = pytest.mark.openbao

RECORDS = 120
BATCH = 50


class _Stop(Exception):
    pass


def _dl() -> Deadline:
    return Deadline.after(60)


def _people(records: RecordsService, tenant: str, n: int = RECORDS) -> dict[str, str]:
    """record id -> email of ``n`` new records."""
    recs = [sample_record(i) for i in range(n)]
    stored = records.create(ADMIN, tenant, [RecordInput(r) for r in recs], deadline=_dl())
    return {s.record_id: r["email"] for r, s in zip(recs, stored, strict=True)}


def _index_rows(db: Database, tenant: str) -> list[tuple[str, str, int]]:
    """(record id, field, index-key version) of the tenant's email blind-index rows."""
    with db.begin(write=False) as conn:
        rows = conn.execute(
            text(
                "SELECT b.record_id, b.field_name, k.version FROM blind_index b"
                " JOIN tenant_keys k ON k.id = b.index_key_id"
                " WHERE k.tenant = :t AND b.field_name = 'email'"
            ),
            {"t": tenant},
        ).all()
    return [(str(r[0]), r[1], int(r[2])) for r in rows]


@pytest.fixture
def statements(database: Database) -> Iterator[list[str]]:
    """Every SQL statement sent to the database while the test runs."""
    sent: list[str] = []

    def count(*args: Any) -> None:
        sent.append(args[2])

    event.listen(database.engine, "before_cursor_execute", count)
    yield sent
    event.remove(database.engine, "before_cursor_execute", count)


def test_work_per_batch_not_per_record(
    records: RecordsService, tenant: str, statements: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """120 values in batches of 50: a handful of statements and key openings per batch (the
    per-record path made a read and a key opening per record, and three statements per row)."""
    _people(records, tenant)
    data_keys = records.core.data_keys
    opened: list[int] = []
    inserted: list[int] = []
    real_open, real_add = data_keys.open, keys_repo.add_index_rows

    def counted_open(tenant: str, refs: Iterable[DataKeyRef], **kwargs: Any) -> Any:
        refs = list(refs)
        opened.append(len(refs))
        return real_open(tenant, refs, **kwargs)

    def counted_add(conn: Connection, rows: Sequence[NewIndex]) -> int:
        inserted.append(len(rows))
        return real_add(conn, rows)

    monkeypatch.setattr(data_keys, "open", counted_open)
    monkeypatch.setattr(keys_repo, "add_index_rows", counted_add)
    statements.clear()
    report = rotate_index(records.core, tenant, "email", batch=BATCH)
    assert (report.indexed, report.dropped) == (RECORDS, RECORDS)
    batches = -(-RECORDS // BATCH)
    assert len(statements) < RECORDS // 2, f"{len(statements)} statements for {RECORDS} values"
    assert opened == inserted == [BATCH, BATCH, RECORDS - 2 * BATCH]
    reads = [s for s in statements if "FROM record_values" in s and "ciphertext" in s]
    assert len(reads) == batches
    # the new key's row, and one per batch for PostgreSQL's COPY; never one per row
    assert len([s for s in statements if s.upper().startswith("SAVEPOINT")]) <= 1 + batches


def test_stopped_run_resumes_and_indexes_every_value_once(
    records: RecordsService, tenant: str
) -> None:
    people = _people(records, tenant)
    done: list[tuple[int, int]] = []

    def stop() -> None:
        raise _Stop

    with pytest.raises(_Stop):
        rotate_index(
            records.core,
            tenant,
            "email",
            batch=BATCH,
            progress=lambda n, total: done.append((n, total)),
            between_batches=stop,
        )
    assert done == [(BATCH, RECORDS)]
    assert len([r for r in _index_rows(records.core.db, tenant) if r[2] == 2]) == BATCH
    resumed = rotate_index(records.core, tenant, "email", batch=BATCH)
    assert (resumed.version, resumed.started) == (2, False)
    assert (resumed.indexed, resumed.dropped) == (RECORDS - BATCH, RECORDS)
    rows = _index_rows(records.core.db, tenant)
    assert sorted(r[0] for r in rows) == sorted(people)  # once each, all under v2
    assert {r[2] for r in rows} == {2}
    for rid, email in list(people.items())[:: RECORDS // 6]:
        assert records.find(ADMIN, tenant, {"email": email}, deadline=_dl()) == [rid]


def test_records_erased_during_the_rotation_are_skipped(
    records: RecordsService, tenant: str
) -> None:
    people = _people(records, tenant)
    ids = sorted(people)
    gone = [ids[0], ids[BATCH + 3], ids[-1]]  # one already done, two still ahead

    def erase_once() -> None:
        while gone:
            records.delete(ADMIN, tenant, gone.pop(), deadline=_dl())

    report = rotate_index(records.core, tenant, "email", batch=BATCH, between_batches=erase_once)
    assert report.indexed == RECORDS - 2
    rows = _index_rows(records.core.db, tenant)
    assert sorted(r[0] for r in rows) == sorted(set(ids) - {ids[0], ids[BATCH + 3], ids[-1]})
    assert {r[2] for r in rows} == {2}
    for rid in (ids[1], ids[-2]):
        assert records.find(ADMIN, tenant, {"email": people[rid]}, deadline=_dl()) == [rid]
    assert records.find(ADMIN, tenant, {"email": people[ids[-1]]}, deadline=_dl()) == []


def test_rows_a_concurrent_writer_made_are_skipped(records: RecordsService, tenant: str) -> None:
    people = _people(records, tenant, 4)
    [ik] = records.core.keyring.index_keys(tenant, "email", deadline=_dl())
    ids = sorted(people)
    new = [NewIndex(rid, "other", ik.id, bytes(32)) for rid in ids]
    with records.core.db.begin() as conn:
        assert keys_repo.add_index_rows(conn, new[:2]) == 2
    with records.core.db.begin() as conn:
        assert keys_repo.add_index_rows(conn, new) == 2
        assert keys_repo.add_index_rows(conn, []) == 0
    with records.core.db.begin() as conn:
        assert keys_repo.index_rows_under(conn, [ik.id]) == 4 + 4
