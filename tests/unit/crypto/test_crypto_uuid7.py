"""uuid7 (record and data-key ids) is an RFC 9562 version-7 UUID: time first, then randomness;
it is built as one integer (issue 13), so its layout is checked field by field."""

from __future__ import annotations

import pickle
import time
import uuid

from vault.crypto import uuid7


def test_layout_version_variant_and_time() -> None:
    before = time.time_ns() // 1_000_000
    ids = [uuid7() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for u in ids:
        assert u.version == 7
        assert u.variant == uuid.RFC_4122
        assert before <= u.int >> 80 <= after
        assert uuid.UUID(str(u)) == u
        assert hash(uuid.UUID(bytes=u.bytes)) == hash(u)
    assert pickle.loads(pickle.dumps(ids[0])) == ids[0]  # noqa: S301 - our own bytes


def test_random_bits_vary_in_both_random_fields() -> None:
    ids = [uuid7().int for _ in range(256)]
    rand_a = {(i >> 64) & 0xFFF for i in ids}
    rand_b = {i & ((1 << 62) - 1) for i in ids}
    assert len(rand_a) > 200  # 12 bits: a few collisions among 256 draws, not many
    assert len(rand_b) == 256


def test_later_milliseconds_sort_later() -> None:
    first = uuid7()
    time.sleep(0.003)
    assert str(uuid7()) > str(first)
