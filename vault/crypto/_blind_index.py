"""Blind indexes: keyed digests of normalized values for exact-match search.

``digest = HMAC-SHA256(index key, b"cvault/bidx/v1" || lp(field name) || normalized value)``.
The index key is per (tenant, field class, version), so equal values in different tenants give
unrelated digests, and nobody without the key (which OpenBao wraps) can test a guess.
"""

from __future__ import annotations

import hashlib
import hmac

from vault.crypto._encoding import lp


def blind_index(index_key: bytes, field_name: str, normalized: bytes) -> bytes:
    return hmac.digest(index_key, b"cvault/bidx/v1" + lp(field_name) + normalized, hashlib.sha256)
