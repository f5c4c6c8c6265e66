"""Fixtures for the key-server tests: field keys, the deploy/ policies, AppRole, the audit log.

The session-wide ``openbao`` dev server (with a file audit device) comes from
``tests/conftest.py``; everything here runs against it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import FIELD_CLASSES as CLASSES_OF_RECORDS
from tests.support import KEY_PREFIX, private_openbao, private_postgres
from vault.keys import (
    AppRoleAuth,
    TokenAuth,
    TransitKeyWrapper,
    init_field_keys,
    setup_approle,
    write_policy,
)
from vault.keys.openbao_dev import OpenBaoDevServer, audit_request_paths
from vault.storage import upgrade

# the suite's field classes plus the audit log's own key class
FIELD_CLASSES = (*CLASSES_OF_RECORDS, "audit")
DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "openbao"
RUNTIME_POLICY = "cvault-runtime"


AuditSince = Callable[..., list[str]]


@pytest.fixture(scope="session")
def field_keys(openbao: OpenBaoDevServer) -> list[str]:
    """Every field key plus the audit key, created (idempotently) with the root token."""
    return init_field_keys(
        openbao.url,
        openbao.root_token,
        key_prefix=KEY_PREFIX,
        field_classes=FIELD_CLASSES,
        extra_keys=(),
    )


@pytest.fixture(scope="session")
def runtime_policy(openbao: OpenBaoDevServer) -> str:
    """The service policy exactly as shipped in deploy/openbao/runtime-policy.hcl."""
    hcl = (DEPLOY / "runtime-policy.hcl").read_text()
    write_policy(openbao.url, openbao.root_token, RUNTIME_POLICY, hcl)
    return RUNTIME_POLICY


@pytest.fixture(scope="session")
def approle_credentials(
    openbao: OpenBaoDevServer, field_keys: list[str], runtime_policy: str
) -> tuple[str, str]:
    return setup_approle(
        openbao.url,
        openbao.root_token,
        role_name="cvault-service-test",
        policies=[runtime_policy],
        token_ttl=300,
        token_max_ttl=600,
    )


@pytest.fixture
def root_wrapper(openbao: OpenBaoDevServer, field_keys: list[str]) -> Iterator[TransitKeyWrapper]:
    wrapper = TransitKeyWrapper(
        openbao.url, TokenAuth(openbao.root_token, renew=False), key_prefix=KEY_PREFIX
    )
    yield wrapper
    wrapper.close()


@pytest.fixture
def service_wrapper(
    openbao: OpenBaoDevServer, approle_credentials: tuple[str, str]
) -> Iterator[TransitKeyWrapper]:
    """Wrapper with the service's real credentials: AppRole + runtime policy."""
    wrapper = TransitKeyWrapper(
        openbao.url, AppRoleAuth(*approle_credentials), key_prefix=KEY_PREFIX
    )
    yield wrapper
    wrapper.close()


@pytest.fixture
def audit(openbao: OpenBaoDevServer) -> AuditSince:
    """``audit(prefix="")``: request paths audited since the test started, in order."""
    path = openbao.audit_log_path
    assert path is not None
    start = len(audit_request_paths(path))

    def since(prefix: str = "") -> list[str]:
        return [p for p in audit_request_paths(path)[start:] if p.startswith(prefix)]

    return since


@pytest.fixture
def deploy_dir() -> Path:
    return DEPLOY


@pytest.fixture
def dead_url() -> str:
    """A URL where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A URL whose TCP connections are accepted by the kernel but never answered."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture
def bao() -> Iterator[OpenBaoDevServer]:
    """A private key server for one test (see :func:`private_openbao`)."""
    with private_openbao() as server:
        yield server


@pytest.fixture
def private_postgres_url() -> Iterator[str]:
    """A fresh database on the test PostgreSQL server, for tests that rotate every tenant of
    the database or run with a key server of their own (the session-wide database's audit key
    is wrapped by the session's key server)."""
    with private_postgres("cvault_keys") as url:
        yield url


@pytest.fixture
def private_sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'vault.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def private_db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database of this test's own, on each backend."""
    return str(request.getfixturevalue(f"private_{request.param}_url"))
