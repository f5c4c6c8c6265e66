"""The in-memory KeyWrapper keeps the real contract, so upper-layer unit tests mean something."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.deadline import Deadline
from vault.errors import DecryptionFailed, KeyServerPermissionDenied, KeyServerUnavailable
from vault.keys import KeyWrapper, UnwrapItem, WrapItem
from vault.testing import InMemoryKeyWrapper


def test_satisfies_the_protocol() -> None:
    wrapper: KeyWrapper = InMemoryKeyWrapper()
    assert wrapper.healthy()


@given(keys=st.lists(st.binary(max_size=64), max_size=5), aad=st.binary(max_size=32))
def test_round_trip(keys: list[bytes], aad: bytes) -> None:
    fake = InMemoryKeyWrapper()
    wrapped = fake.wrap("email", [WrapItem(k, aad) for k in keys])
    assert all(w.startswith("fake:v1:") for w in wrapped)
    assert fake.unwrap("email", [UnwrapItem(w, aad) for w in wrapped]) == keys


def test_wrapping_is_randomized() -> None:
    fake = InMemoryKeyWrapper()
    a, b = fake.wrap("email", [WrapItem(b"k" * 32), WrapItem(b"k" * 32)])
    assert a != b


def test_wrong_associated_data_fails() -> None:
    fake = InMemoryKeyWrapper()
    [w] = fake.wrap("email", [WrapItem(b"k" * 32, b"tenant-a")])
    with pytest.raises(DecryptionFailed):
        fake.unwrap("email", [UnwrapItem(w, b"tenant-b")])
    with pytest.raises(DecryptionFailed):
        fake.unwrap("email", [UnwrapItem(w)])


def test_other_class_key_fails() -> None:
    fake = InMemoryKeyWrapper()
    [w] = fake.wrap("email", [WrapItem(b"k" * 32)])
    with pytest.raises(DecryptionFailed):
        fake.unwrap("phone", [UnwrapItem(w)])


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda w: w[:-2] + ("A" if w[-2] != "A" else "B") + w[-1], id="flip"),
        pytest.param(lambda w: w[:20], id="truncate"),
        pytest.param(lambda w: w.replace("fake:v1:", "fake:v9:"), id="unknown-version"),
        pytest.param(lambda w: w.replace("fake:v1:", "vault:v1:"), id="foreign-prefix"),
        pytest.param(lambda w: "fake:v1:not base64!", id="garbage"),
    ],
)
def test_tampered_fails(mangle: Callable[[str], str]) -> None:
    fake = InMemoryKeyWrapper()
    [w] = fake.wrap("email", [WrapItem(b"k" * 32)])
    with pytest.raises(DecryptionFailed):
        fake.unwrap("email", [UnwrapItem(mangle(w))])


def test_unknown_class_is_permission_denied() -> None:
    fake = InMemoryKeyWrapper(["email"])
    with pytest.raises(KeyServerPermissionDenied):
        fake.wrap("phone", [WrapItem(b"k" * 32)])


def test_calls_are_counted() -> None:
    fake = InMemoryKeyWrapper()
    [w] = fake.wrap("email", [WrapItem(b"k" * 32)])
    fake.unwrap("email", [UnwrapItem(w), UnwrapItem(w)])
    assert fake.calls == [("wrap", "email", 1), ("unwrap", "email", 2)]


def test_fail_with_simulates_an_outage() -> None:
    fake = InMemoryKeyWrapper()
    fake.fail_with = KeyServerUnavailable
    with pytest.raises(KeyServerUnavailable):
        fake.wrap("email", [WrapItem(b"k" * 32)])
    assert not fake.healthy()
    fake.fail_with = None
    assert len(fake.wrap("email", [WrapItem(b"k" * 32)])) == 1


def test_expired_deadline_is_unavailable() -> None:
    with pytest.raises(KeyServerUnavailable):
        InMemoryKeyWrapper().wrap("email", [WrapItem(b"k")], deadline=Deadline.after(0))


def test_rotation_keeps_old_versions_readable() -> None:
    fake = InMemoryKeyWrapper()
    [old] = fake.wrap("email", [WrapItem(b"old")])
    assert fake.rotate("email") == 2
    [new] = fake.wrap("email", [WrapItem(b"new")])
    assert new.startswith("fake:v2:")
    assert fake.unwrap("email", [UnwrapItem(old), UnwrapItem(new)]) == [b"old", b"new"]


def test_repr_shows_no_key_material() -> None:
    fake = InMemoryKeyWrapper()
    fake.wrap("email", [WrapItem(b"k")])
    key = fake._keys["email"][0]
    assert key.hex() not in repr(fake)
    assert repr(key) not in repr(fake)
