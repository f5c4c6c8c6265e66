"""KeyManager wraps keys with their binding inside the plaintext (so transit rewrap can rotate
them) and still reads keys wrapped the earlier way (binding as associated data)."""

from __future__ import annotations

import pytest

from vault.deadline import Deadline
from vault.errors import DecryptionFailed
from vault.keys import KeyManager, WrapItem, WrappedRef
from vault.keys._manager import BOUND_PREFIX, bind, unbind
from vault.testing.fake_kms import InMemoryKeyWrapper


def dl() -> Deadline:
    return Deadline.after(10)


def test_new_keys_are_bound_and_unwrap_only_with_their_binding() -> None:
    wrapper = InMemoryKeyWrapper()
    [new] = KeyManager(wrapper).new_keys("email", [b"row-1"], deadline=dl())
    assert new.wrapped.startswith(BOUND_PREFIX)
    fresh = KeyManager(wrapper)  # empty cache: a real unwrap
    assert fresh.unwrap("email", [WrappedRef("a", new.wrapped, b"row-1")], deadline=dl()) == {
        "a": new.key
    }
    with pytest.raises(DecryptionFailed):  # the blob moved to another row
        KeyManager(wrapper).unwrap("email", [WrappedRef("b", new.wrapped, b"row-2")], deadline=dl())


def test_keys_wrapped_before_the_bound_format_still_unwrap() -> None:
    wrapper = InMemoryKeyWrapper()
    key = bytes(range(32))
    [legacy] = wrapper.wrap("email", [WrapItem(key, b"row-1")])
    assert not legacy.startswith(BOUND_PREFIX)
    manager = KeyManager(wrapper)
    assert manager.unwrap("email", [WrappedRef("a", legacy, b"row-1")], deadline=dl()) == {"a": key}
    with pytest.raises(DecryptionFailed):
        KeyManager(wrapper).unwrap("email", [WrappedRef("b", legacy, b"row-2")], deadline=dl())


@pytest.mark.parametrize(
    "plaintext",
    [
        b"",
        b"cvault/wrapped-key/v2",
        bind(bytes(32), b"row-1")[:-1],  # a key one byte short
        bind(bytes(32), b"row-1") + b"x",  # one byte long
        b"something else entirely" + bytes(32),
    ],
)
def test_unbind_refuses_malformed_plaintexts(plaintext: bytes) -> None:
    with pytest.raises(DecryptionFailed):
        unbind(plaintext, b"row-1")


def test_binding_is_length_prefixed() -> None:
    """A binding cannot be extended into the key: "ab" + key != "a" + ("b" + key)."""
    key = bytes(32)
    assert bind(key, b"ab") != bind(b"b" + key, b"a")
    with pytest.raises(DecryptionFailed):
        unbind(bind(key, b"ab"), b"a")
