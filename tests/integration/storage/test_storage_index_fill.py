"""Migration 0015 (issue 13, storage): the audit rows' pseudonym lookup is a hash index, and the
b-trees that only grow at their right edge are filled to 100% on PostgreSQL. A data-subject
report still finds a record's audit rows through it, and the downgrade gives 0014's indexes
back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from tests.support import private_postgres
from vault.audit import _store as audit_store
from vault.audit._mac import RowContent
from vault.storage import Database, normalize_url
from vault.storage._migrate import alembic_config

RIGHT_GROWING = {
    "pk_records",
    "pk_data_keys",
    "uq_data_keys_record_id",
    "pk_record_values",
    "pk_blind_index",
    "pk_audit_events",
}


def _sql(url: str, statement: str) -> list[dict[str, Any]]:
    engine = create_engine(normalize_url(url))
    try:
        with engine.begin() as conn:
            return [dict(r._mapping) for r in conn.execute(text(statement))]
    finally:
        engine.dispose()


def _audit_indexes(url: str) -> dict[str, str]:
    """The audit_events indexes other than its primary key, by name: their definitions."""
    if url.startswith("sqlite"):
        rows = _sql(
            url,
            "SELECT name, sql FROM sqlite_master WHERE type = 'index'"
            " AND tbl_name = 'audit_events' AND sql IS NOT NULL",
        )
        return {r["name"]: r["sql"] for r in rows}
    rows = _sql(
        url,
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'audit_events'"
        " AND indexname <> 'pk_audit_events'",
    )
    return {r["indexname"]: r["indexdef"] for r in rows}


def _fill(url: str) -> dict[str, list[str] | None]:
    rows = _sql(url, "SELECT relname, reloptions FROM pg_class WHERE relkind = 'i'")
    return {r["relname"]: r["reloptions"] for r in rows if r["relname"] in RIGHT_GROWING}


def _row(seq: int, tenant: str, ref: str | None) -> audit_store.StoredRow:
    content = RowContent(
        time=datetime.now(UTC),
        principal="p",
        role="r",
        action="record.read",
        purpose="",
        tenant=tenant,
        record_ref=ref,
        field_classes="",
        outcome="allowed",
        reason="",
        request_id="",
        audit_key_id="00000000-0000-4000-8000-000000000001",
    )
    return audit_store.StoredRow("t-chain", seq, content, bytes(32))


def test_the_pseudonym_index_serves_the_report_and_the_downgrade_gives_0014_back(
    own_url: str,
) -> None:
    indexes = _audit_indexes(own_url)
    assert set(indexes) == {"ix_audit_events_ref"}
    if own_url.startswith("postgresql"):
        assert "USING hash (record_ref)" in indexes["ix_audit_events_ref"]
    db = Database(own_url)
    try:
        with db.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO audit_keys (id, version, wrapped, created_at) VALUES"
                    " ('00000000-0000-4000-8000-000000000001', 1, 'w', CURRENT_TIMESTAMP)"
                )
            )
            audit_store.insert_events(
                conn,
                [
                    _row(1, "a", "ref-1"),
                    _row(2, "b", "ref-1"),
                    _row(3, "a", "ref-2"),
                    _row(4, "a", None),
                ],
            )
        with db.begin(write=False) as conn:
            found = audit_store.rows_for_refs(conn, "a", ["ref-1", "ref-2"], 10)
    finally:
        db.dispose()
    assert sorted(r.seq for r in found) == [1, 3]  # not tenant b's row of the same ref
    command.downgrade(alembic_config(own_url), "0014")
    assert set(_audit_indexes(own_url)) == {"ix_audit_events_lookup"}
    command.upgrade(alembic_config(own_url), "head")
    assert set(_audit_indexes(own_url)) == {"ix_audit_events_ref"}


@pytest.mark.postgres
def test_right_growing_btrees_are_filled_to_100_percent_and_the_downgrade_resets_them() -> None:
    with private_postgres() as url:
        assert _fill(url) == {name: ["fillfactor=100"] for name in RIGHT_GROWING}
        command.downgrade(alembic_config(url), "0014")
        assert _fill(url) == dict.fromkeys(RIGHT_GROWING)
