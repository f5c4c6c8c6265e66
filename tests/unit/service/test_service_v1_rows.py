"""Rows written before format version 2 (values and wrapped data keys naming their key ids,
``VALUE_V1``/``DEK_V1``) still read after the writers moved to version 2: a record whose rows
are put back as version 1 reads the same from a fresh service (cold key caches)."""

from __future__ import annotations

import os
import uuid

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.support import ADMIN, sample_record
from tests.unit.service.service_support import DL, Vault
from vault import crypto
from vault.service import RecordInput


def lp(value: str) -> bytes:
    """The formats' length prefix (4 bytes, big-endian) of a UTF-8 string."""
    raw = value.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw


def _as_v1(svc: Vault, tenant: str, record_id: str) -> None:
    """Re-encrypt the record's rows in format version 1, as a release before 0014 wrote them."""
    keys = svc.sql(
        "SELECT id, field_class, tenant_key_id, wrapped FROM data_keys WHERE record_id = :r",
        r=record_id,
    )
    tenant_keys = svc.keyring.by_ids(tenant, {str(k.tenant_key_id) for k in keys}, deadline=DL)
    deks: dict[str, bytes] = {}
    for k in keys:
        dek_id, tk_id = uuid.UUID(str(k.id)), uuid.UUID(str(k.tenant_key_id))
        tk = tenant_keys[str(tk_id)].key
        dek = crypto.unwrap_data_key(
            tk_id, tk, dek_id, bytes(k.wrapped), tenant=tenant, record_id=record_id,
            field_class=k.field_class,
        )  # fmt: skip
        deks[str(dek_id)] = dek.key
        aad = b"cvault/dek/v1" + dek_id.bytes + lp(tenant) + lp(record_id) + lp(k.field_class)
        nonce = os.urandom(12)
        wrapped = b"\x01" + tk_id.bytes + nonce + AESGCM(tk).encrypt(nonce, dek.key, aad)
        svc.sql("UPDATE data_keys SET wrapped = :w WHERE id = :i", w=wrapped, i=str(dek_id))
    values = svc.sql(
        "SELECT field_name, data_key_id, ciphertext FROM record_values WHERE record_id = :r",
        r=record_id,
    )
    for v in values:
        dek_id = uuid.UUID(str(v.data_key_id))
        key = deks[str(dek_id)]
        plain = crypto.open_value(
            crypto.DataKey(dek_id, key), tenant, record_id, v.field_name, bytes(v.ciphertext)
        )
        aad = b"cvault/value/v1" + lp(tenant) + lp(record_id) + lp(v.field_name) + dek_id.bytes
        nonce = os.urandom(12)
        ct = b"\x01" + dek_id.bytes + nonce + AESGCM(key).encrypt(nonce, plain.encode(), aad)
        svc.sql(
            "UPDATE record_values SET ciphertext = :c WHERE record_id = :r AND field_name = :f",
            c=ct,
            r=record_id,
            f=v.field_name,
        )


def test_version_1_rows_still_read(svc: Vault, tenant: str) -> None:
    values = sample_record(7100)
    (rec,) = svc.records.create(ADMIN, tenant, [RecordInput(values)], deadline=DL)
    stored = svc.sql("SELECT ciphertext FROM record_values WHERE record_id = :r", r=rec.record_id)
    assert {bytes(s.ciphertext)[0] for s in stored} == {crypto.VALUE_V2}
    _as_v1(svc, tenant, rec.record_id)
    fresh = svc.restart()
    view = fresh.records.get(ADMIN, tenant, rec.record_id, deadline=DL)
    assert {n: f.value for n, f in view.fields.items()} == values
    stored = fresh.sql("SELECT ciphertext FROM record_values WHERE record_id = :r", r=rec.record_id)
    assert {bytes(s.ciphertext)[0] for s in stored} == {crypto.VALUE_V1}
