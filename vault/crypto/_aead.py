"""Value ciphertexts and locally wrapped data keys (AES-256-GCM), in versioned byte formats.

Value ciphertext, format version 1 (``VALUE_V1``)::

    offset  size  field
    0       1     format version = 0x01
    1       16    data key id (UUID bytes)
    17      12    nonce (random, 96 bits)
    29      n+16  AES-256-GCM ciphertext of the UTF-8 value, then the 16-byte tag

    AAD = b"cvault/value/v1" || lp(tenant) || lp(record id) || lp(field name) || data key id

Wrapped data key, format version 1 (``DEK_V1``), made locally under a tenant key::

    0       1     format version = 0x01
    1       16    tenant key id (UUID bytes)
    17      12    nonce
    29      48    AES-256-GCM ciphertext of the 32-byte data key, then the tag

    AAD = b"cvault/dek/v1" || data key id || lp(tenant) || lp(record id) || lp(field class)

``lp`` is a 4-byte big-endian length prefix. The AAD makes a value copied to another tenant,
record, field or data key fail to authenticate. Lengths are checked before parsing; every failure
raises :class:`vault.errors.DecryptionFailed`, which says nothing about why.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.crypto._encoding import lp
from vault.errors import DecryptionFailed

VALUE_V1 = 1
DEK_V1 = 1
KEY_BYTES = 32
_NONCE = 12
_TAG = 16
_HEADER = 1 + 16 + _NONCE
#: values are at most 65,536 characters (4 bytes each in UTF-8) by the schema's hard cap
MAX_VALUE_CIPHERTEXT = _HEADER + 4 * 65_536 + _TAG
_WRAPPED_DEK_LEN = _HEADER + KEY_BYTES + _TAG


@dataclass(frozen=True, slots=True)
class DataKey:
    """A plaintext data key. The key bytes never appear in a repr."""

    id: uuid.UUID
    key: bytes = field(repr=False)


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def _value_aad(tenant: str, record_id: str, field_name: str, dek_id: bytes) -> bytes:
    return b"cvault/value/v1" + lp(tenant) + lp(record_id) + lp(field_name) + dek_id


def _dek_aad(dek_id: bytes, tenant: str, record_id: str, field_class: str) -> bytes:
    return b"cvault/dek/v1" + dek_id + lp(tenant) + lp(record_id) + lp(field_class)


def seal_value(dek: DataKey, tenant: str, record_id: str, field_name: str, value: str) -> bytes:
    """Encrypt one field value under its record's data key."""
    return ValueSealer(dek).seal(tenant, record_id, field_name, value)


class ValueSealer:
    """:func:`seal_value` for many values under one data key (the cipher is set up once):
    the same format and AAD, byte for byte. Holds the key: never log or keep it."""

    __slots__ = ("_aes", "_header", "_id")

    def __init__(self, dek: DataKey) -> None:
        self._aes = AESGCM(dek.key)
        self._id = dek.id.bytes
        self._header = bytes([VALUE_V1]) + self._id

    def __repr__(self) -> str:
        return "ValueSealer(...)"

    def seal(self, tenant: str, record_id: str, field_name: str, value: str) -> bytes:
        nonce = os.urandom(_NONCE)
        aad = _value_aad(tenant, record_id, field_name, self._id)
        return self._header + nonce + self._aes.encrypt(nonce, value.encode("utf-8"), aad)


def value_key_id(ciphertext: bytes) -> uuid.UUID:
    """The data key id a value ciphertext names (checked against its row before use)."""
    if len(ciphertext) < _HEADER + _TAG or len(ciphertext) > MAX_VALUE_CIPHERTEXT:
        raise DecryptionFailed()
    if ciphertext[0] != VALUE_V1:
        raise DecryptionFailed()
    return uuid.UUID(bytes=ciphertext[1:17])


def open_value(
    dek: DataKey, tenant: str, record_id: str, field_name: str, ciphertext: bytes
) -> str:
    """Decrypt one value; any mismatch of key, place or bytes raises DecryptionFailed."""
    if value_key_id(ciphertext) != dek.id:
        raise DecryptionFailed()
    nonce = ciphertext[17:_HEADER]
    aad = _value_aad(tenant, record_id, field_name, dek.id.bytes)
    try:
        plain = AESGCM(dek.key).decrypt(nonce, ciphertext[_HEADER:], aad)
    except InvalidTag:
        raise DecryptionFailed() from None
    return plain.decode("utf-8")


def wrap_data_key(
    tenant_key_id: uuid.UUID,
    tenant_key: bytes,
    dek: DataKey,
    *,
    tenant: str,
    record_id: str,
    field_class: str,
) -> bytes:
    """Wrap a data key locally under a tenant key (no key-server call)."""
    nonce = os.urandom(_NONCE)
    aad = _dek_aad(dek.id.bytes, tenant, record_id, field_class)
    ct = AESGCM(tenant_key).encrypt(nonce, dek.key, aad)
    return bytes([DEK_V1]) + tenant_key_id.bytes + nonce + ct


def wrapped_dek_tenant_key_id(wrapped: bytes) -> uuid.UUID:
    if len(wrapped) != _WRAPPED_DEK_LEN or wrapped[0] != DEK_V1:
        raise DecryptionFailed()
    return uuid.UUID(bytes=wrapped[1:17])


def unwrap_data_key(
    tenant_key_id: uuid.UUID,
    tenant_key: bytes,
    dek_id: uuid.UUID,
    wrapped: bytes,
    *,
    tenant: str,
    record_id: str,
    field_class: str,
) -> DataKey:
    """Unwrap a data key; a wrong tenant key, place or id raises DecryptionFailed."""
    if wrapped_dek_tenant_key_id(wrapped) != tenant_key_id:
        raise DecryptionFailed()
    aad = _dek_aad(dek_id.bytes, tenant, record_id, field_class)
    try:
        key = AESGCM(tenant_key).decrypt(wrapped[17:_HEADER], wrapped[_HEADER:], aad)
    except InvalidTag:
        raise DecryptionFailed() from None
    return DataKey(dek_id, key)
