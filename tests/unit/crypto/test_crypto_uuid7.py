"""uuid7 (record and data-key ids) is an RFC 9562 version-7 UUID: time first, then randomness;
it is built as one integer (issue 13), so its layout is checked field by field."""

from __future__ import annotations

import itertools
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


def test_random_bits_vary_and_the_sub_millisecond_field_follows_the_clock() -> None:
    ids = [uuid7().int for _ in range(256)]
    rand_b = {i & ((1 << 62) - 1) for i in ids}
    assert len(rand_b) == 256
    # rand_a is the sub-millisecond fraction (RFC 9562 6.2, method 3): within a millisecond
    # it never goes back
    for a, b in itertools.pairwise(ids):
        if a >> 80 == b >> 80:
            assert (a >> 64) & 0xFFF <= (b >> 64) & 0xFFF


def test_ids_made_in_a_row_sort_in_that_order() -> None:
    """Issue 13: the primary keys on these ids are filled to 100% (migration 0015), which
    only pays while inserts land at the right edge: ids a thread makes one after another
    sort in that order (the clock's 244 ns steps are shorter than one call)."""
    ids = [str(uuid7()) for _ in range(5000)]
    in_order = sum(a < b for a, b in itertools.pairwise(ids))
    assert in_order >= 0.99 * (len(ids) - 1)


def test_later_milliseconds_sort_later() -> None:
    first = uuid7()
    time.sleep(0.003)
    assert str(uuid7()) > str(first)
