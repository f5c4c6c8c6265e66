"""Value ciphertexts and locally wrapped data keys (AES-256-GCM), in versioned byte formats.

Value ciphertext, format version 2 (``VALUE_V2``, written since migration 0014)::

    offset  size  field
    0       1     format version = 0x02
    1       12    nonce (random, 96 bits)
    13      n+16  AES-256-GCM ciphertext of the UTF-8 value, then the 16-byte tag

    AAD = b"cvault/value/v2" || lp(tenant) || lp(record id) || lp(field name) || data key id

The data key id is not in the bytes: the reader takes it from the value's row (the key it
unwraps) and the AAD binds the value to it, so a value moved to another key still fails.

Value ciphertext, format version 1 (``VALUE_V1``, still read)::

    offset  size  field
    0       1     format version = 0x01
    1       16    data key id (UUID bytes)
    17      12    nonce (random, 96 bits)
    29      n+16  AES-256-GCM ciphertext of the UTF-8 value, then the 16-byte tag

    AAD = b"cvault/value/v1" || lp(tenant) || lp(record id) || lp(field name) || data key id

Wrapped data key, format version 2 (``DEK_V2``), made locally under a tenant key::

    0       1     format version = 0x02
    1       12    nonce
    13      48    AES-256-GCM ciphertext of the 32-byte data key, then the tag

    AAD = b"cvault/dek/v2" || data key id || tenant key id || lp(tenant) || lp(record id)
          || lp(field class)

The tenant key id comes from the data key's row (``tenant_key_id``) and is bound by the AAD.

Wrapped data key, format version 1 (``DEK_V1``, still read)::

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

from vault.crypto._encoding import lp, uuid7_id
from vault.errors import DecryptionFailed

VALUE_V1 = 1
VALUE_V2 = 2
DEK_V1 = 1
DEK_V2 = 2
KEY_BYTES = 32
_NONCE = 12
_TAG = 16
_HEADER = 1 + 16 + _NONCE
_HEADER_V2 = 1 + _NONCE
#: values are at most 65,536 characters (4 bytes each in UTF-8) by the schema's hard cap
MAX_VALUE_CIPHERTEXT = _HEADER + 4 * 65_536 + _TAG
_WRAPPED_DEK_LEN = _HEADER + KEY_BYTES + _TAG
_WRAPPED_DEK_V2_LEN = _HEADER_V2 + KEY_BYTES + _TAG
_DEK_V2_BYTE = bytes([DEK_V2])


@dataclass(frozen=True, slots=True)
class DataKey:
    """A plaintext data key. The key bytes never appear in a repr."""

    id: uuid.UUID
    key: bytes = field(repr=False)


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def _value_aad(
    tenant: str, record_id: str, field_name: str, dek_id: bytes, version: int = VALUE_V2
) -> bytes:
    label = b"cvault/value/v2" if version == VALUE_V2 else b"cvault/value/v1"
    return label + lp(tenant) + lp(record_id) + lp(field_name) + dek_id


def _dek_aad(dek_id: bytes, tenant_lp: bytes, record_id: str, field_class: str) -> bytes:
    """The data-key AAD of ``DEK_V1``; ``tenant_lp`` is ``lp(tenant)``."""
    return b"cvault/dek/v1" + dek_id + tenant_lp + lp(record_id) + lp(field_class)


def _dek_aad_v2(
    dek_id: bytes, tenant_key_id: bytes, tenant_lp: bytes, record_id: str, field_class: str
) -> bytes:
    """The data-key AAD of ``DEK_V2``: the tenant key id is bound here, not stored."""
    return b"cvault/dek/v2" + dek_id + tenant_key_id + tenant_lp + lp(record_id) + lp(field_class)


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
        self._header = bytes([VALUE_V2])

    def __repr__(self) -> str:
        return "ValueSealer(...)"

    def seal(self, tenant: str, record_id: str, field_name: str, value: str) -> bytes:
        nonce = os.urandom(_NONCE)
        aad = _value_aad(tenant, record_id, field_name, self._id)
        return self._header + nonce + self._aes.encrypt(nonce, value.encode("utf-8"), aad)


def value_key_id(ciphertext: bytes) -> uuid.UUID | None:
    """The data key id a ``VALUE_V1`` ciphertext names (checked against its row before use);
    None for ``VALUE_V2``, which names none (its row does)."""
    if len(ciphertext) > MAX_VALUE_CIPHERTEXT:
        raise DecryptionFailed()
    if ciphertext[:1] == bytes([VALUE_V2]) and len(ciphertext) >= _HEADER_V2 + _TAG:
        return None
    if ciphertext[:1] != bytes([VALUE_V1]) or len(ciphertext) < _HEADER + _TAG:
        raise DecryptionFailed()
    return uuid.UUID(bytes=ciphertext[1:17])


def open_value(
    dek: DataKey, tenant: str, record_id: str, field_name: str, ciphertext: bytes
) -> str:
    """Decrypt one value (``VALUE_V2`` or ``VALUE_V1``) under ``dek``, its row's data key; any
    mismatch of key, place or bytes raises DecryptionFailed."""
    named = value_key_id(ciphertext)
    if named is None:
        nonce, body, version = ciphertext[1:_HEADER_V2], ciphertext[_HEADER_V2:], VALUE_V2
    elif named == dek.id:
        nonce, body, version = ciphertext[17:_HEADER], ciphertext[_HEADER:], VALUE_V1
    else:
        raise DecryptionFailed()
    aad = _value_aad(tenant, record_id, field_name, dek.id.bytes, version)
    try:
        plain = AESGCM(dek.key).decrypt(nonce, body, aad)
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
    return DataKeyWrapper(tenant_key_id, tenant_key, tenant).wrap(dek, record_id, field_class)


class DataKeyWrapper:
    """:func:`wrap_data_key` for many data keys of one tenant under one tenant key (the cipher
    and the fixed parts are set up once): the same format and AAD, byte for byte. Holds the
    tenant key: never log or keep it."""

    __slots__ = ("_aes", "_classes", "_tenant", "_tk_id")

    def __init__(self, tenant_key_id: uuid.UUID, tenant_key: bytes, tenant: str) -> None:
        self._aes = AESGCM(tenant_key)
        self._tk_id = tenant_key_id.bytes
        self._tenant = lp(tenant)
        self._classes: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return "DataKeyWrapper(...)"

    def wrap(self, dek: DataKey, record_id: str, field_class: str) -> bytes:
        nonce = os.urandom(_NONCE)
        aad = _dek_aad_v2(dek.id.bytes, self._tk_id, self._tenant, record_id, field_class)
        return bytes([DEK_V2]) + nonce + self._aes.encrypt(nonce, dek.key, aad)

    def new_key(self, owner_lp: bytes, field_class: str) -> tuple[DataKey, str, bytes]:
        """A new data key (UUIDv7 id) of the owner whose ``lp(owner id)`` is ``owner_lp``: the
        key, its id as text, and the key wrapped as :meth:`wrap` wraps it, byte for byte (the
        parts a batch write repeats are encoded once)."""
        dek_id, text, raw = uuid7_id()
        key = os.urandom(KEY_BYTES)
        class_lp = self._classes.get(field_class)
        if class_lp is None:
            class_lp = self._classes[field_class] = lp(field_class)
        aad = b"cvault/dek/v2" + raw + self._tk_id + self._tenant + owner_lp + class_lp
        nonce = os.urandom(_NONCE)
        return DataKey(dek_id, key), text, _DEK_V2_BYTE + nonce + self._aes.encrypt(nonce, key, aad)


def wrapped_dek_tenant_key_id(wrapped: bytes) -> uuid.UUID | None:
    """The tenant key id a ``DEK_V1`` wrapped key names; None for ``DEK_V2`` (its row does)."""
    if len(wrapped) == _WRAPPED_DEK_V2_LEN and wrapped[0] == DEK_V2:
        return None
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
    """Unwrap a data key (``DEK_V2`` or ``DEK_V1``) under its row's tenant key; a wrong tenant
    key, place or id raises DecryptionFailed."""
    named = wrapped_dek_tenant_key_id(wrapped)
    if named is None:
        nonce, body = wrapped[1:_HEADER_V2], wrapped[_HEADER_V2:]
        aad = _dek_aad_v2(dek_id.bytes, tenant_key_id.bytes, lp(tenant), record_id, field_class)
    elif named == tenant_key_id:
        nonce, body = wrapped[17:_HEADER], wrapped[_HEADER:]
        aad = _dek_aad(dek_id.bytes, lp(tenant), record_id, field_class)
    else:
        raise DecryptionFailed()
    try:
        key = AESGCM(tenant_key).decrypt(nonce, body, aad)
    except InvalidTag:
        raise DecryptionFailed() from None
    return DataKey(dek_id, key)
