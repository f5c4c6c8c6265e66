"""Migrations on the real databases: models and schema agree, erased-record guards exist."""

from __future__ import annotations

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from vault.storage import Database, current_revision, head_revision
from vault.storage.models import Base


def test_migrated_schema_matches_models(database: Database, db_url: str) -> None:
    assert current_revision(db_url) == head_revision()
    with database.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_tombstoned_data_key_cannot_be_written_back(database: Database) -> None:
    # ids are UUIDs: PostgreSQL stores them as uuid (migration 0014)
    dk, rec, other, no_key = (str(uuid.uuid4()) for _ in range(4))
    with database.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO erased_data_keys (data_key_id, record_id, tenant, erased_at) "
                "VALUES (:dk, :rec, 't', CURRENT_TIMESTAMP)"
            ),
            {"dk": dk, "rec": rec},
        )
    with pytest.raises(Exception, match="record erased"), database.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO data_keys (id, tenant, record_id, field_class, tenant_key_id, "
                "wrapped, created_at) VALUES (:dk, 't', :other, 'email', :tk, :w, "
                "CURRENT_TIMESTAMP)"
            ),
            {"dk": dk, "other": other, "tk": no_key, "w": b"x"},
        )
