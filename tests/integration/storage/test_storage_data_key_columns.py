"""A record's data-key row stores no age and no seal count until one is needed (migration 0014):
``created_at`` and ``seals`` are NULL, and counting linked-token seals starts from 0."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import insert, select

from vault.storage import Database, NewDataKey, NewRecord, keys_repo, repo
from vault.storage.models import DataKeyRow, TenantKey


def test_a_record_key_has_no_age_and_counts_seals_from_zero(database: Database) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    now = datetime.now(UTC)
    rid, dek, tk = (str(uuid.uuid4()) for _ in range(3))
    key_row = NewDataKey(dek, tenant, rid, "email", tk, b"\x01" * 77)
    record = NewRecord(rid, tenant, 1, None, data_keys=[key_row], values=[], index_rows=[])
    with database.begin() as conn:
        conn.execute(
            insert(TenantKey).values(
                id=tk, tenant=tenant, field_class="email", kind="data", version=1,
                wrapped="w", created_at=now,
            )
        )  # fmt: skip
        repo.insert_records(conn, [record], now)
    with database.begin() as conn:
        stored = conn.execute(
            select(DataKeyRow.created_at, DataKeyRow.seals).where(DataKeyRow.id == dek)
        ).one()
        assert tuple(stored) == (None, None)
        assert keys_repo.pool_key(conn, tenant, dek) is None
        assert keys_repo.add_data_key_seals(conn, {dek: 3}) == 3
        assert keys_repo.add_data_key_seals(conn, {dek: 2}) == 5
