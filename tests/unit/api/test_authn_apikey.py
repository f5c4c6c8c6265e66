"""API keys: format, stored form, verification; the Authenticator's decisions on fake contexts."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from vault.api._authn import (
    ApiKeyStore,
    Authenticator,
    current_principal,
    denial_message,
    new_api_key,
)
from vault.errors import ConfigError, InvalidInput, Unauthenticated
from vault.identity import AuthMethod, Principal


class FakeContext:
    """What the Authenticator reads from a ``grpc.ServicerContext``."""

    def __init__(
        self,
        metadata: Sequence[tuple[str, str | bytes]] = (),
        auth: Mapping[str, list[bytes]] | None = None,
    ) -> None:
        self._metadata = tuple(metadata)
        self._auth = dict(auth or {})

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"


def ctx(*metadata: tuple[str, str | bytes], pem: bytes | None = None) -> Any:
    return FakeContext(metadata, {"x509_pem_cert": [pem]} if pem else None)


@pytest.fixture
def issued() -> tuple[str, dict[str, str]]:
    return new_api_key("ci-runner")


@pytest.fixture
def store(issued: tuple[str, dict[str, str]]) -> ApiKeyStore:
    _, entry = issued
    return ApiKeyStore({"ci-runner": entry, "other": new_api_key("other")[1]})


# --- format and stored form -------------------------------------------------------------------


def test_new_key_has_the_documented_format(issued: tuple[str, dict[str, str]]) -> None:
    key, _ = issued
    m = re.fullmatch(r"cvk_([a-z0-9-]{1,40})_([A-Za-z0-9_-]{43})", key)
    assert m is not None
    assert m.group(1) == "ci-runner"
    assert len(base64.urlsafe_b64decode(m.group(2) + "=")) == 32


def test_stored_entry_holds_no_secret(issued: tuple[str, dict[str, str]]) -> None:
    key, entry = issued
    secret = key.removeprefix("cvk_ci-runner_")
    assert set(entry) == {"principal", "salt", "hash"}
    assert entry["principal"] == "apikey:ci-runner"
    assert len(bytes.fromhex(entry["salt"])) == 16
    assert len(bytes.fromhex(entry["hash"])) == 32
    for value in entry.values():
        assert secret not in value
        assert key not in value


def test_each_key_is_fresh() -> None:
    (k1, e1), (k2, e2) = new_api_key("a"), new_api_key("a")
    assert k1 != k2
    assert e1["salt"] != e2["salt"]
    assert e1["hash"] != e2["hash"]


@pytest.mark.parametrize("key_id", ["", "A", "a_b", "a" * 41, "ключ", "a b"])
def test_new_key_refuses_bad_ids(key_id: str) -> None:
    with pytest.raises(InvalidInput) as err:
        new_api_key(key_id)
    assert err.value.field == "key_id"


# --- verification -----------------------------------------------------------------------------


def test_round_trip(store: ApiKeyStore, issued: tuple[str, dict[str, str]]) -> None:
    assert store.authenticate(issued[0]) == Principal("apikey:ci-runner", AuthMethod.API_KEY)


def test_principal_name_comes_from_the_entry(issued: tuple[str, dict[str, str]]) -> None:
    key, entry = issued
    named = ApiKeyStore({"ci-runner": {**entry, "principal": "apikey:ci"}})
    assert named.authenticate(key) == Principal("apikey:ci", AuthMethod.API_KEY)
    no_principal = {k: v for k, v in entry.items() if k != "principal"}
    assert ApiKeyStore({"ci-runner": no_principal}).authenticate(key) == Principal(
        "apikey:ci-runner", AuthMethod.API_KEY
    )


def _flip_last(s: str) -> str:
    return s[:-1] + ("A" if s[-1] != "A" else "B")


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(_flip_last, id="wrong-secret"),
        pytest.param(lambda k: k.replace("cvk_ci-runner_", "cvk_nobody_"), id="unknown-id"),
        pytest.param(lambda k: k.replace("cvk_ci-runner_", "cvk_other_"), id="other-ids-secret"),
        pytest.param(lambda k: k[:-1], id="truncated"),
        pytest.param(lambda k: k + "A", id="too-long"),
        pytest.param(lambda k: k.replace("cvk_", "cvx_"), id="bad-prefix"),
        pytest.param(lambda k: k.replace("cvk_", ""), id="no-prefix"),
        pytest.param(lambda k: k.upper(), id="upper-case"),
        pytest.param(lambda k: " " + k, id="leading-space"),
        pytest.param(lambda k: k + "\n", id="trailing-newline"),
        pytest.param(lambda k: k.removeprefix("cvk_ci-runner_"), id="secret-only"),
        pytest.param(lambda k: "", id="empty"),
        pytest.param(lambda k: "Bearer " + k, id="bearer"),
        pytest.param(lambda k: k * 100, id="huge"),
    ],
)
def test_bad_keys_are_refused(
    store: ApiKeyStore, issued: tuple[str, dict[str, str]], mutate: Any
) -> None:
    assert store.authenticate(mutate(issued[0])) is None


def test_a_non_ascii_key_is_refused(store: ApiKeyStore) -> None:
    assert store.authenticate("cvk_ci-runner_" + "é" * 43) is None


def test_empty_store_refuses_everything(issued: tuple[str, dict[str, str]]) -> None:
    assert ApiKeyStore({}).authenticate(issued[0]) is None


def test_repr_names_key_ids_only(store: ApiKeyStore, issued: tuple[str, dict[str, str]]) -> None:
    text = repr(store)
    assert "ci-runner" in text
    assert issued[1]["hash"] not in text
    assert issued[1]["salt"] not in text


# --- configuration errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_id", "change", "where"),
    [
        ("Bad_Id", {}, "api_keys"),
        ("k", {"salt": "zz"}, "api_keys.k.salt"),
        ("k", {"salt": "00" * 8}, "api_keys.k.salt"),
        ("k", {"hash": "00" * 31}, "api_keys.k.hash"),
        ("k", {"hash": None}, "api_keys.k.hash"),
        ("k", {"principal": ""}, "api_keys.k.principal"),
        # an API key's principal is an apikey: name: only an apikey: entry of the policy
        # matches it, so any other name could never have a role
        ("k", {"principal": "svc:ci"}, "api_keys.k.principal: must be apikey:<name>"),
        ("k", {"principal": "spiffe://cvault.dev/dpo"}, "api_keys.k.principal"),
        ("k", {"principal": "dns:backend.acme.internal"}, "api_keys.k.principal"),
        ("k", {"principal": "apikey:"}, "api_keys.k.principal"),
        ("k", {"principal": "APIKEY:k"}, "api_keys.k.principal"),
        ("k", {"secret": "x"}, "api_keys.k: unknown field(s) secret"),
    ],
)
def test_malformed_entries_fail_at_construction(
    key_id: str, change: dict[str, Any], where: str
) -> None:
    entry: dict[str, Any] = {**new_api_key("k")[1], **change}
    with pytest.raises(ConfigError) as err:
        ApiKeyStore({key_id: entry})
    assert str(err.value).startswith(where)
    assert entry["hash"] is None or str(entry["hash"]) not in str(err.value)


def test_missing_hash_fails_at_construction() -> None:
    entry = new_api_key("k")[1]
    del entry["hash"]
    with pytest.raises(ConfigError, match=r"^api_keys\.k\.hash"):
        ApiKeyStore({"k": entry})


# --- Authenticator ----------------------------------------------------------------------------


class Denials:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, reason: str, peer: str) -> None:
        self.calls.append((reason, peer))


@pytest.fixture
def denials() -> Denials:
    return Denials()


def test_api_key_in_metadata_authenticates(
    store: ApiKeyStore, issued: tuple[str, dict[str, str]], denials: Denials
) -> None:
    auth = Authenticator(api_keys=store, allow_mtls=False, on_denied=denials)
    principal = auth.authenticate(ctx(("x-api-key", issued[0])))
    assert principal == Principal("apikey:ci-runner", AuthMethod.API_KEY)
    assert denials.calls == []


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "missing_credentials"),
        ((("authorization", "Bearer whatever"),), "missing_credentials"),
        ((("x-api-key", "cvk_ci-runner_" + "A" * 43),), "bad_api_key"),
        ((("x-api-key", ""),), "bad_api_key"),
        ((("x-api-key-bin", b"\x00"),), "missing_credentials"),
    ],
)
def test_refusals_carry_a_reason_and_are_reported(
    store: ApiKeyStore,
    denials: Denials,
    metadata: tuple[tuple[str, str], ...],
    reason: str,
) -> None:
    auth = Authenticator(api_keys=store, allow_mtls=True, on_denied=denials)
    with pytest.raises(Unauthenticated) as err:
        auth.authenticate(ctx(*metadata))
    assert err.value.reason == reason
    assert denial_message(err.value) == f"unauthenticated: {reason}"
    assert denials.calls == [(reason, "ipv4:127.0.0.1:50000")]


def test_two_key_headers_are_refused_even_if_one_is_good(
    store: ApiKeyStore, issued: tuple[str, dict[str, str]]
) -> None:
    auth = Authenticator(api_keys=store, allow_mtls=False)
    with pytest.raises(Unauthenticated) as err:
        auth.authenticate(ctx(("x-api-key", issued[0]), ("x-api-key", "cvk_x_" + "A" * 43)))
    assert err.value.reason == "bad_api_key"


def test_api_keys_are_refused_when_not_configured(
    issued: tuple[str, dict[str, str]], denials: Denials
) -> None:
    auth = Authenticator(api_keys=None, allow_mtls=True, on_denied=denials)
    with pytest.raises(Unauthenticated) as err:
        auth.authenticate(ctx(("x-api-key", issued[0])))
    assert err.value.reason == "api_keys_disabled"
    assert denials.calls == [("api_keys_disabled", "ipv4:127.0.0.1:50000")]


def test_refusals_never_carry_the_key(
    store: ApiKeyStore, issued: tuple[str, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    wrong = _flip_last(issued[0])
    caplog.set_level(logging.DEBUG)
    auth = Authenticator(api_keys=store, allow_mtls=False)
    with pytest.raises(Unauthenticated) as err:
        auth.authenticate(ctx(("x-api-key", wrong)))
    secret = wrong.removeprefix("cvk_ci-runner_")
    assert secret not in str(err.value)
    assert secret not in repr(err.value)
    assert secret not in caplog.text


def test_a_failing_denial_hook_does_not_turn_a_refusal_into_a_success(
    store: ApiKeyStore, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(reason: str, peer: str) -> None:
        raise RuntimeError("audit down: secret detail")

    auth = Authenticator(api_keys=store, allow_mtls=False, on_denied=hook)
    with pytest.raises(Unauthenticated):
        auth.authenticate(ctx())
    assert "RuntimeError" in caplog.text
    assert "secret detail" not in caplog.text


def test_authenticator_needs_at_least_one_method() -> None:
    with pytest.raises(ConfigError):
        Authenticator(api_keys=None, allow_mtls=False)


def test_current_principal_outside_a_call_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated) as err:
        current_principal()
    assert err.value.reason == "missing_credentials"
