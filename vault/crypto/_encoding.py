"""Unambiguous encodings shared by the AAD, blind-index and token code."""

from __future__ import annotations

import os
import secrets
import time
import uuid

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def lp(value: str | bytes) -> bytes:
    """Length-prefixed bytes (4-byte big-endian length), so concatenations cannot collide."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return len(raw).to_bytes(4, "big") + raw


# Bytes 0..247 map to base62 digits by ``b % 62`` (247 = 4 * 62 - 1, so each digit is equally
# likely); bytes 248..255 are dropped. Both steps run in C through bytes.translate.
_DIGIT_OF_BYTE = bytes(ord(_BASE62[b % 62]) if b < 248 else 0 for b in range(256))
_REJECTED = bytes(range(248, 256))


def random_base62(bits: int = 128) -> str:
    """Uniformly random base62 digits carrying at least ``bits`` bits (22 digits for 128)."""
    width = -(-bits * 1000 // 5954)  # ceil(bits / log2(62)); log2(62) ~= 5.954
    out = b""
    while len(out) < width:
        out += secrets.token_bytes(width + 8).translate(_DIGIT_OF_BYTE, _REJECTED)
    return out[:width].decode("ascii")


def uuid7() -> uuid.UUID:
    """A version-7 UUID (RFC 9562): 48-bit Unix time in milliseconds, then 74 random bits.

    Used for record and data-key ids so that B-tree inserts land at the right edge of the
    primary-key indexes instead of on random pages (far fewer pages written per batch). The
    time it carries is no more than a record's created_at; tokens stay fully random. Built as
    one integer (a batch write makes six per record: the ``uuid.UUID`` constructor's checks
    were a tenth of its sealing time).
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, of which 74 are used
    value = (
        (ms & _MS_MASK) << 80
        | _VERSION_7
        | ((rand >> 62) & 0xFFF) << 64  # rand_a: 12 bits
        | _VARIANT_RFC
        | (rand & _RAND_B_MASK)  # rand_b: 62 bits
    )
    out = _new_uuid(uuid.UUID)
    _set_attr(out, "int", value)
    _set_attr(out, "is_safe", uuid.SafeUUID.unknown)
    return out


_MS_MASK = (1 << 48) - 1
_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0b10 << 62
_RAND_B_MASK = (1 << 62) - 1
# uuid.UUID is immutable (__setattr__ refuses): its own constructor sets its two slots so
_new_uuid = object.__new__
_set_attr = object.__setattr__
