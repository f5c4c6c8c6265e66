"""What is left in the database: no plaintext anywhere, and nothing that decrypts elsewhere."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from tests.support import ADMIN, SAMPLE, TOKENS, make_service, sample_record
from vault.deadline import Deadline
from vault.errors import DecryptionFailed, Erased
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.service import RecordInput, RecordsService
from vault.storage import Database

pytestmark = pytest.mark.openbao


def _dl() -> Deadline:
    return Deadline.after(30)


def _needles(values: dict[str, str]) -> set[bytes]:
    """Every plaintext in the encodings a leak could take (UTF-8, UTF-16, hex of UTF-8)."""
    out: set[bytes] = set()
    for v in values.values():
        for form in {v, v.lower(), v.replace(" ", "")}:
            if len(form) < 6:
                continue
            raw = form.encode("utf-8")
            out |= {raw, form.encode("utf-16-le"), raw.hex().encode()}
    return out


def _database_bytes(db: Database, tmp_path: Path) -> bytes:
    """Everything the database holds: the SQLite files, or every PostgreSQL table as text."""
    if db.dialect == "sqlite":
        # the main file plus its -wal and -shm files: pages not yet checkpointed count too
        path = Path(db.engine.url.database or "")
        blobs = [p.read_bytes() for p in path.parent.glob(path.name + "*")]
        return b"".join(blobs)
    chunks = []
    with db.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT t::text FROM "{table}" t')):
                chunks.append(str(row[0]).encode("utf-8"))
    return b"\n".join(chunks)


def test_no_plaintext_at_rest_or_in_logs(
    records: RecordsService,
    database: Database,
    tenant: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    inputs = [sample_record(i) for i in range(50)] + [SAMPLE]
    created = records.create(
        ADMIN, tenant, [RecordInput(f) for f in inputs], deadline=_dl(), batch=True
    )
    # update, read, search and erase too, so every write path has run
    records.update(
        ADMIN,
        tenant,
        created[0].record_id,
        expected_version=1,
        set_fields={"notes": "Updated note about a sensitive matter 4242"},
        deadline=_dl(),
    )
    records.get(ADMIN, tenant, created[1].record_id, deadline=_dl())
    records.find(ADMIN, tenant, {"email": inputs[2]["email"]}, deadline=_dl())
    records.delete(ADMIN, tenant, created[3].record_id, deadline=_dl())

    canonical = [records.core.schema.validate(f) for f in inputs]
    needles = set()
    for plain in [*inputs, *canonical, {"n": "Updated note about a sensitive matter 4242"}]:
        needles |= _needles(plain)
    blob = _database_bytes(database, tmp_path)
    assert len(blob) > 10_000  # the scan saw the data
    found = [n for n in needles if n in blob]
    assert not found, f"{len(found)} plaintext values found at rest"
    logged = "\n".join(r.getMessage() for r in caplog.records).encode()
    assert not [n for n in needles if n in logged]


def _swap(db: Database, sql: str, **params: object) -> None:
    with db.engine.begin() as conn:
        conn.execute(text(sql), params)


def test_ciphertext_moved_to_another_record_fails(
    records: RecordsService, database: Database, tenant: str, openbao: OpenBaoDevServer
) -> None:
    a, b = records.create(
        ADMIN,
        tenant,
        [RecordInput({"email": "alice@example.com"}), RecordInput({"email": "bob@example.com"})],
        deadline=_dl(),
    )
    _swap(
        database,
        "UPDATE record_values SET ciphertext = (SELECT ciphertext FROM record_values "
        "WHERE record_id = :src AND field_name = 'email') "
        "WHERE record_id = :dst AND field_name = 'email'",
        src=a.record_id,
        dst=b.record_id,
    )
    with pytest.raises(DecryptionFailed):
        records.get(ADMIN, tenant, b.record_id, deadline=_dl())
    # A fresh process (no cached keys) refuses it the same way.
    fresh = make_service(database, openbao)
    with pytest.raises(DecryptionFailed):
        fresh.get(ADMIN, tenant, b.record_id, deadline=_dl())


def test_ciphertext_moved_to_another_field_fails(
    records: RecordsService, database: Database, tenant: str
) -> None:
    (a,) = records.create(
        ADMIN,
        tenant,
        [RecordInput({"full_name": "Alice Liddell", "address": "1 Wonder Lane"})],
        deadline=_dl(),
    )
    # move the name ciphertext into the address field, keeping the row's key reference valid
    _swap(
        database,
        "UPDATE record_values SET ciphertext = (SELECT ciphertext FROM record_values "
        "WHERE record_id = :r AND field_name = 'full_name'), data_key_id = (SELECT data_key_id "
        "FROM record_values WHERE record_id = :r AND field_name = 'full_name') "
        "WHERE record_id = :r AND field_name = 'address'",
        r=a.record_id,
    )
    with pytest.raises(DecryptionFailed):
        records.get(ADMIN, tenant, a.record_id, fields=["address"], deadline=_dl())
    assert (
        records.get(ADMIN, tenant, a.record_id, fields=["full_name"], deadline=_dl())
        .fields["full_name"]
        .value
        == "Alice Liddell"
    )


def test_ciphertext_moved_to_another_tenant_fails(
    records: RecordsService, database: Database, tenant: str
) -> None:
    other = tenant + "-b"
    (a,) = records.create(
        ADMIN, tenant, [RecordInput({"email": "alice@example.com"})], deadline=_dl()
    )
    (b,) = records.create(ADMIN, other, [RecordInput({"email": "bob@example.com"})], deadline=_dl())
    _swap(
        database,
        "UPDATE record_values SET ciphertext = (SELECT ciphertext FROM record_values "
        "WHERE record_id = :src AND field_name = 'email') "
        "WHERE record_id = :dst AND field_name = 'email'",
        src=a.record_id,
        dst=b.record_id,
    )
    with pytest.raises(DecryptionFailed):
        records.get(ADMIN, other, b.record_id, deadline=_dl())


def test_wrapped_data_key_moved_to_another_record_fails(
    records: RecordsService, database: Database, tenant: str, openbao: OpenBaoDevServer
) -> None:
    a, b = records.create(
        ADMIN,
        tenant,
        [RecordInput({"email": "alice@example.com"}), RecordInput({"email": "bob@example.com"})],
        deadline=_dl(),
    )
    _swap(
        database,
        "UPDATE data_keys SET wrapped = (SELECT wrapped FROM data_keys WHERE record_id = :src) "
        "WHERE record_id = :dst",
        src=a.record_id,
        dst=b.record_id,
    )
    fresh = make_service(database, openbao)  # cold caches: must unwrap the row
    with pytest.raises(DecryptionFailed):
        fresh.get(ADMIN, tenant, b.record_id, deadline=_dl())


@pytest.mark.parametrize("position", [0, 5, 20, 35, -1])
def test_flipped_byte_in_stored_ciphertext_fails(
    records: RecordsService, database: Database, tenant: str, position: int
) -> None:
    (a,) = records.create(
        ADMIN, tenant, [RecordInput({"email": "flip@example.com"})], deadline=_dl()
    )
    with database.engine.begin() as conn:
        ct = bytearray(
            conn.execute(
                text("SELECT ciphertext FROM record_values WHERE record_id = :r"),
                {"r": a.record_id},
            ).scalar_one()
        )
        ct[position] ^= 0x01
        conn.execute(
            text("UPDATE record_values SET ciphertext = :c WHERE record_id = :r"),
            {"c": bytes(ct), "r": a.record_id},
        )
    with pytest.raises(DecryptionFailed):
        records.get(ADMIN, tenant, a.record_id, deadline=_dl())


_TABLES = ("records", "data_keys", "record_values", "blind_index")


def _snapshot(db: Database, record_id: str) -> dict[str, list[dict[str, object]]]:
    out = {}
    with db.engine.connect() as conn:
        for table in _TABLES:
            col = "id" if table == "records" else "record_id"
            rows = conn.execute(
                text(f"SELECT * FROM {table} WHERE {col} = :r"),
                {"r": record_id},
            ).mappings()
            out[table] = [dict(r) for r in rows]
    return out


def _restore(db: Database, snap: dict[str, list[dict[str, object]]]) -> None:
    with db.engine.begin() as conn:
        for table in _TABLES:
            for row in snap[table]:
                cols = ", ".join(row)
                params = ", ".join(f":{c}" for c in row)
                conn.execute(text(f"INSERT INTO {table} ({cols}) VALUES ({params})"), row)


def _drop_guards(db: Database) -> None:
    """What a restore that bypasses triggers (or an attacker with DDL rights) would do."""
    with db.engine.begin() as conn:
        if db.dialect == "sqlite":
            names = conn.execute(
                text(
                    "SELECT name FROM sqlite_master "
                    "WHERE type='trigger' AND name LIKE 'refuse_erased_%'"
                )
            ).scalars()
            for name in list(names):
                conn.execute(text(f"DROP TRIGGER {name}"))
        else:
            for table in ("data_keys", "record_values", "records"):
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER refuse_erased_{table}"))


def _restore_guards(db: Database) -> None:
    if db.dialect == "postgresql":
        with db.engine.begin() as conn:
            for table in ("data_keys", "record_values", "records"):
                conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER refuse_erased_{table}"))
    else:
        import importlib

        from alembic.operations import Operations
        from alembic.runtime.migration import MigrationContext

        initial = importlib.import_module("migrations.versions.0001_initial")
        with db.engine.begin() as conn:
            ctx = MigrationContext.configure(conn)
            with Operations.context(ctx):
                initial._create_guards()


def test_erased_record_stays_unreadable_after_rows_are_written_back(
    records: RecordsService, database: Database, tenant: str, openbao: OpenBaoDevServer
) -> None:
    (a,) = records.create(ADMIN, tenant, [RecordInput(dict(SAMPLE))], deadline=_dl())
    replica = make_service(database, openbao)
    # Both "replicas" have every key of the record cached before the erasure.
    records.get(ADMIN, tenant, a.record_id, deadline=_dl())
    replica.get(ADMIN, tenant, a.record_id, deadline=_dl())
    snap = _snapshot(database, a.record_id)
    assert all(snap[t] for t in ("records", "data_keys", "record_values"))

    receipt = records.delete(ADMIN, tenant, a.record_id, deadline=_dl())
    assert sorted(receipt.data_key_ids) == sorted(str(r["id"]) for r in snap["data_keys"])

    # 1. The database refuses the restored rows.
    with pytest.raises(Exception, match="erased") as exc:
        _restore(database, snap)
    assert "IntegrityError" in type(exc.value).__name__

    # 2. Even with the guards bypassed and every row back, nothing decrypts, from either replica.
    _drop_guards(database)
    try:
        _restore(database, snap)
        for service in (records, replica, make_service(database, openbao)):
            with pytest.raises(Erased):
                service.get(ADMIN, tenant, a.record_id, deadline=_dl())
            with pytest.raises(Erased):
                service.get(TOKENS, tenant, a.record_id, deadline=_dl())
    finally:
        with database.engine.begin() as conn:
            for table in _TABLES:
                col = "id" if table == "records" else "record_id"
                conn.execute(text(f"DELETE FROM {table} WHERE {col} = :r"), {"r": a.record_id})
        _restore_guards(database)
