"""Shared fixtures: a real OpenBao dev server, SQLite and PostgreSQL databases, services.

PostgreSQL comes from ``CVAULT_TEST_POSTGRES_URL`` (default: the local server's ``test``
database). Each run creates its own database there and drops it at the end. When the server
cannot be reached the PostgreSQL tests are skipped, except under ``CI=true``, where that fails.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import grpc
import pytest

import vault.client._channel
from tests.support import (
    ADMIN_KEY,
    FIELD_CLASSES,
    KEY_PREFIX,
    SESSION_AUDIT_SINKS,
    TEST_PURPOSE,
    TOKENS_KEY,
    authenticator,
    make_service,
    plaintext_in,
    private_postgres,
)
from vault.api import RunningServer, start_server
from vault.audit import JsonLinesSink
from vault.client import VaultClient
from vault.errors import VaultServiceError
from vault.keys import init_field_keys
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.service import RecordsService, Services
from vault.storage import Database, upgrade


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoDevServer]:
    """One OpenBao dev server for the session, with a file audit device counting requests."""
    audit = tmp_path_factory.mktemp("openbao") / "audit.log"
    server = OpenBaoDevServer(audit_log_path=audit)
    server.start()
    try:
        init_field_keys(
            server.url, server.root_token, key_prefix=KEY_PREFIX, field_classes=FIELD_CLASSES
        )
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'vault.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of this run's own on the PostgreSQL server, dropped afterwards."""
    with private_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    db = Database(db_url)
    yield db
    db.dispose()


@pytest.fixture
def records(database: Database, openbao: OpenBaoDevServer) -> RecordsService:
    return make_service(database, openbao)


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def server(records: RecordsService) -> Iterator[RunningServer]:
    running = start_server(
        Services.over(records.core),
        "127.0.0.1:0",
        authenticator=authenticator(),
        health_interval=0.2,
    )
    yield running
    running.stop(grace=0)


@pytest.fixture
def admin_client(server: RunningServer) -> Iterator[VaultClient]:
    with VaultClient(server.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=30) as c:
        yield c


@pytest.fixture
def client(server: RunningServer) -> Iterator[VaultClient]:
    with VaultClient(server.address, api_key=TOKENS_KEY, timeout=30) as c:
        yield c


class _KeepEveryLine(logging.Handler):
    """Keeps every formatted log line (with any traceback) of the whole session."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:
            self.lines.append(repr(record.msg))


@pytest.fixture(scope="session", autouse=True)
def _no_plaintext_in_any_log_line(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """Issue 3's log-and-trace scan over the whole suite: every test runs with logging at
    DEBUG, every service the suite builds writes its audit events to one JSON-lines file, and
    every gRPC error the SDK receives is kept; at the end none of them may hold a customer
    value the suite made."""
    audit_lines = tmp_path_factory.mktemp("audit") / "session-audit.jsonl"
    sink = JsonLinesSink(audit_lines)
    SESSION_AUDIT_SINKS.append(sink)
    error_messages: list[str] = []
    original_error = vault.client._channel._error

    def keep_error(exc: grpc.RpcError) -> VaultServiceError:
        error_messages.append(f"{exc.code()} {exc.details()}")
        return original_error(exc)

    vault.client._channel._error = keep_error
    handler = _KeepEveryLine()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    yield
    root.removeHandler(handler)
    root.setLevel(old_level)
    vault.client._channel._error = original_error
    SESSION_AUDIT_SINKS.remove(sink)
    sink.close()
    for what, text in (
        ("log lines", "\n".join(handler.lines)),
        ("audit JSON lines", audit_lines.read_text()),
        ("gRPC error messages", "\n".join(error_messages)),
    ):
        leaked = plaintext_in(text)
        assert not leaked, f"{len(leaked)} customer values appeared in {what}"
