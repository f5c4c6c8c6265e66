"""KvCheckpointStore against a real OpenBao KV v2 mount: write-once documents per chain, the
legacy document, absence, refusal, outage."""

from __future__ import annotations

import socket

import pytest
import requests

from tests.integration.audit.conftest import bao
from vault.deadline import Deadline
from vault.errors import ConfigError, KeyServerPermissionDenied, KeyServerUnavailable
from vault.keys import AppRoleAuth, KeyServerAuth, KvCheckpointStore, TokenAuth
from vault.keys.openbao_dev import OpenBaoDevServer

pytestmark = pytest.mark.openbao

DOC = {"format": "2", "chain": "main", "seq": "7", "mac": "ab" * 32, "prev": "0"}


def store_at(url: str, auth: KeyServerAuth | str, path: str) -> KvCheckpointStore:
    if isinstance(auth, str):
        auth = TokenAuth(auth, renew=False)
    return KvCheckpointStore(url, auth, path=path, max_attempts=3)


def test_documents_are_written_once_per_chain(openbao: OpenBaoDevServer, kv_prefix: str) -> None:
    store = store_at(openbao.url, openbao.root_token, kv_prefix)
    deadline = Deadline.after(10)
    assert (store.names("main", deadline=deadline), store.chains(deadline=deadline)) == ([], [])
    assert store.read("main", "7", deadline=deadline) is None
    assert store.create("main", "7", DOC, deadline=deadline)
    # even the root token, which may update, does not replace it: cas=0
    assert not store.create("main", "7", {**DOC, "mac": "cd" * 32}, deadline=deadline)
    assert store.read("main", "7", deadline=deadline) == DOC
    assert store.create("main", "9", {**DOC, "seq": "9"}, deadline=deadline)
    assert store.create("replica-2", "3", {**DOC, "chain": "replica-2"}, deadline=deadline)
    assert sorted(store.names("main", deadline=deadline)) == ["7", "9"]
    assert sorted(store.chains(deadline=deadline)) == ["main", "replica-2"]
    assert store.legacy(deadline=deadline) is None
    assert openbao.root_token not in repr(store)
    assert store.healthy()
    store.close()


def test_the_runtime_credential_creates_but_never_replaces(
    openbao: OpenBaoDevServer, runtime_auth: AppRoleAuth, kv_prefix: str
) -> None:
    store = store_at(openbao.url, runtime_auth, kv_prefix)
    deadline = Deadline.after(10)
    assert store.create("main", "7", DOC, deadline=deadline)
    # refused by the policy (an update), recognised as "already there"
    assert not store.create("main", "7", {**DOC, "mac": "cd" * 32}, deadline=deadline)
    assert store.read("main", "7", deadline=deadline) == DOC
    assert store.names("main", deadline=deadline) == ["7"]
    assert store.chains(deadline=deadline) == ["main"]
    store.close()


def test_the_legacy_document_is_the_secret_at_the_prefix(
    openbao: OpenBaoDevServer, runtime_auth: AppRoleAuth, kv_prefix: str
) -> None:
    legacy = {"format": "1", "chain": "main", "seq": "4", "mac": "ab" * 32, "time": "t"}
    written = bao(openbao, openbao.root_token, "POST", f"secret/data/{kv_prefix}", {"data": legacy})
    written.raise_for_status()
    store = store_at(openbao.url, runtime_auth, kv_prefix)
    deadline = Deadline.after(10)
    assert store.legacy(deadline=deadline) == legacy
    assert store.create("main", "8", {**DOC, "seq": "8"}, deadline=deadline)
    assert store.chains(deadline=deadline) == ["main"]
    assert store.legacy(deadline=deadline) == legacy
    store.close()


def test_a_token_without_access_is_refused(openbao: OpenBaoDevServer, kv_prefix: str) -> None:
    response = requests.post(
        f"{openbao.url}/v1/auth/token/create",
        headers={"X-Vault-Token": openbao.root_token},
        json={"policies": ["default"], "ttl": "5m"},
        timeout=5,
    )
    response.raise_for_status()
    store = store_at(openbao.url, response.json()["auth"]["client_token"], kv_prefix)
    deadline = Deadline.after(5)
    with pytest.raises(KeyServerPermissionDenied):
        store.create("main", "1", DOC, deadline=deadline)
    with pytest.raises(KeyServerPermissionDenied):
        store.read("main", "1", deadline=deadline)
    with pytest.raises(KeyServerPermissionDenied):
        store.names("main", deadline=deadline)
    with pytest.raises(KeyServerPermissionDenied):
        store.legacy(deadline=deadline)
    store.close()


def test_unreachable_store_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = store_at(f"http://127.0.0.1:{port}", "t", "cvault/audit/head")
    with pytest.raises(KeyServerUnavailable):
        store.names("main", deadline=Deadline.after(2))
    assert not store.healthy()
    store.close()


@pytest.mark.parametrize(
    ("mount", "path"),
    [
        ("secret", "a/../b"),
        ("secret", "a/./b"),
        ("secret", "a b"),
        ("se cret", "a"),
        ("secret", ""),
    ],
)
def test_bad_paths_are_refused(mount: str, path: str) -> None:
    with pytest.raises(ConfigError):
        KvCheckpointStore(
            "http://127.0.0.1:8200", TokenAuth("t", renew=False), mount=mount, path=path
        )


@pytest.mark.parametrize(("chain", "name"), [("..", "1"), ("main", ".."), ("a/b", "1"), ("", "1")])
def test_names_that_are_not_one_path_step_are_refused(chain: str, name: str) -> None:
    store = store_at("http://127.0.0.1:9", "t", "cvault/audit/head")
    with pytest.raises(ValueError, match="path segment"):
        store.create(chain, name, DOC, deadline=Deadline.after(1))
    store.close()
