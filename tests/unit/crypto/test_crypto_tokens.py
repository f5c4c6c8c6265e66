"""Token minting: frozen vectors of deterministic tokens and fingerprints (existing tokens must
resolve forever), and the batch forms Tokenize uses giving exactly what the one-value forms
give."""

from __future__ import annotations

import hmac
import uuid
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault import crypto
from vault.crypto import DataKey
from vault.crypto._tokens import KeyedHmac
from vault.errors import DecryptionFailed

KEY = bytes(range(32))

# Frozen vectors, written by the first implementation (hmac.new and one divmod per digit).
DETERMINISTIC_V1 = [
    ("email", "", b"ada@example.com", False, False, "tok_email_xXph38hLK1yhYywEaD2yWV"),
    ("email", "crm", b"ada@example.com", False, False, "tok_email_TlJmqCvImZgovsiqNZ7y16"),
    ("name", "s", "Zoë Núñez".encode(), True, False, "tok_name_5DsDL5rFgdlI7oc0zyBiFl"),
    ("phone", "x", b"+442079460958", False, True, "tok_phone_xVZSalv0ifMHdQa7Ooqjkr"),
    (
        "card_number",
        "",
        b"4111111111111111",
        False,
        False,
        "tok_card_number_KuxfqQHchuKlKIAIdSRtiw",
    ),
]
FINGERPRINT_V1 = [
    ("email", b"ada@example.com", "aae73ed8a5237c69ecd53a464d2e81d85efcef64de40f6ea5e537de4f535de29"),
    ("name", "Zoë".encode(), "f55db325f41acab673baa7c904195300b12f799b335daefafd7fdc1950634f94"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("field_class", "scope", "normalized", "exact", "view", "token"), DETERMINISTIC_V1
)
def test_frozen_deterministic_tokens(
    field_class: str, scope: str, normalized: bytes, exact: bool, view: bool, token: str
) -> None:
    made = crypto.deterministic_token(KEY, field_class, scope, normalized, exact=exact, view=view)
    assert made == token
    if not view:
        minter = crypto.DeterministicTokens(KEY)
        assert minter.token(field_class, scope, normalized, exact=exact) == token


@pytest.mark.parametrize(("field_class", "normalized", "digest"), FINGERPRINT_V1)
def test_frozen_fingerprints(field_class: str, normalized: bytes, digest: str) -> None:
    assert crypto.value_fingerprint(KEY, field_class, normalized).hex() == digest
    assert crypto.ValueFingerprints(KEY).of(field_class, normalized).hex() == digest


@given(
    key=st.binary(min_size=0, max_size=200),
    message=st.binary(max_size=300),
)
def test_keyed_hmac_is_hmac_sha256(key: bytes, message: bytes) -> None:
    # keys longer than the block are hashed first, shorter ones padded (RFC 2104)
    assert KeyedHmac(key).digest(message) == hmac.digest(key, message, "sha256")


@given(
    scope=st.text(max_size=20),
    values=st.lists(st.binary(max_size=80), min_size=1, max_size=8),
    exact=st.booleans(),
)
def test_batch_forms_equal_the_one_value_forms(
    scope: str, values: list[bytes], exact: bool
) -> None:
    key = crypto.new_key()
    minter, fingerprints = crypto.DeterministicTokens(key), crypto.ValueFingerprints(key)
    for v in values:  # the same minter again and again: no state carried between values
        assert minter.token("email", scope, v, exact=exact) == crypto.deterministic_token(
            key, "email", scope, v, exact=exact
        )
        assert fingerprints.of("phone", v) == crypto.value_fingerprint(key, "phone", v)


def test_random_tokens_shape_uniqueness_and_digits() -> None:
    tokens = crypto.random_tokens("card_number", 5000)
    assert len(tokens) == 5000 == len(set(tokens))
    assert all(crypto.TOKEN_RE.fullmatch(t) and t.startswith("tok_card_number_") for t in tokens)
    # every base62 digit turns up about as often as the others (5000 x 22 / 62 = 1774 each)
    counts = Counter("".join(t.rsplit("_", 1)[1] for t in tokens))
    assert len(counts) == 62
    assert all(1400 < n < 2150 for n in counts.values())
    assert crypto.random_tokens("email", 0) == []


def test_owner_sealer_seals_as_seal_value_does() -> None:
    dek = DataKey(uuid.uuid4(), crypto.new_key())
    sealer = crypto.OwnerSealer(dek, "acme", "pool-1")
    a = sealer.seal("token:tok_email_A", "ada@example.com")
    b = sealer.seal("token:tok_email_B", "Zoë ✓")
    assert crypto.open_value(dek, "acme", "pool-1", "token:tok_email_A", a) == "ada@example.com"
    assert crypto.open_value(dek, "acme", "pool-1", "token:tok_email_B", b) == "Zoë ✓"
    assert sealer.seal("token:tok_email_A", "ada@example.com") != a  # a fresh nonce each time
    for tenant, owner, field in (
        ("other", "pool-1", "token:tok_email_A"),
        ("acme", "pool-2", "token:tok_email_A"),
        ("acme", "pool-1", "token:tok_email_B"),
    ):
        with pytest.raises(DecryptionFailed):
            crypto.open_value(dek, tenant, owner, field, a)


def test_batch_helpers_never_show_their_keys() -> None:
    dek = DataKey(uuid.uuid4(), crypto.new_key())
    for obj in (
        KeyedHmac(dek.key),
        crypto.DeterministicTokens(dek.key),
        crypto.ValueFingerprints(dek.key),
        crypto.OwnerSealer(dek, "acme", "pool"),
    ):
        assert dek.key.hex() not in repr(obj)
        assert str(dek.key) not in repr(obj)
