"""Erasure reaches every token (issue 10, point 9), over gRPC against real OpenBao, on SQLite and
PostgreSQL: after DeleteRecord, standalone tokens of the customer's values (random and
deterministic ones of any scope, TokenizeText spans) reveal as ``erased`` like the record's
linked tokens, the receipt counts them, no ciphertext of them is left in the table, a row
restored from a backup stays erased, and ``shred-report`` names the token-pool keys. Before,
only the linked tokens were erased: the others kept revealing the value."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from tests.support import TEST_PURPOSE, sample_record
from vault.audit import AuditEvent
from vault.client import TokenItem, VaultClient
from vault.deadline import Deadline
from vault.errors import NotFound
from vault.keys import FieldKeyInfo
from vault.service import RecordsService
from vault.service.operations import KeyOpRefused, pools_to_shred, shred_pool, shred_report
from vault.storage import Database

pytestmark = pytest.mark.openbao

PHONE = "+442079460958"


def _token_rows(db: Database, tenant: str) -> dict[str, dict[str, Any]]:
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM tokens WHERE tenant = :t"), {"t": tenant})
        # ids as strings, as the service sees them (raw uuid columns come back as UUID objects)
        return {
            r.token: {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in r._mapping.items()}
            for r in rows
        }


def _database_bytes(db: Database) -> bytes:
    """Everything the database holds: the SQLite files, or every PostgreSQL table as text."""
    if db.dialect == "sqlite":
        path = Path(db.engine.url.database or "")
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    chunks = []
    with db.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT t::text FROM "{table}" t')):
                chunks.append(str(row[0]).encode("utf-8"))
    return b"\n".join(chunks)


def test_erasure_reaches_standalone_and_text_tokens_of_the_customers_values(
    admin_client: VaultClient, records: RecordsService, database: Database, tenant: str
) -> None:
    email = sample_record(7001)["email"]  # a value the suite's log and audit scan looks for
    record = admin_client.create_record(tenant, {"email": email, "phone": PHONE})
    det, rnd, phone_tok = admin_client.tokenize(
        tenant,
        [
            TokenItem(email, "email", "deterministic", scope="training-2026"),
            TokenItem(email.upper(), "email", "random"),
            TokenItem("+44 20 7946 0958", "phone", "random"),
        ],
    )
    chat = f"Hi, I changed my address to {email} last week, please update it."
    [redacted], _ = admin_client.tokenize_text(tenant, [chat], scope="chat-7")
    [span] = [s for s in redacted.spans if s.field_class == "email"]
    [other] = admin_client.tokenize(tenant, [TokenItem("someone.else@example.com", "email")])
    before = admin_client.reveal(tenant, [det, rnd, phone_tok, span.token], purpose=TEST_PURPOSE)
    assert [r.value for r in before] == [email, email.upper(), "+44 20 7946 0958", email]
    restorable = _token_rows(database, tenant)

    receipt = admin_client.delete_record(tenant, record.record_id)

    after = admin_client.reveal(tenant, [det, rnd, phone_tok, span.token], purpose=TEST_PURPOSE)
    assert [(r.error, r.value) for r in after] == [("erased", "")] * 4
    assert receipt.tokens_erased == 4
    shown = admin_client.reveal_text(tenant, redacted.text, purpose=TEST_PURPOSE)
    assert email not in shown.text
    assert span.token in shown.text
    assert [t.error for t in shown.tokens] == ["erased"]
    [kept] = admin_client.reveal(tenant, [other], purpose=TEST_PURPOSE)
    assert kept.value == "someone.else@example.com"
    # the same receipt again; the values' ciphertexts are gone from the token table
    assert admin_client.delete_record(tenant, record.record_id) == receipt
    rows = _token_rows(database, tenant)
    assert all(bytes(rows[t]["ciphertext"]) == b"" for t in (det, rnd, phone_tok, span.token))
    assert all(rows[t]["fingerprint"] is not None for t in rows)
    blob = _database_bytes(database)
    assert not [v for v in (email, email.upper(), email.encode().hex()) if v.encode() in blob]

    # a backup's copies of the rows written back: still erased (the fingerprint's tombstone)
    with database.engine.begin() as conn:
        for t in (det, rnd, span.token):
            conn.execute(
                text("UPDATE tokens SET ciphertext = :c WHERE tenant = :t AND token = :k"),
                {"c": restorable[t]["ciphertext"], "t": tenant, "k": t},
            )
    again = admin_client.reveal(tenant, [det, rnd, span.token], purpose=TEST_PURPOSE)
    assert [r.error for r in again] == ["erased"] * 3

    # shred-report: the token-pool keys that held them are named until destroyed
    pool_keys = {str(restorable[t]["data_key_id"]) for t in (rnd, phone_tok)}
    info = {
        c: FieldKeyInfo(f"k-{c}", 2, 2, 2, versions=(2,), created={2: 0.0})
        for c in ("email", "phone")
    }
    since = datetime.now(UTC) - timedelta(hours=1)
    [status] = [
        s for s in shred_report(records.core.db, info, since) if s.record_id == record.record_id
    ]
    assert not status.complete
    pool_lines = [line for line in status.pending if "token-pool data key" in line]
    assert {k for k in pool_keys if any(k in line for line in pool_lines)} == pool_keys


def test_a_value_tokenized_again_after_the_erasure_reveals(
    admin_client: VaultClient, tenant: str
) -> None:
    email = sample_record(7002)["email"]
    record = admin_client.create_record(tenant, {"email": email})
    item = TokenItem(email, "email", "deterministic", scope="crm")
    [first] = admin_client.tokenize(tenant, [item])
    admin_client.delete_record(tenant, record.record_id)
    [second] = admin_client.tokenize(tenant, [item])
    assert second == first
    [revealed] = admin_client.reveal(tenant, [second], purpose=TEST_PURPOSE)
    assert revealed.value == email


def test_shred_pools_destroys_the_pool_keys_of_an_erased_value_and_keeps_the_others(
    admin_client: VaultClient, records: RecordsService, database: Database, tenant: str
) -> None:
    """``cvault keys shred-pools``: the pool key that sealed an erased value's standalone token
    is destroyed, the pool's other live tokens are re-sealed under a new key and still reveal,
    and the shred report no longer lists the pool. A pool a running server may still seal
    under (younger than the pools' age limit) is refused. Before, nothing destroyed a pool
    key: the report stayed "not complete" for good."""
    email = sample_record(7003)["email"]
    record = admin_client.create_record(tenant, {"email": email})
    [gone, other] = admin_client.tokenize(
        tenant, [TokenItem(email, "email"), TokenItem("kept.customer@example.com", "email")]
    )
    pool = str(_token_rows(database, tenant)[gone]["data_key_id"])
    assert _token_rows(database, tenant)[other]["data_key_id"] == pool
    admin_client.delete_record(tenant, record.record_id)
    since = datetime.now(UTC) - timedelta(hours=1)
    assert (tenant, pool) in pools_to_shred(database, since)
    event = AuditEvent("admin.keys.shred-pool", "allowed", "operator:t", "operator", "", tenant)
    with pytest.raises(KeyOpRefused, match="may still be current"):
        shred_pool(records.core, tenant, pool, events=[event], deadline=Deadline.after(30))

    with database.engine.begin() as conn:  # a day and more later: no server seals under it
        conn.execute(
            text("UPDATE data_keys SET created_at = :t WHERE id = :k"),
            {"t": datetime.now(UTC) - timedelta(days=2), "k": pool},
        )
    done = shred_pool(records.core, tenant, pool, events=[event], deadline=Deadline.after(30))

    assert (done.destroyed_key_id, done.tokens_resealed) == (pool, 1)
    rows = _token_rows(database, tenant)
    assert rows[other]["data_key_id"] == done.new_key_id
    assert rows[gone]["data_key_id"] == pool  # emptied, and its key is gone
    [kept] = admin_client.reveal(tenant, [other], purpose=TEST_PURPOSE)
    assert kept.value == "kept.customer@example.com"
    assert (tenant, pool) not in pools_to_shred(database, since)
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM data_keys WHERE id = :k"), {"k": pool}).all() == []
    info = {"email": FieldKeyInfo("k-email", 2, 2, 2, versions=(2,), created={2: 0.0})}
    [status] = [s for s in shred_report(database, info, since) if s.record_id == record.record_id]
    assert not [line for line in status.pending if "token-pool data key" in line]
    with pytest.raises(NotFound):  # a record's key is not a pool's
        shred_pool(
            records.core,
            tenant,
            str(rows[other]["token"]),
            events=[event],
            deadline=Deadline.after(30),
        )
