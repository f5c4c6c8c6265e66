"""Bulk inserts (issue 13: COPY on PostgreSQL, one tuple executemany on SQLite) store what the
statement-per-row path stored, and fail the way it failed: a duplicate is SQLAlchemy's
``IntegrityError`` (the create path re-reads on it), with no bind parameter in its text."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError

from vault.storage import Database, NewRecord, repo
from vault.storage.models import Record

WINTER = timezone(timedelta(hours=1))


def _record(tenant: str, key: str) -> NewRecord:
    return NewRecord(
        id=str(uuid.uuid4()),
        tenant=tenant,
        schema_version=1,
        idempotency_key=key,
        data_keys=[],
        values=[],
        index_rows=[],
    )


def test_bulk_rows_read_back_with_their_time_in_utc(database: Database) -> None:
    tenant = f"bulk-{uuid.uuid4().hex[:8]}"
    at = datetime(2026, 12, 6, 3, 4, 5, 600_000, tzinfo=WINTER)
    new = [_record(tenant, f"k-{i}") for i in range(3)]
    with database.begin() as conn:
        repo.insert_records(conn, new, at)
    with database.begin(write=False) as conn:
        rows = conn.execute(
            select(Record.id, Record.created_at, Record.version).where(Record.tenant == tenant)
        ).all()
    assert sorted(r.id for r in rows) == sorted(r.id for r in new)
    assert {r.created_at for r in rows} == {at.astimezone(UTC)}
    assert {r.version for r in rows} == {1}
    # stored byte for byte as a statement through SQLAlchemy stores it (SQLite keeps text)
    other = _record(tenant, "k-orm")
    with database.begin() as conn:
        conn.execute(
            insert(Record).values(
                id=other.id,
                tenant=tenant,
                version=1,
                schema_version=1,
                idempotency_key="k-orm",
                created_at=at,
                updated_at=at,
            )
        )
    with database.begin(write=False) as conn:
        raw = conn.execute(
            text("SELECT DISTINCT created_at FROM records WHERE tenant = :t"), {"t": tenant}
        ).all()
    assert len(raw) == 1


def test_a_duplicate_is_an_integrity_error_without_parameters(database: Database) -> None:
    tenant = f"bulk-{uuid.uuid4().hex[:8]}"
    secret_key = f"idem-{uuid.uuid4().hex}"
    with database.begin() as conn:
        repo.insert_records(conn, [_record(tenant, secret_key)], datetime.now(UTC))
    with pytest.raises(IntegrityError) as exc, database.begin() as conn:
        repo.insert_records(conn, [_record(tenant, secret_key)], datetime.now(UTC))
    assert secret_key not in str(exc.value.statement or "")
    assert secret_key not in str(exc.value)  # the engine hides bind parameters
    # nothing of the failed batch was written, and the connection pool still works
    with database.begin(write=False) as conn:
        count = conn.execute(select(Record.id).where(Record.tenant == tenant)).all()
    assert len(count) == 1
