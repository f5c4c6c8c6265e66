"""Key caches are bounded by entries, age and uses."""

from __future__ import annotations

import pytest

from vault.keys import CacheLimits, KeyCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_max_entries_evicts_least_recently_used() -> None:
    cache: KeyCache[bytes] = KeyCache(CacheLimits(max_entries=2))
    cache.put("a", b"1")
    cache.put("b", b"2")
    assert cache.get("a") == b"1"  # a is now the most recently used
    cache.put("c", b"3")
    assert cache.get("b") is None
    assert cache.get("a") == b"1"
    assert cache.get("c") == b"3"
    assert len(cache) == 2


def test_max_age() -> None:
    clock = Clock()
    cache: KeyCache[bytes] = KeyCache(CacheLimits(max_age_seconds=10), clock=clock)
    cache.put("a", b"1")
    clock.now = 9.9
    assert cache.get("a") == b"1"
    clock.now = 10.1
    assert cache.get("a") is None
    assert len(cache) == 0


def test_max_uses() -> None:
    cache: KeyCache[bytes] = KeyCache(CacheLimits(max_uses=3))
    cache.put("a", b"1")
    assert [cache.get("a") for _ in range(4)] == [b"1", b"1", b"1", None]


def test_values_never_in_repr() -> None:
    cache: KeyCache[bytes] = KeyCache(CacheLimits())
    cache.put("a", b"\x01secret-key-bytes")
    assert "secret-key-bytes" not in repr(cache)


@pytest.mark.parametrize("limits", [{"max_entries": 0}, {"max_age_seconds": 0}, {"max_uses": 0}])
def test_limits_must_be_positive(limits: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        CacheLimits(**limits)  # type: ignore[arg-type]
