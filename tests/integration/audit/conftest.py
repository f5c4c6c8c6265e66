"""Fixtures for the audit tests against OpenBao: the service's runtime credential exactly as
deployed (AppRole holding ``deploy/openbao/runtime-policy.hcl``, as ``cvault dev`` sets it up),
the operator's admin policy, and raw KV access for an attacker's-eye view."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import private_postgres
from vault.keys import AppRoleAuth, setup_approle, write_policy
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.storage import upgrade

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "openbao"
RUNTIME_POLICY = "cvault-runtime-audit-test"
ADMIN_POLICY = "cvault-admin-audit-test"


def bao(
    openbao: OpenBaoDevServer,
    token: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> requests.Response:
    """One raw request to ``/v1/<path>`` with ``token``: what anyone holding it can send."""
    headers = {"X-Vault-Token": token}
    if method == "PATCH":
        headers["Content-Type"] = "application/merge-patch+json"
    return requests.request(
        method, f"{openbao.url}/v1/{path}", headers=headers, json=body, timeout=10
    )


def kv_secrets(openbao: OpenBaoDevServer, prefix: str) -> list[str]:
    """Every KV v2 secret at or under ``prefix`` of ``secret/`` (read with the root token)."""
    root = openbao.root_token
    found = [prefix] if bao(openbao, root, "GET", f"secret/data/{prefix}").ok else []
    listed = bao(openbao, root, "LIST", f"secret/metadata/{prefix}/")
    for key in listed.json().get("data", {}).get("keys", []) if listed.ok else []:
        if key.endswith("/"):
            found += kv_secrets(openbao, f"{prefix}/{key[:-1]}")
        else:
            found.append(f"{prefix}/{key}")
    return found


@pytest.fixture(scope="session")
def runtime_approle(openbao: OpenBaoDevServer) -> tuple[str, str]:
    """(role id, secret id) of an AppRole holding only the shipped runtime policy."""
    write_policy(
        openbao.url, openbao.root_token, RUNTIME_POLICY, (DEPLOY / "runtime-policy.hcl").read_text()
    )
    return setup_approle(
        openbao.url,
        openbao.root_token,
        role_name="cvault-audit-test",
        policies=[RUNTIME_POLICY],
        token_ttl=600,
        token_max_ttl=1200,
    )


@pytest.fixture
def runtime_auth(runtime_approle: tuple[str, str]) -> AppRoleAuth:
    """The service's credential, as the server holds it."""
    return AppRoleAuth(*runtime_approle)


@pytest.fixture
def runtime_token(openbao: OpenBaoDevServer, runtime_approle: tuple[str, str]) -> str:
    """A token of the runtime policy, logged in by hand: what an insider would take."""
    role_id, secret_id = runtime_approle
    login = requests.post(
        f"{openbao.url}/v1/auth/approle/login",
        json={"role_id": role_id, "secret_id": secret_id},
        timeout=10,
    )
    login.raise_for_status()
    return str(login.json()["auth"]["client_token"])


@pytest.fixture
def admin_token(openbao: OpenBaoDevServer) -> str:
    """A token holding only the shipped admin (operator) policy."""
    write_policy(
        openbao.url, openbao.root_token, ADMIN_POLICY, (DEPLOY / "admin-policy.hcl").read_text()
    )
    created = bao(
        openbao,
        openbao.root_token,
        "POST",
        "auth/token/create",
        {
            "policies": [ADMIN_POLICY],
            "ttl": "10m",
        },
    )
    created.raise_for_status()
    return str(created.json()["auth"]["client_token"])


@pytest.fixture
def kv_prefix() -> str:
    """A checkpoint prefix ([audit] kv_path) of this test's own, under the policies' paths."""
    return f"cvault/audit/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def chain() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def private_sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    return url


@pytest.fixture
def private_postgres_url() -> Iterator[str]:
    with private_postgres("cvault_audit") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def private_db_url(request: pytest.FixtureRequest) -> str:
    """A database of this test's own on each backend: the CLI verifies every chain in it."""
    return str(request.getfixturevalue(f"private_{request.param}_url"))
