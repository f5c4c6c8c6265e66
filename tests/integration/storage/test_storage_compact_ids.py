"""Migration 0014 (issue 13, storage): ids as PostgreSQL ``uuid``, narrower indexes, on SQLite
and PostgreSQL. Records, tokens and erasures written under 0013's schema read the same after
the upgrade (and after the downgrade), the erased-record guards still refuse a restored key,
a value that is not a UUID stops the upgrade before anything changed, searches find rows through
the digest index, and the downgrade gives back 0013's schema exactly."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from tests.support import (
    ADMIN_KEY,
    TEST_PURPOSE,
    authenticator,
    make_service,
    private_postgres,
    sample_record,
)
from vault import errors
from vault.api import start_server
from vault.client import TokenItem, VaultClient
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.service import Services
from vault.storage import Database, current_revision, normalize_url
from vault.storage._migrate import alembic_config

#: tables whose rows the round trip compares (every table 0014 changes)
TABLES = (
    "tenant_keys",
    "records",
    "data_keys",
    "record_values",
    "blind_index",
    "erasures",
    "erased_data_keys",
    "tokens",
    "audit_keys",
    "audit_events",
)


def _up(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def _down(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def _sql(url: str, statement: str, **params: object) -> list[dict[str, Any]]:
    engine = create_engine(normalize_url(url))
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            if not result.returns_rows:
                return []
            # ids as text on both databases (PostgreSQL hands uuid columns back as UUID objects)
            return [
                {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in r._mapping.items()}
                for r in result
            ]
    finally:
        engine.dispose()


#: columns of 0013 that 0014 drops (their values come back from the record on the downgrade)
DROPPED = {("blind_index", "id"), ("record_values", "tenant"), ("blind_index", "tenant")}


def _rows(
    url: str, tables: tuple[str, ...] = TABLES, *, every_column: bool = False
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the changed tables, without the columns 0014 drops (unless
    ``every_column``; blind_index's integer id never: it numbers rows anew)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table in tables:
        rows = _sql(url, f"SELECT * FROM {table}")
        out[table] = sorted(
            tuple(sorted((k, bytes(v) if isinstance(v, memoryview) else v) for k, v in r.items()))
            for r in (
                {
                    k: v
                    for k, v in r.items()
                    if (table, k) not in DROPPED
                    or (every_column and (table, k) != ("blind_index", "id"))
                }
                for r in rows
            )
        )
    return out


def _schema(url: str) -> dict[str, Any]:
    """Tables, columns, keys, indexes and triggers, as the database reports them."""
    engine = create_engine(normalize_url(url))
    try:
        insp = inspect(engine)
        out: dict[str, Any] = {}
        for t in sorted(insp.get_table_names()):
            out[t] = (
                sorted((c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)),
                insp.get_pk_constraint(t),
                sorted((u["name"], u["column_names"]) for u in insp.get_unique_constraints(t)),
                sorted((i["name"], i["column_names"], i["unique"]) for i in insp.get_indexes(t)),
                sorted((f["name"], f["constrained_columns"]) for f in insp.get_foreign_keys(t)),
            )
        with engine.connect() as conn:
            triggers = (
                "SELECT tgname, tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal"
                if engine.dialect.name == "postgresql"
                else "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
            )
            out["(triggers)"] = sorted(tuple(r) for r in conn.execute(text(triggers)))
        return out
    finally:
        engine.dispose()


@contextlib.contextmanager
def _client(url: str, openbao: OpenBaoDevServer) -> Iterator[VaultClient]:
    """The real server over gRPC on ``url``, with fresh key caches."""
    db = Database(url)
    running = start_server(
        Services.over(make_service(db, openbao).core), "127.0.0.1:0", authenticator=authenticator()
    )
    try:
        with VaultClient(
            running.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=30
        ) as client:
            yield client
    finally:
        running.stop(grace=0)
        db.dispose()


@pytest.mark.openbao
def test_what_0013_stored_reads_the_same_after_the_upgrade_and_the_downgrade(
    own_url: str, openbao: OpenBaoDevServer
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    values = [sample_record(9400 + i) for i in range(3)]
    with _client(own_url, openbao) as client:
        kept, changed, erased = (c.record_id for c in client.batch_create_records(tenant, values))
        # a class shredded on a live record (its key tombstoned) and a whole record erased
        client.update_record(tenant, changed, expected_version=1, clear_fields=["phone"])
        erased_keys = _sql(own_url, "SELECT * FROM data_keys WHERE record_id = :r", r=erased)
        receipt = client.delete_record(tenant, erased)
        pool_token, linked = client.tokenize(
            tenant,
            [
                TokenItem("pool.customer@example.com", "email", "random"),
                TokenItem(values[0]["email"], "email", "random", record_id=kept),
            ],
        )
    _down(own_url, "0013")  # the rows now stand as 0013 stored them (text ids)
    before = _rows(own_url)
    assert all(before[t] for t in ("blind_index", "erased_data_keys", "tokens"))
    sealed = _rows(own_url, ("record_values", "blind_index"), every_column=True)
    _up(own_url)
    assert _rows(own_url) == before
    with _client(own_url, openbao) as client:
        got = client.get_record(tenant, kept)
        assert {n: f.value for n, f in got.fields.items()} == values[0]
        assert "phone" not in client.get_record(tenant, changed).fields
        assert client.find_records(tenant, {"email": values[1]["email"]}) == [changed]
        with pytest.raises(errors.Erased):
            client.get_record(tenant, erased)
        assert client.delete_record(tenant, erased) == receipt
        revealed = client.reveal(tenant, [pool_token, linked], purpose=TEST_PURPOSE)
        assert [r.value for r in revealed] == ["pool.customer@example.com", values[0]["email"]]
    # a backup's copy of an erased record's data-key row is still refused
    assert sorted(k["id"] for k in erased_keys) == sorted(receipt.data_key_ids)
    columns = ("id", "tenant", "record_id", "field_class", "tenant_key_id", "wrapped")
    with pytest.raises(Exception, match="record erased"):
        _sql(
            own_url,
            f"INSERT INTO data_keys ({', '.join(columns)}, created_at)"
            f" VALUES ({', '.join(':' + c for c in columns)}, CURRENT_TIMESTAMP)",
            **{c: erased_keys[0][c] for c in columns},
        )
    served = _rows(own_url)  # with the audit rows of the calls above
    _down(own_url, "0013")
    assert _rows(own_url) == served
    # each value's and blind-index row's tenant is back, taken from its record
    assert _rows(own_url, ("record_values", "blind_index"), every_column=True) == sealed


def test_the_downgrade_gives_back_the_schema_of_0013(own_url: str) -> None:
    assert _sql(own_url, "SELECT min_server FROM schema_compat") == [{"min_server": "0014"}]
    _down(own_url, "0013")
    migrated_back = _schema(own_url)
    assert _sql(own_url, "SELECT min_server FROM schema_compat") == [{"min_server": "0012"}]
    _down(own_url, "base")
    _up(own_url, "0013")
    assert _schema(own_url) == migrated_back


@pytest.mark.postgres
def test_ids_are_uuid_and_only_the_used_indexes_are_left() -> None:
    with private_postgres() as url:
        types = _sql(
            url,
            "SELECT table_name || '.' || column_name AS col, data_type FROM"
            " information_schema.columns WHERE table_schema = 'public' AND data_type = 'uuid'",
        )
        indexes = _sql(
            url,
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN"
            " ('records', 'record_values', 'blind_index')",
        )
    assert {t["col"] for t in types} == {
        "tenant_keys.id",
        "audit_keys.id",
        "records.id",
        "data_keys.id",
        "data_keys.record_id",
        "data_keys.tenant_key_id",
        "record_values.record_id",
        "record_values.data_key_id",
        "blind_index.record_id",
        "blind_index.index_key_id",
        "erasures.record_id",
        "erased_data_keys.data_key_id",
        "erased_data_keys.record_id",
        "tokens.record_id",
        "tokens.data_key_id",
        "audit_events.audit_key_id",
    }
    full = " WITH (fillfactor='100')"  # right-growing b-trees since 0015
    assert {i["indexname"]: i["indexdef"].partition(" USING ")[2] for i in indexes} == {
        "pk_records": "btree (id)" + full,
        "uq_records_tenant": "btree (tenant, idempotency_key)",
        "pk_record_values": "btree (record_id, field_name)" + full,
        "pk_blind_index": "btree (record_id, field_name, index_key_id)" + full,
        "ix_blind_index_digest": "hash (digest)",
    }


@pytest.mark.postgres
def test_a_value_that_is_not_a_uuid_stops_the_upgrade_before_any_change() -> None:
    with private_postgres() as url:
        _down(url, "0013")
        _sql(
            url,
            "INSERT INTO erasures (record_id, tenant, erased_at, data_key_ids)"
            " VALUES ('legacy-7', 'acme', CURRENT_TIMESTAMP, '[]')",
        )
        with pytest.raises(RuntimeError, match=r"erasures\.record_id holds 1 value"):
            _up(url)
        assert current_revision(url) == "0013"
        [kind] = _sql(
            url,
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = 'data_keys' AND column_name = 'id'",
        )
        assert kind == {"data_type": "character varying"}


def test_a_value_row_of_no_record_of_its_tenant_stops_the_upgrade(own_url: str) -> None:
    _down(own_url, "0013")
    rid = str(uuid.uuid4())
    _sql(
        own_url,
        "INSERT INTO records (id, tenant, version, schema_version, created_at, updated_at)"
        " VALUES (:r, 'acme', 1, 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        r=rid,
    )
    _sql(
        own_url,
        "INSERT INTO record_values (record_id, field_name, tenant, field_class, data_key_id,"
        " ciphertext, token) VALUES (:r, 'email', 'globex', 'email', :k, :c, 'tok_1')",
        r=rid,
        k=str(uuid.uuid4()),
        c=b"\x01",
    )
    with pytest.raises(RuntimeError, match=r"record_values holds 1 row\(s\) whose record"):
        _up(own_url)
    assert current_revision(own_url) == "0013"
    assert _sql(own_url, "SELECT tenant FROM record_values") == [{"tenant": "globex"}]


@pytest.mark.postgres
def test_a_search_finds_the_blind_index_rows_through_the_digest_index() -> None:
    with private_postgres() as url:
        engine = create_engine(normalize_url(url))
        try:
            with engine.begin() as conn:
                # empty tables: no scans and no loop over the tenant's records, so the plan
                # shows how the blind-index rows themselves are found
                conn.execute(text("SET LOCAL enable_seqscan = off"))
                conn.execute(text("SET LOCAL enable_nestloop = off"))
                plan = "\n".join(
                    str(r[0])
                    for r in conn.execute(
                        text(
                            "EXPLAIN SELECT b.record_id FROM blind_index b"
                            " JOIN records r ON r.id = b.record_id WHERE r.tenant = 'acme' AND"
                            " ((b.field_name = 'email' AND b.digest IN (:a, :b))"
                            " OR (b.field_name = 'phone' AND b.digest IN (:c)))"
                            " GROUP BY b.record_id"
                        ),
                        {"a": b"\x01" * 32, "b": b"\x02" * 32, "c": b"\x03" * 32},
                    )
                )
        finally:
            engine.dispose()
    assert "ix_blind_index_digest" in plan
