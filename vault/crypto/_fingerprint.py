"""Value fingerprints: the keyed, scope-independent digest every token row carries, so that an
erasure finds every token of a customer's value (random, deterministic in any scope, text
tokens) without opening any of them.

``fingerprint = HMAC-SHA256(index key, b"cvault/vfp/v1" || lp(field class) || normalized)``.
The label is the fingerprint's own: no token, view token or blind index is computed under it,
so a fingerprint never equals anything a caller can obtain, and it names no scope, so the
same value fingerprints alike whatever scope or kind its token was made in. Keyed by the
tenant's index key for the class: nobody without the key (which OpenBao wraps) can test a
guess against it, and tenants cannot be linked.
"""

from __future__ import annotations

import hashlib
import hmac

from vault.crypto._encoding import lp
from vault.crypto._tokens import KeyedHmac

#: the fingerprint's domain-separation label
FINGERPRINT_LABEL = b"cvault/vfp/v1"


def value_fingerprint(index_key: bytes, field_class: str, normalized: bytes) -> bytes:
    """The 32-byte fingerprint of a normalized value of ``field_class`` under ``index_key``."""
    return hmac.new(
        index_key, FINGERPRINT_LABEL + lp(field_class) + normalized, hashlib.sha256
    ).digest()


class ValueFingerprints:
    """:func:`value_fingerprint` for many values under one index key: the same bytes, with the
    key's HMAC state and each class's prefix made once. Holds key material: never log or keep
    it beyond the call."""

    __slots__ = ("_mac", "_prefixes")

    def __init__(self, index_key: bytes) -> None:
        self._mac = KeyedHmac(index_key)
        self._prefixes: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return "ValueFingerprints(...)"

    def of(self, field_class: str, normalized: bytes) -> bytes:
        prefix = self._prefixes.get(field_class)
        if prefix is None:
            prefix = self._prefixes[field_class] = FINGERPRINT_LABEL + lp(field_class)
        return self._mac.digest(prefix + normalized)
