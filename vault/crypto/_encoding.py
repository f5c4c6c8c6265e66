"""Unambiguous encodings shared by the AAD, blind-index and token code."""

from __future__ import annotations

import secrets

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def lp(value: str | bytes) -> bytes:
    """Length-prefixed bytes (4-byte big-endian length), so concatenations cannot collide."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return len(raw).to_bytes(4, "big") + raw


def base62(raw: bytes, width: int = 22) -> str:
    """Fixed-width base62 of ``raw`` (22 characters hold 128 bits)."""
    n = int.from_bytes(raw, "big")
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(_BASE62[r])
    if n:
        raise ValueError("value too large for width")
    return "".join(reversed(out))


def random_base62(bits: int = 128) -> str:
    return base62(secrets.token_bytes(bits // 8))
