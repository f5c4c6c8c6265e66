"""Token minting. Tokens carry no information about the value they stand for: random tokens
are random, and deterministic ones are keyed digests that only the index key can recompute."""

from __future__ import annotations

import hashlib
import hmac
import re

from vault.crypto._encoding import _BASE62, lp, random_base62

TOKEN_RE = re.compile(r"tok_[a-z_]{1,32}_[0-9A-Za-z]{22}")

#: base62 digits of every opaque token (at least 130 bits)
TOKEN_DIGITS = 22
_MODULUS = 62**TOKEN_DIGITS


def random_token(field_class: str) -> str:
    """``tok_<class>_<22 uniformly random base62 digits>``."""
    return f"tok_{field_class}_{random_base62(128)}"


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
    if exact and view:
        raise ValueError("a token is either exact (free text) or a view token, not both")
    label = (
        b"cvault/dtok-exact/v1" if exact else b"cvault/dtok-view/v1" if view else b"cvault/dtok/v1"
    )
    digest = hmac.new(
        index_key, label + lp(field_class) + lp(scope) + normalized, hashlib.sha256
    ).digest()
    n = int.from_bytes(digest[:24], "big") % _MODULUS
    digits = []
    for _ in range(TOKEN_DIGITS):
        n, d = divmod(n, 62)
        digits.append(_BASE62[d])
    return f"tok_{field_class}_{''.join(digits)}"
