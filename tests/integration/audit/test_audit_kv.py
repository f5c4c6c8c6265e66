"""KvCheckpointStore against a real OpenBao KV v2 mount: round trip, absence, refusal, outage."""

from __future__ import annotations

import socket
import uuid

import pytest
import requests

from vault.deadline import Deadline
from vault.errors import ConfigError, KeyServerPermissionDenied, KeyServerUnavailable
from vault.keys import KvCheckpointStore, TokenAuth
from vault.keys.openbao_dev import OpenBaoDevServer

pytestmark = pytest.mark.openbao


def store_at(url: str, token: str, path: str | None = None) -> KvCheckpointStore:
    return KvCheckpointStore(
        url,
        TokenAuth(token, renew=False),
        path=path or f"cvault/audit/test-{uuid.uuid4().hex[:8]}",
        max_attempts=3,
    )


def test_put_then_get(openbao: OpenBaoDevServer) -> None:
    store = store_at(openbao.url, openbao.root_token)
    deadline = Deadline.after(10)
    assert store.get(deadline=deadline) is None
    store.put({"chain": "main", "seq": "7", "mac": "ab" * 32}, deadline=deadline)
    store.put({"chain": "main", "seq": "8", "mac": "cd" * 32}, deadline=deadline)
    assert store.get(deadline=deadline) == {"chain": "main", "seq": "8", "mac": "cd" * 32}
    assert openbao.root_token not in repr(store)
    assert store.healthy()
    store.close()


def test_a_token_without_access_is_refused(openbao: OpenBaoDevServer) -> None:
    response = requests.post(
        f"{openbao.url}/v1/auth/token/create",
        headers={"X-Vault-Token": openbao.root_token},
        json={"policies": ["default"], "ttl": "5m"},
        timeout=5,
    )
    response.raise_for_status()
    token = response.json()["auth"]["client_token"]
    store = store_at(openbao.url, token)
    with pytest.raises(KeyServerPermissionDenied):
        store.put({"seq": "1"}, deadline=Deadline.after(5))
    with pytest.raises(KeyServerPermissionDenied):
        store.get(deadline=Deadline.after(5))
    store.close()


def test_unreachable_store_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = store_at(f"http://127.0.0.1:{port}", "t")
    with pytest.raises(KeyServerUnavailable):
        store.get(deadline=Deadline.after(2))
    assert not store.healthy()
    store.close()


@pytest.mark.parametrize(
    ("mount", "path"), [("secret", "a/../b"), ("secret", "a b"), ("se cret", "a"), ("secret", "")]
)
def test_bad_paths_are_refused(mount: str, path: str) -> None:
    with pytest.raises(ConfigError):
        KvCheckpointStore(
            "http://127.0.0.1:8200", TokenAuth("t", renew=False), mount=mount, path=path
        )
