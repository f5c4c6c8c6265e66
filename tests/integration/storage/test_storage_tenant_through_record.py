"""Value and blind-index rows carry no tenant (migration 0014): every query reaching them by
tenant goes through their record's row, so one tenant never reads, finds or lists another's
record, even when a row of the other tenant matches everything else (same record id queried,
same field, same digest)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import insert

from vault.storage import Database, NewIndex, NewRecord, NewValue, keys_repo, repo
from vault.storage.models import TenantKey

DIGEST = b"\x07" * 32


def _stored(database: Database, tenant: str) -> tuple[str, str]:
    """A record of ``tenant`` with one value and its blind-index row: (record id, index key id)."""
    now = datetime.now(UTC)
    rid, dek, ik = (str(uuid.uuid4()) for _ in range(3))
    record = NewRecord(
        id=rid,
        tenant=tenant,
        schema_version=1,
        idempotency_key=None,
        data_keys=[],
        values=[NewValue(rid, "email", "email", dek, b"\x01" * 40, "tok_" + uuid.uuid4().hex)],
        index_rows=[NewIndex(rid, "email", ik, DIGEST)],
    )
    with database.begin() as conn:
        conn.execute(
            insert(TenantKey).values(
                id=ik, tenant=tenant, field_class="email", kind="index", version=1,
                wrapped="w", created_at=now,
            )
        )  # fmt: skip
        repo.insert_records(conn, [record], now)
    return rid, ik


def test_another_tenants_rows_are_neither_found_nor_read(database: Database) -> None:
    mine, other = (f"t-{uuid.uuid4().hex[:10]}" for _ in range(2))
    my_record, _ = _stored(database, mine)
    their_record, their_ik = _stored(database, other)
    with database.begin(write=False) as conn:
        assert repo.find_records(conn, mine, {"email": [DIGEST]}, 10) == [my_record]
        assert repo.find_records(conn, other, {"email": [DIGEST]}, 10) == [their_record]
        assert repo.record_tokens(conn, mine, their_record) == {}
        assert repo.read_record(conn, mine, their_record) == (None, [])
        assert keys_repo.unindexed_values(conn, mine, ["email"], their_ik, 10) == [
            (my_record, "email")
        ]
        assert keys_repo.unindexed_values(conn, other, ["email"], their_ik, 10) == []
