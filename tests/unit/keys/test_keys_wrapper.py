"""TransitKeyWrapper against a scripted transport: chunking, per-item errors, one retry on 403."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import pytest

from vault.deadline import Deadline
from vault.errors import (
    ConfigError,
    DecryptionFailed,
    KeyServerPermissionDenied,
    KeyServerUnavailable,
)
from vault.keys import AppRoleAuth, TokenAuth, TransitKeyWrapper, UnwrapItem, WrapItem
from vault.keys._auth import KeyServerResponse, TokenRejected


class FakeTransit:
    """Encrypt = "vault:v1:" + base64(aad|plaintext); decrypt checks the aad prefix."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.forbid_tokens: set[str] = set()
        self.logins = 0

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None,
        body: Mapping[str, Any] | None = None,
        deadline: Deadline | None = None,
        subject: str,
        batch: bool = False,
        **extra: Any,
    ) -> KeyServerResponse:
        if path == "auth/approle/login":
            self.logins += 1
            return KeyServerResponse(
                200, {"auth": {"client_token": f"tok-{self.logins}", "lease_duration": 0}}
            )
        if path == "auth/token/lookup-self":
            raise TokenRejected("permission denied")
        assert body is not None
        assert token is not None
        if token in self.forbid_tokens:
            raise TokenRejected("permission denied")
        items = body["batch_input"]
        self.calls.append((path, len(items)))
        results: list[dict[str, str]] = []
        for item in items:
            aad = base64.b64decode(item.get("associated_data", ""))
            if "/encrypt/" in path:
                blob = aad + b"|" + base64.b64decode(item["plaintext"])
                results.append({"ciphertext": "vault:v1:" + base64.b64encode(blob).decode()})
            else:
                raw = base64.b64decode(item["ciphertext"].removeprefix("vault:v1:"))
                got_aad, _, plain = raw.partition(b"|")
                if got_aad != aad:
                    results.append({"plaintext": "", "error": "message authentication failed"})
                else:
                    results.append({"plaintext": base64.b64encode(plain).decode()})
        status = 400 if any("error" in r for r in results) else 200
        return KeyServerResponse(status, {"data": {"batch_results": results}})


def make(
    fake: FakeTransit, auth: TokenAuth | AppRoleAuth | None = None, **kwargs: Any
) -> TransitKeyWrapper:
    wrapper = TransitKeyWrapper(
        "http://127.0.0.1:1", auth or TokenAuth("t", renew=False), key_prefix="cvault", **kwargs
    )
    wrapper._transport = fake  # type: ignore[assignment]
    return wrapper


@pytest.mark.parametrize(
    ("n", "aad", "expected"),
    [
        (600, b"", [250, 250, 100]),
        # 4 JSON strings per item with associated data: 249 * 4 + 1 <= 1000 < 250 * 4 + 1
        (600, b"ctx", [249, 249, 102]),
        (250, b"", [250]),
        (1, b"ctx", [1]),
    ],
)
def test_chunks_respect_batch_size_and_json_string_limit(
    n: int, aad: bytes, expected: list[int]
) -> None:
    fake = FakeTransit()
    wrapper = make(fake)
    items = [WrapItem(bytes([i % 256]) * 32, aad) for i in range(n)]
    wrapped = wrapper.wrap("email", items)
    assert [c for _, c in fake.calls] == expected
    assert wrapper.unwrap("email", [UnwrapItem(w, aad) for w in wrapped]) == [
        i.plaintext for i in items
    ]


def test_empty_input_makes_no_call() -> None:
    fake = FakeTransit()
    wrapper = make(fake)
    assert wrapper.wrap("email", []) == []
    assert wrapper.unwrap("email", []) == []
    assert fake.calls == []


def test_one_bad_item_fails_the_whole_unwrap() -> None:
    fake = FakeTransit()
    wrapper = make(fake)
    wrapped = wrapper.wrap("email", [WrapItem(b"k" * 32, b"a"), WrapItem(b"j" * 32, b"b")])
    with pytest.raises(DecryptionFailed) as info:
        wrapper.unwrap("email", [UnwrapItem(wrapped[0], b"a"), UnwrapItem(wrapped[1], b"x")])
    assert info.value.message == "decryption failed"


def test_malformed_batch_answer_is_unavailable() -> None:
    class Short(FakeTransit):
        def request(self, *args: Any, **kwargs: Any) -> KeyServerResponse:
            return KeyServerResponse(200, {"data": {"batch_results": []}})

    with pytest.raises(KeyServerUnavailable, match="cvault-email"):
        make(Short()).wrap("email", [WrapItem(b"k" * 32)])


def test_static_token_refused_is_permission_denied_without_retry() -> None:
    fake = FakeTransit()
    fake.forbid_tokens.add("t")
    with pytest.raises(KeyServerPermissionDenied) as info:
        make(fake).wrap("email", [WrapItem(b"k" * 32)])
    assert type(info.value) is KeyServerPermissionDenied  # not the internal TokenRejected


def test_approle_dead_token_is_replaced_and_the_request_retried_once() -> None:
    fake = FakeTransit()
    wrapper = make(fake, AppRoleAuth("rid", "sid"))
    wrapper.wrap("email", [WrapItem(b"k" * 32)])
    fake.forbid_tokens.add("tok-1")  # e.g. revoked; lookup-self is refused too
    assert len(wrapper.wrap("email", [WrapItem(b"k" * 32)])) == 1
    assert fake.logins == 2


def test_approle_refused_twice_gives_up() -> None:
    fake = FakeTransit()
    fake.forbid_tokens.update({"tok-1", "tok-2", "tok-3"})
    with pytest.raises(KeyServerPermissionDenied):
        make(fake, AppRoleAuth("rid", "sid")).wrap("email", [WrapItem(b"k" * 32)])
    assert fake.logins == 2


@pytest.mark.parametrize("field_class", ["", "../sys", "a/b", "e mail", "x" * 65])
def test_field_class_that_cannot_be_a_key_name_is_refused(field_class: str) -> None:
    fake = FakeTransit()
    with pytest.raises(KeyServerPermissionDenied):
        make(fake).wrap(field_class, [WrapItem(b"k" * 32)])
    assert fake.calls == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key_prefix": "bad/prefix"},
        {"key_prefix": "cvault", "mount": "../sys"},
        {"key_prefix": "cvault", "timeout": 0},
        {"key_prefix": "cvault", "max_attempts": 0},
        {"key_prefix": "cvault", "batch_size": 0},
    ],
)
def test_bad_configuration_fails_at_construction(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        TransitKeyWrapper("http://127.0.0.1:8200", TokenAuth("t"), **kwargs)


def test_bad_url_fails_at_construction() -> None:
    with pytest.raises(ConfigError):
        TransitKeyWrapper("127.0.0.1:8200", TokenAuth("t"), key_prefix="cvault")


def test_wrap_item_repr_hides_key_material() -> None:
    assert "secret" not in repr(WrapItem(b"secret-key-bytes", b"aad"))
