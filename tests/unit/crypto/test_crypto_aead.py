"""The value and data-key formats: round trips, frozen vectors, and every way to break them."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault import crypto
from vault.crypto import DataKey
from vault.errors import DecryptionFailed

TENANT = "acme"
RECORD = "6f1c1f38-0c7e-4a53-9a3f-2f4e1f0b9d10"
KEY = bytes(range(32))
DEK_ID = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
TK = bytes(range(32, 64))
TK_ID = uuid.UUID("ffeeddcc-bbaa-9988-7766-554433221100")

# Frozen vectors: written by format version 1. They must decrypt forever.
VALUE_V1 = bytes.fromhex(
    "0100112233445566778899aabbccddeeff6465666768696a6b6c6d6e6f097fbf46358620fb52033c8dfa87f66e"
    "fd44162dbeaba79837cf15b3a51c7369"
)
DEK_V1 = bytes.fromhex(
    "01ffeeddccbbaa99887766554433221100c8c9cacbcccdcecfd0d1d2d3a548ace1b753a4c5569689e6ee750bdb"
    "81d5216dc5e76ee645ec3fe1d56e7ba74b245774055a5b1898c3f91c53f6930f"
)


def test_frozen_value_vector_v1_decrypts() -> None:
    dek = DataKey(DEK_ID, KEY)
    assert crypto.open_value(dek, TENANT, RECORD, "full_name", VALUE_V1) == "Ada Lovelace ✓"


def test_frozen_wrapped_dek_vector_v1_unwraps() -> None:
    dek = crypto.unwrap_data_key(
        TK_ID, TK, DEK_ID, DEK_V1, tenant=TENANT, record_id=RECORD, field_class="name"
    )
    assert dek.key == KEY


@given(st.text(max_size=300))
def test_value_round_trip_arbitrary_unicode(value: str) -> None:
    # surrogates cannot be encoded; the schema refuses them before this layer
    value = value.encode("utf-8", "replace").decode("utf-8")
    dek = DataKey(uuid.uuid4(), crypto.new_key())
    ct = crypto.seal_value(dek, TENANT, RECORD, "notes", value)
    assert crypto.open_value(dek, TENANT, RECORD, "notes", ct) == value


def test_nonces_are_random() -> None:
    dek = DataKey(uuid.uuid4(), crypto.new_key())
    a = crypto.seal_value(dek, TENANT, RECORD, "f", "same")
    b = crypto.seal_value(dek, TENANT, RECORD, "f", "same")
    assert a != b


@pytest.mark.parametrize(
    ("tenant", "record", "field"),
    [
        ("other", RECORD, "full_name"),
        (TENANT, "00000000-0000-4000-8000-000000000000", "full_name"),
        (TENANT, RECORD, "address"),
    ],
    ids=["other-tenant", "other-record", "other-field"],
)
def test_value_moved_elsewhere_fails(tenant: str, record: str, field: str) -> None:
    with pytest.raises(DecryptionFailed):
        crypto.open_value(DataKey(DEK_ID, KEY), tenant, record, field, VALUE_V1)


def test_value_under_other_data_key_fails() -> None:
    with pytest.raises(DecryptionFailed):
        crypto.open_value(DataKey(uuid.uuid4(), KEY), TENANT, RECORD, "full_name", VALUE_V1)


@pytest.mark.parametrize("position", range(len(VALUE_V1)))
def test_every_flipped_byte_fails(position: int) -> None:
    broken = bytearray(VALUE_V1)
    broken[position] ^= 0x01
    with pytest.raises(DecryptionFailed):
        crypto.open_value(DataKey(DEK_ID, KEY), TENANT, RECORD, "full_name", bytes(broken))


@pytest.mark.parametrize("length", [0, 1, 17, 29, 44, len(VALUE_V1) - 1])
def test_truncated_fails(length: int) -> None:
    with pytest.raises(DecryptionFailed):
        crypto.open_value(DataKey(DEK_ID, KEY), TENANT, RECORD, "full_name", VALUE_V1[:length])


def test_unknown_format_version_fails() -> None:
    with pytest.raises(DecryptionFailed):
        crypto.open_value(DataKey(DEK_ID, KEY), TENANT, RECORD, "full_name", b"\x02" + VALUE_V1[1:])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tenant": "other", "record_id": RECORD, "field_class": "name"},
        {"tenant": TENANT, "record_id": RECORD, "field_class": "email"},
        {"tenant": TENANT, "record_id": "x", "field_class": "name"},
    ],
)
def test_wrapped_dek_elsewhere_fails(kwargs: dict[str, str]) -> None:
    with pytest.raises(DecryptionFailed):
        crypto.unwrap_data_key(TK_ID, TK, DEK_ID, DEK_V1, **kwargs)


@pytest.mark.parametrize("position", range(len(DEK_V1)))
def test_wrapped_dek_flipped_byte_fails(position: int) -> None:
    broken = bytearray(DEK_V1)
    broken[position] ^= 0x80
    with pytest.raises(DecryptionFailed):
        crypto.unwrap_data_key(
            TK_ID, TK, DEK_ID, bytes(broken), tenant=TENANT, record_id=RECORD, field_class="name"
        )


def test_key_bytes_not_in_repr() -> None:
    dek = DataKey(DEK_ID, KEY)
    assert KEY.hex() not in repr(dek)
    assert repr(KEY) not in repr(dek)


def test_decryption_failed_says_nothing() -> None:
    assert str(DecryptionFailed()) == "decryption failed"


def test_blind_index_keyed_and_field_bound() -> None:
    a = crypto.blind_index(KEY, "email", b"ada@example.com")
    assert a == crypto.blind_index(KEY, "email", b"ada@example.com")
    assert a != crypto.blind_index(TK, "email", b"ada@example.com")
    assert a != crypto.blind_index(KEY, "work_email", b"ada@example.com")
    assert len(a) == 32


def test_random_tokens_shape_and_uniqueness() -> None:
    tokens = {crypto.random_token("email") for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(crypto.TOKEN_RE.fullmatch(t) for t in tokens)


# Frozen vectors of format version 2 (written since migration 0014): no key id in the bytes.
VALUE_V2 = bytes.fromhex(
    "026465666768696a6b6c6d6e6f097fbf46358620fb52033c8dfa87f66e44a812f4a3b87d20f1ccdc0cf58bc86d"
)
DEK_V2 = bytes.fromhex(
    "02c8c9cacbcccdcecfd0d1d2d3a548ace1b753a4c5569689e6ee750bdb81d5216dc5e76ee645ec3fe1d56e7ba7"
    "cba1b8c6aefd5a37dfceea3fc7f5f935"
)


def test_frozen_vectors_v2_open() -> None:
    dek = DataKey(DEK_ID, KEY)
    assert crypto.open_value(dek, TENANT, RECORD, "full_name", VALUE_V2) == "Ada Lovelace ✓"
    unwrapped = crypto.unwrap_data_key(
        TK_ID, TK, DEK_ID, DEK_V2, tenant=TENANT, record_id=RECORD, field_class="name"
    )
    assert unwrapped.key == KEY


def test_writers_use_version_2_without_the_key_ids() -> None:
    dek = DataKey(DEK_ID, KEY)
    ct = crypto.seal_value(dek, TENANT, RECORD, "full_name", "Ada")
    assert ct[0] == crypto.VALUE_V2
    assert len(ct) == 1 + 12 + 3 + 16
    assert DEK_ID.bytes not in ct
    pooled = crypto.OwnerSealer(dek, TENANT, RECORD).seal("full_name", "Ada")
    assert crypto.open_value(dek, TENANT, RECORD, "full_name", pooled) == "Ada"
    wrapped = crypto.wrap_data_key(
        TK_ID, TK, dek, tenant=TENANT, record_id=RECORD, field_class="name"
    )
    assert wrapped[0] == crypto.DEK_V2
    assert len(wrapped) == 61
    assert TK_ID.bytes not in wrapped


@pytest.mark.parametrize(
    ("dek_id", "tenant", "record", "field"),
    [
        (uuid.uuid4(), TENANT, RECORD, "full_name"),  # the row names another data key
        (DEK_ID, "other", RECORD, "full_name"),
        (DEK_ID, TENANT, "x", "full_name"),
        (DEK_ID, TENANT, RECORD, "email"),
    ],
)
def test_value_v2_elsewhere_fails(dek_id: uuid.UUID, tenant: str, record: str, field: str) -> None:
    with pytest.raises(DecryptionFailed):
        crypto.open_value(DataKey(dek_id, KEY), tenant, record, field, VALUE_V2)


@pytest.mark.parametrize(
    ("tk_id", "kwargs"),
    [
        (uuid.uuid4(), {"tenant": TENANT, "record_id": RECORD, "field_class": "name"}),
        (TK_ID, {"tenant": "other", "record_id": RECORD, "field_class": "name"}),
        (TK_ID, {"tenant": TENANT, "record_id": "x", "field_class": "name"}),
        (TK_ID, {"tenant": TENANT, "record_id": RECORD, "field_class": "email"}),
    ],
)
def test_wrapped_dek_v2_elsewhere_fails(tk_id: uuid.UUID, kwargs: dict[str, str]) -> None:
    with pytest.raises(DecryptionFailed):
        crypto.unwrap_data_key(tk_id, TK, DEK_ID, DEK_V2, **kwargs)
    with pytest.raises(DecryptionFailed):  # the same bytes as another data key's
        crypto.unwrap_data_key(TK_ID, TK, uuid.uuid4(), DEK_V2, **{**kwargs, "tenant": TENANT})


@pytest.mark.parametrize("position", range(len(DEK_V2)))
def test_v2_flipped_byte_fails(position: int) -> None:
    value, wrapped = bytearray(VALUE_V2), bytearray(DEK_V2)
    value[min(position, len(value) - 1)] ^= 0x80
    wrapped[position] ^= 0x80
    with pytest.raises(DecryptionFailed):
        crypto.open_value(DataKey(DEK_ID, KEY), TENANT, RECORD, "full_name", bytes(value))
    with pytest.raises(DecryptionFailed):
        crypto.unwrap_data_key(
            TK_ID, TK, DEK_ID, bytes(wrapped), tenant=TENANT, record_id=RECORD, field_class="name"
        )


@pytest.mark.parametrize("length", [0, 1, 13, 28, len(VALUE_V2) - 1])
def test_truncated_v2_fails(length: int) -> None:
    with pytest.raises(DecryptionFailed):
        crypto.open_value(DataKey(DEK_ID, KEY), TENANT, RECORD, "full_name", VALUE_V2[:length])
    with pytest.raises(DecryptionFailed):
        crypto.unwrap_data_key(
            TK_ID, TK, DEK_ID, DEK_V2[:length], tenant=TENANT, record_id=RECORD, field_class="name"
        )
