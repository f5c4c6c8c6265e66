"""FieldKeyAdmin.rewrap_stored: both stored formats come back bound, under the newest version."""

from __future__ import annotations

import os

import pytest

from tests.support import KEY_PREFIX
from vault.deadline import Deadline
from vault.keys import (
    FieldKeyAdmin,
    KeyManager,
    TokenAuth,
    TransitKeyWrapper,
    WrapItem,
    WrappedRef,
    wrapped_version,
)
from vault.keys.openbao_dev import OpenBaoDevServer

pytestmark = pytest.mark.openbao


def test_rewrap_stored_keeps_order_and_converts_legacy(bao: OpenBaoDevServer) -> None:
    wrapper = TransitKeyWrapper(
        bao.url, TokenAuth(bao.root_token, renew=False), key_prefix=KEY_PREFIX
    )
    try:
        maker = KeyManager(wrapper)
        bindings = [b"row-1", b"row-2", b"row-3"]
        first, last = maker.new_keys(
            "email", [bindings[0], bindings[2]], deadline=Deadline.after(30)
        )
        legacy_key = os.urandom(32)
        [legacy] = wrapper.wrap("email", [WrapItem(legacy_key, bindings[1])])
        stored = list(zip([first.wrapped, legacy, last.wrapped], bindings, strict=True))

        with FieldKeyAdmin(bao.url, bao.root_token, key_prefix=KEY_PREFIX) as admin:
            version = admin.rotate("email")
            new, converted = admin.rewrap_stored("email", stored)

        assert converted == 1
        assert [wrapped_version(w) for w in new] == [version] * 3
        assert all(w.startswith("cvk2:") for w in new)
        fresh = KeyManager(wrapper)  # empty cache: every key comes from the key server
        refs = [
            WrappedRef(str(i), w, b) for i, (w, b) in enumerate(zip(new, bindings, strict=True))
        ]
        plain = fresh.unwrap("email", refs, deadline=Deadline.after(30))
        assert [plain[str(i)] for i in range(3)] == [first.key, legacy_key, last.key]
    finally:
        wrapper.close()
