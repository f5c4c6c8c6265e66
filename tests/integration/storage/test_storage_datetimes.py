"""Every datetime column gives back an aware UTC datetime on SQLite and PostgreSQL (issue 16:
SQLite handed back naive values, and comparing one with ``datetime.now(UTC)`` was an INTERNAL
error on the second tokenization of a deterministic token with a TTL)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import DateTime, Table, insert, select

from vault.storage import Database
from vault.storage._types import UtcDateTime
from vault.storage.models import Base, Erasure

BERLIN_WINTER = timezone(timedelta(hours=1))


def test_every_datetime_column_is_utc_aware() -> None:
    columns = [c for t in Base.metadata.sorted_tables for c in t.columns]
    assert [c for c in columns if isinstance(c.type, DateTime)] == []
    assert len([c for c in columns if isinstance(c.type, UtcDateTime)]) >= 10


def test_written_in_any_zone_read_back_in_utc(database: Database) -> None:
    table = Erasure.__table__
    assert isinstance(table, Table)
    record_id = str(uuid.uuid4())
    at = datetime(2026, 12, 5, 13, 30, 15, 250_000, tzinfo=BERLIN_WINTER)
    with database.engine.begin() as conn:
        conn.execute(
            insert(table).values(record_id=record_id, tenant="t-dt", erased_at=at, data_key_ids="")
        )
    with database.engine.connect() as conn:
        got = conn.execute(
            select(table.c.erased_at).where(table.c.record_id == record_id)
        ).scalar_one()
    assert got.tzinfo is not None
    assert got.utcoffset() == timedelta(0)
    assert got == at  # the same instant
    assert got < datetime.now(UTC)  # comparable with the services' clock


def test_a_naive_datetime_is_refused(database: Database) -> None:
    table = Erasure.__table__
    assert isinstance(table, Table)
    with pytest.raises(Exception, match="naive datetime"), database.engine.begin() as conn:
        conn.execute(
            insert(table).values(
                record_id=str(uuid.uuid4()),
                tenant="t-dt",
                erased_at=datetime(2026, 1, 1),
                data_key_ids="",
            )
        )
