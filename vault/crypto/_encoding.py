"""Unambiguous encodings shared by the AAD, blind-index and token code."""

from __future__ import annotations

import os
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
        out += os.urandom(width + 8).translate(_DIGIT_OF_BYTE, _REJECTED)
    return out[:width].decode("ascii")


def uuid7() -> uuid.UUID:
    """A version-7 UUID (RFC 9562): 48-bit Unix time in milliseconds, 12 bits of its
    sub-millisecond fraction, then 62 random bits (see ``_uuid7_int``).

    Used for record and data-key ids so that B-tree inserts land at the right edge of the
    primary-key indexes instead of on random pages (far fewer pages written per batch). The
    time it carries is no more than a record's created_at (to 244 ns); tokens stay fully
    random. Built as
    one integer (a batch write makes six per record: the ``uuid.UUID`` constructor's checks
    were a tenth of its sealing time).
    """
    return _uuid_of(_uuid7_int())


def uuid7_id() -> tuple[uuid.UUID, str, bytes]:
    """A :func:`uuid7` with its text (``str()`` of it) and its 16 bytes, made together: a
    new data key needs all three (its row, its cache entry, its AAD)."""
    value = _uuid7_int()
    raw = value.to_bytes(16, "big")
    h = raw.hex()
    return _uuid_of(value), f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", raw


def _uuid7_int() -> int:
    """RFC 9562 section 6.2, method 3: ``rand_a`` holds the time's sub-millisecond fraction
    (12 bits, steps of 244 ns), so the ids one thread makes sort in the order it made them,
    not only by millisecond: B-tree inserts then land strictly at the right edge, where pages
    can be filled (migration 0015). ``rand_b`` stays 62 random bits: ids are unique, and as
    hard to guess, whatever the clock does."""
    ms, sub = divmod(time.time_ns(), 1_000_000)
    rand = int.from_bytes(os.urandom(8), "big")
    return (
        (ms & _MS_MASK) << 80
        | _VERSION_7
        | (sub * 4096 // 1_000_000) << 64  # rand_a: 12 bits of the sub-millisecond fraction
        | _VARIANT_RFC
        | (rand & _RAND_B_MASK)  # rand_b: 62 bits
    )


def _uuid_of(value: int) -> uuid.UUID:
    out = _new_uuid(uuid.UUID)
    _set_attr(out, "int", value)
    _set_attr(out, "is_safe", _SAFE_UNKNOWN)
    return out


_MS_MASK = (1 << 48) - 1
_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0b10 << 62
_RAND_B_MASK = (1 << 62) - 1
# uuid.UUID is immutable (__setattr__ refuses): its own constructor sets its two slots so
_new_uuid = object.__new__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown  # an enum member looked up once (a property in 3.11)
_set_attr = object.__setattr__
