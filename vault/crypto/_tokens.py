"""Token minting. Tokens carry no information about the value they stand for: random tokens
are random, and deterministic ones are keyed digests that only the index key can recompute.

The batch forms (:func:`random_tokens`, :class:`DeterministicTokens`, :class:`KeyedHmac`,
:class:`OwnerSealer`) give the same strings and bytes as the one-value forms; they only do
once per call what those do once per value (draw randomness, pad and hash the key, set up the
cipher and the fixed part of the AAD).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.crypto._aead import VALUE_V2, DataKey
from vault.crypto._encoding import _BASE62, _DIGIT_OF_BYTE, _REJECTED, lp, random_base62

TOKEN_RE = re.compile(r"tok_[a-z_]{1,32}_[0-9A-Za-z]{22}")

#: base62 digits of every opaque token (at least 130 bits)
TOKEN_DIGITS = 22
_MODULUS = 62**TOKEN_DIGITS
#: two base62 digits per entry, the less significant first (the order tokens are written in)
_PAIRS = tuple(_BASE62[i % 62] + _BASE62[i // 62] for i in range(62 * 62))
_LABEL = b"cvault/dtok/v1"
_LABEL_EXACT = b"cvault/dtok-exact/v1"
_LABEL_VIEW = b"cvault/dtok-view/v1"
#: HMAC-SHA256 block size and pads (RFC 2104), as byte translation tables
_BLOCK = 64
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))
_NONCE = 12


def random_token(field_class: str) -> str:
    """``tok_<class>_<22 uniformly random base62 digits>``."""
    return f"tok_{field_class}_{random_base62(128)}"


def random_tokens(field_class: str, count: int) -> list[str]:
    """``count`` tokens as :func:`random_token` makes them, from one draw of randomness: each
    accepted byte is one uniform digit, independent of the others, so cutting the digits into
    tokens of 22 gives independent uniform tokens."""
    need = count * TOKEN_DIGITS
    digits = b""
    while len(digits) < need:
        # 248 of 256 byte values are kept: ask for a little more than needed
        more = need - len(digits)
        digits += secrets.token_bytes(more + more // 16 + 16).translate(_DIGIT_OF_BYTE, _REJECTED)
    text = digits[:need].decode("ascii")
    prefix = f"tok_{field_class}_"
    return [prefix + text[i : i + TOKEN_DIGITS] for i in range(0, need, TOKEN_DIGITS)]


class KeyedHmac:
    """HMAC-SHA256 (RFC 2104) of many messages under one key, equal to ``hmac.digest(key, m,
    "sha256")``: the two padded-key hash states are made once and copied per message (the
    ``hmac`` module pads and hashes the key again for every message). Holds key material:
    never log or keep it beyond the call."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        padded = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(padded.translate(_IPAD))
        self._outer = hashlib.sha256(padded.translate(_OPAD))

    def __repr__(self) -> str:
        return "KeyedHmac(...)"

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _label(exact: bool, view: bool) -> bytes:
    if exact and view:
        raise ValueError("a token is either exact (free text) or a view token, not both")
    return _LABEL_EXACT if exact else _LABEL_VIEW if view else _LABEL


def _digits(digest: bytes) -> str:
    """The 22 base62 digits of a digest's first 24 bytes mod 62^22, least significant first."""
    n = int.from_bytes(digest[:24], "big") % _MODULUS
    pairs = []
    for _ in range(TOKEN_DIGITS // 2):
        n, d = divmod(n, 62 * 62)
        pairs.append(_PAIRS[d])
    return "".join(pairs)


def deterministic_token(
    index_key: bytes,
    field_class: str,
    scope: str,
    normalized: bytes,
    *,
    exact: bool = False,
    view: bool = False,
) -> str:
    """``tok_<class>_<22 base62 digits of HMAC-SHA256(index key, class, scope, value)>``.

    The same normalized value gives the same token for the same key (tenant, class, index-key
    version) and scope; another scope or tenant gives an unrelated one. Looks exactly like a
    random token. 24 digest bytes reduced mod 62^22: the bias is below 2^-60.

    ``exact`` (free text): keyed on the exact string under a label of its own, so that a token
    found in text always stands for exactly the spelling that was there.

    ``view`` (tokenized record views): a label of its own, so that nobody can make a view token
    with Tokenize: a caller who may tokenize any guess in any scope could otherwise test guesses
    against the view tokens of a record (a dictionary attack on dates of birth, say).
    """
    prefix = _label(exact, view) + lp(field_class) + lp(scope)
    return f"tok_{field_class}_{_digits(KeyedHmac(index_key).digest(prefix + normalized))}"


class DeterministicTokens:
    """:func:`deterministic_token` (never ``view``) for many values under one index key: the
    same strings, with the key's HMAC state and each (class, scope) prefix made once. Holds
    key material: never log or keep it beyond the call."""

    __slots__ = ("_mac", "_prefixes")

    def __init__(self, index_key: bytes) -> None:
        self._mac = KeyedHmac(index_key)
        self._prefixes: dict[tuple[str, str, bool], tuple[bytes, str]] = {}

    def __repr__(self) -> str:
        return "DeterministicTokens(...)"

    def token(self, field_class: str, scope: str, normalized: bytes, *, exact: bool) -> str:
        fixed = self._prefixes.get((field_class, scope, exact))
        if fixed is None:
            fixed = self._prefixes[(field_class, scope, exact)] = (
                _label(exact, False) + lp(field_class) + lp(scope),
                f"tok_{field_class}_",
            )
        return fixed[1] + _digits(self._mac.digest(fixed[0] + normalized))


_VALUE_V2_BYTE = bytes([VALUE_V2])


def owner_aad_of(tenant: str, owner: str) -> bytes:
    """The part of a value's AAD fixed by its tenant and owner (record or token pool)."""
    return b"cvault/value/v2" + lp(tenant) + lp(owner)


class OwnerSealer:
    """Seals many values under one data key for one tenant and key owner (a record or a token
    pool), each bound to its own field name: byte for byte the value ciphertext of
    ``vault.crypto.seal_value(dek, tenant, owner, field_name, value)`` (format ``VALUE_V2``,
    AAD = ``b"cvault/value/v2" || lp(tenant) || lp(owner) || lp(field name) || data key id``),
    with the cipher and the AAD's fixed part set up once. Holds the key: never log or keep it
    beyond the call."""

    __slots__ = ("_aad", "_encrypt", "_header", "_id")

    def __init__(
        self, dek: DataKey, tenant: str, owner: str, *, owner_aad: bytes | None = None
    ) -> None:
        """``owner_aad``: :func:`owner_aad` of (tenant, owner), when the caller made it for
        several keys of one owner."""
        self._encrypt = AESGCM(dek.key).encrypt
        self._id = dek.id.bytes
        self._header = _VALUE_V2_BYTE
        self._aad = owner_aad or owner_aad_of(tenant, owner)

    def __repr__(self) -> str:
        return "OwnerSealer(...)"

    def seal(self, field_name: str, value: str) -> bytes:
        nonce = os.urandom(_NONCE)
        name = field_name.encode("utf-8")
        aad = self._aad + len(name).to_bytes(4, "big") + name + self._id
        return self._header + nonce + self._encrypt(nonce, value.encode("utf-8"), aad)
