"""Field-level erasure (issue 16): a value cleared or replaced by UpdateRecord is crypto-shredded
like an erased record. Its data key is destroyed and tombstoned in the same transaction, the
rest of its class moves to a new key, the response and the audit row say what was destroyed,
and `shred-report` lists the record until backups from before are dead. Before, the data key
of the record's class lived on, so a restored pre-update row still decrypted."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.support import ADMIN, make_service, sample_record
from vault.deadline import Deadline
from vault.errors import VaultServiceError
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.service import RecordInput, RecordsService
from vault.service.operations import shred_report
from vault.service.services import Services
from vault.service.tokens import TokenError, TokenizeItem
from vault.storage import Database

pytestmark = pytest.mark.openbao

TWO_EMAILS = """\
schema_version: 1
fields:
  email:      {class: email, searchable: true}
  work_email: {class: email}
  full_name:  {class: name}
"""


def _dl() -> Deadline:
    return Deadline.after(60)


@pytest.fixture
def svc(database: Database, openbao: OpenBaoDevServer) -> RecordsService:
    return make_service(database, openbao)


def _rows(db: Database, table: str, record_id: str) -> list[dict[str, Any]]:
    """The rows as the service sees them: ids as strings (PostgreSQL hands raw uuid columns
    back as UUID objects)."""
    with db.engine.connect() as conn:
        return [
            {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in r._mapping.items()}
            for r in conn.execute(
                text(f"SELECT * FROM {table} WHERE record_id = :r"), {"r": record_id}
            )
        ]


def _restore_values(db: Database, rows: list[dict[str, Any]]) -> None:
    """Write pre-update value rows back over the live ones, as a partial restore would."""
    with db.engine.begin() as conn:
        for row in rows:
            conn.execute(
                text("DELETE FROM record_values WHERE record_id = :r AND field_name = :f"),
                {"r": row["record_id"], "f": row["field_name"]},
            )
            conn.execute(
                text(
                    "INSERT INTO record_values (record_id, field_name, field_class, "
                    "data_key_id, ciphertext, token) VALUES (:record_id, :field_name, "
                    ":field_class, :data_key_id, :ciphertext, :token)"
                ),
                row,
            )


def _read(svc: RecordsService, tenant: str, rid: str) -> dict[str, str]:
    view = svc.get(ADMIN, tenant, rid, deadline=_dl())
    return {n: f.value for n, f in view.fields.items()}


@pytest.mark.parametrize("how", ["replace", "clear"])
def test_pre_update_values_written_back_no_longer_decrypt(
    svc: RecordsService, database: Database, openbao: OpenBaoDevServer, tenant: str, how: str
) -> None:
    record = sample_record(7)
    [stored] = svc.create(ADMIN, tenant, [RecordInput(record)], deadline=_dl())
    rid = stored.record_id
    before_values = _rows(database, "record_values", rid)
    before_keys = {r["field_class"]: r for r in _rows(database, "data_keys", rid)}
    changes: dict[str, Any] = (
        {"set_fields": {"phone": "+442079460001"}}
        if how == "replace"
        else {"set_fields": {}, "clear_fields": ["phone"]}
    )
    updated = svc.update(ADMIN, tenant, rid, expected_version=1, deadline=_dl(), **changes)
    assert updated.destroyed_data_key_ids == (before_keys["phone"]["id"],)
    after_keys = {r["field_class"]: r["id"] for r in _rows(database, "data_keys", rid)}
    if how == "replace":
        assert after_keys["phone"] != before_keys["phone"]["id"]
    else:
        assert "phone" not in after_keys
    assert after_keys["email"] == before_keys["email"]["id"]  # other classes untouched

    # the old phone row written back: its key is destroyed, so it does not decrypt; here and
    # in a fresh process (empty caches)
    _restore_values(database, [r for r in before_values if r["field_name"] == "phone"])
    for reader in (svc, make_service(database, openbao)):
        with pytest.raises(VaultServiceError) as info:
            _read(reader, tenant, rid)
        assert info.value.reason in ("erased", "decryption_failed")
    # nor can the old key row come back: its id is tombstoned
    old = before_keys["phone"]
    if how == "replace":
        with database.engine.begin() as conn:
            conn.execute(
                text("DELETE FROM data_keys WHERE record_id = :r AND field_class = 'phone'"),
                {"r": rid},
            )
    with pytest.raises(Exception, match="erased"), database.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO data_keys (id, tenant, record_id, field_class, tenant_key_id, "
                "wrapped, created_at) VALUES (:id, :tenant, :record_id, :field_class, "
                ":tenant_key_id, :wrapped, :created_at)"
            ),
            old,
        )


def test_the_audit_row_and_the_shred_report_say_what_was_destroyed(
    svc: RecordsService, database: Database, tenant: str
) -> None:
    [stored] = svc.create(ADMIN, tenant, [RecordInput(sample_record(8))], deadline=_dl())
    svc.update(
        ADMIN,
        tenant,
        stored.record_id,
        expected_version=1,
        set_fields={"email": "changed@example.com"},
        clear_fields=["card_number"],
        deadline=_dl(),
    )
    with database.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT action, reason, field_classes FROM audit_events WHERE tenant = :t "
                "AND action = 'record.write' ORDER BY seq DESC"
            ),
            {"t": tenant},
        ).first()
    assert row is not None
    assert row.reason == "data_keys_destroyed"
    assert "card_number" in row.field_classes
    assert "email" in row.field_classes
    report = shred_report(database, {}, datetime.now(UTC) - timedelta(minutes=5))
    mine = [s for s in report if s.record_id == stored.record_id]
    assert [s.kind for s in mine] == ["fields"]
    assert not mine[0].complete  # nothing rotated since


def test_the_rest_of_a_class_moves_to_a_new_key(
    database: Database, openbao: OpenBaoDevServer, tenant: str, tmp_path: Path
) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text(TWO_EMAILS)
    svc = make_service(database, openbao, schema=schema)
    tokens = Services.over(svc.core).tokens
    fields = {"email": "old.home@example.com", "work_email": "ada@work.example", "full_name": "A"}
    [stored] = svc.create(ADMIN, tenant, [RecordInput(fields)], deadline=_dl())
    rid = stored.record_id
    old_token, work_token = tokens.tokenize(
        ADMIN,
        tenant,
        [
            TokenizeItem("Old.Home@example.com", "email", record_id=rid),
            TokenizeItem("ada@work.example", "email", record_id=rid),
        ],
        deadline=_dl(),
    )
    updated = svc.update(
        ADMIN,
        tenant,
        rid,
        expected_version=1,
        set_fields={"email": "new.home@example.com"},
        deadline=_dl(),
    )
    assert len(updated.destroyed_data_key_ids) == 1
    assert updated.tokens == stored.tokens  # a field's token stays the same
    fresh = make_service(database, openbao, schema=schema)
    assert _read(fresh, tenant, rid) == {
        "email": "new.home@example.com",
        "work_email": "ada@work.example",
        "full_name": "A",
    }
    keys = {r["data_key_id"] for r in _rows(database, "record_values", rid)}
    assert updated.destroyed_data_key_ids[0] not in keys
    again = Services.over(fresh.core).tokens
    old_rev, work_rev = again.reveal(ADMIN, tenant, [old_token, work_token], deadline=_dl())
    # the token of the replaced value went with it; the other value's token was re-sealed
    assert old_rev.error is TokenError.ERASED
    assert work_rev.value == "ada@work.example"


def test_adding_a_field_keeps_the_class_key(svc: RecordsService, tenant: str) -> None:
    [stored] = svc.create(
        ADMIN,
        tenant,
        [RecordInput({"email": f"{uuid.uuid4().hex[:8]}@example.com"})],
        deadline=_dl(),
    )
    updated = svc.update(
        ADMIN,
        tenant,
        stored.record_id,
        expected_version=1,
        set_fields={"phone": "+442079460002"},
        deadline=_dl(),
    )
    assert updated.destroyed_data_key_ids == ()


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    db = Database(db_url)
    yield db
    db.dispose()
