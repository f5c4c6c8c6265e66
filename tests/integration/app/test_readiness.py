"""Readiness tells the truth (issue 12): what keeps a running server from serving makes health
NOT_SERVING with a log line naming the cause, and SERVING returns once it is fixed.

- a key-server credential the key server refuses (a wrong AppRole secret id: health said
  SERVING while every data call failed with ``key_server_permission_denied``);
- a policy file that cannot be read;
- a database schema this server does not run on (behind: upgrade first; ahead: only when the
  newer migrations say this server still works with them, which is what a rolling upgrade
  needs: the old replicas keep serving while the database is migrated).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support import (
    ADMIN_KEY,
    API_KEYS,
    SAMPLE_POLICY,
    TEST_POLICY,
    TEST_PURPOSE,
    TcpProxy,
    sample_record,
)
from vault.api import RunningServer
from vault.app import App, build_app
from vault.client import VaultClient
from vault.config import AuthSettings, OpenBaoSettings, Settings, deploy_file
from vault.errors import Unavailable
from vault.keys import setup_approle, write_policy
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.metrics import REGISTRY
from vault.storage import head_revision, upgrade

pytestmark = [pytest.mark.openbao, pytest.mark.slow]

#: how long a probe round may take to show a change (probes run every 0.2 s here)
SEEN_WITHIN = 15.0


def _settings(db_url: str, bao: OpenBaoSettings, policy: Path = TEST_POLICY) -> Settings:
    return Settings(
        database_url=db_url,
        policy=str(policy),
        openbao=bao,
        auth=AuthSettings(api_keys={"test-admin": API_KEYS["test-admin"][1]}),
        health_interval_seconds=0.2,
    )


@pytest.fixture
def serve() -> Iterator[Callable[[Settings], str]]:
    """Start a server from settings; its address. Stopped at the end of the test."""
    apps: list[tuple[App, RunningServer]] = []

    def start(settings: Settings) -> str:
        app = build_app(settings)
        running = app.serve("127.0.0.1:0")
        apps.append((app, running))
        return running.address

    yield start
    for app, running in apps:
        running.stop(0.5)
        app.close()


def _health(address: str) -> str:
    with VaultClient(address, timeout=5) as vc:
        return vc.health()


def _wait_for(address: str, status: str) -> None:
    end = time.monotonic() + SEEN_WITHIN
    while time.monotonic() < end:
        if _health(address) == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"health did not turn {status}")


def _logged(caplog: pytest.LogCaptureFixture, *needles: str) -> bool:
    return any(
        r.levelno >= logging.ERROR and all(n in r.getMessage() for n in needles)
        for r in caplog.records
    )


def test_a_refused_approle_secret_is_not_serving_and_says_why(
    openbao: OpenBaoDevServer,
    tmp_path: Path,
    serve: Callable[[Settings], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = deploy_file("openbao", "runtime-policy.hcl").read_text()
    write_policy(openbao.url, openbao.root_token, "cvault-runtime", runtime)
    role_id, _secret = setup_approle(
        openbao.url,
        openbao.root_token,
        role_name="readiness-test",
        policies=["cvault-runtime"],
        token_ttl="1h",
        token_max_ttl="24h",
    )
    url = f"sqlite:///{tmp_path / 'approle.db'}"
    upgrade(url)
    bao = OpenBaoSettings(url=openbao.url, auth="approle", role_id=role_id, secret_id="wrong")
    caplog.set_level(logging.INFO, logger="vault.api.server")
    address = serve(_settings(url, bao))
    _wait_for(address, "NOT_SERVING")
    assert _logged(caplog, "NOT_SERVING", "key_server", "credential refused")
    assert "wrong" not in caplog.text


def test_an_unreadable_policy_file_is_not_serving_until_it_is_back(
    openbao: OpenBaoDevServer,
    tmp_path: Path,
    serve: Callable[[Settings], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"sqlite:///{tmp_path / 'policy.db'}"
    upgrade(url)
    policy = tmp_path / "policy.yaml"
    policy.write_bytes(SAMPLE_POLICY.read_bytes())
    bao = OpenBaoSettings(url=openbao.url, token=openbao.root_token)
    caplog.set_level(logging.INFO, logger="vault.api.server")
    address = serve(_settings(url, bao, policy))
    _wait_for(address, "SERVING")
    moved = tmp_path / "policy.moved"
    policy.rename(moved)  # a secret or ConfigMap taken away
    _wait_for(address, "NOT_SERVING")
    assert _logged(caplog, "NOT_SERVING", "policy", "cannot read policy file")
    moved.rename(policy)
    _wait_for(address, "SERVING")


def test_a_schema_behind_is_not_serving_and_refuses_calls_until_upgraded(
    openbao: OpenBaoDevServer,
    tmp_path: Path,
    serve: Callable[[Settings], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: `cvault serve` refused to start on it; now it starts and waits, so new replicas
    can be rolled out before the migration job has run."""
    url = f"sqlite:///{tmp_path / 'behind.db'}"
    upgrade(url, "0012")
    bao = OpenBaoSettings(url=openbao.url, token=openbao.root_token)
    caplog.set_level(logging.INFO, logger="vault.api.server")
    address = serve(_settings(url, bao))
    _wait_for(address, "NOT_SERVING")
    assert _logged(caplog, "NOT_SERVING", "schema", "cvault db upgrade")
    with VaultClient(address, api_key=ADMIN_KEY, timeout=5) as vc, pytest.raises(Unavailable):
        vc.find_records("demo", {"email": "a@example.com"})
    upgrade(url)
    _wait_for(address, "SERVING")


def _pretend_newer_migration(url: str, min_server: str) -> None:
    """What a later release's additive migration leaves: an unknown revision, and the oldest
    server it still works with."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        conn.execute(text("UPDATE schema_compat SET min_server = :m"), {"m": min_server})
    engine.dispose()


def test_a_newer_compatible_schema_keeps_serving(
    openbao: OpenBaoDevServer, tmp_path: Path, serve: Callable[[Settings], str]
) -> None:
    url = f"sqlite:///{tmp_path / 'ahead.db'}"
    upgrade(url)
    bao = OpenBaoSettings(url=openbao.url, token=openbao.root_token)
    address = serve(_settings(url, bao))
    _wait_for(address, "SERVING")
    _pretend_newer_migration(url, head_revision())
    time.sleep(1.0)  # several probe rounds
    assert _health(address) == "SERVING"
    # the call is served (nothing to find), not refused by the guard
    with VaultClient(address, api_key=ADMIN_KEY, timeout=5) as vc:
        assert vc.find_records("demo", {"email": "a@example.com"}) == []


def test_a_newer_incompatible_schema_is_not_serving(
    openbao: OpenBaoDevServer,
    tmp_path: Path,
    serve: Callable[[Settings], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"sqlite:///{tmp_path / 'breaking.db'}"
    upgrade(url)
    bao = OpenBaoSettings(url=openbao.url, token=openbao.root_token)
    caplog.set_level(logging.INFO, logger="vault.api.server")
    address = serve(_settings(url, bao))
    _wait_for(address, "SERVING")
    _pretend_newer_migration(url, "9999")
    _wait_for(address, "NOT_SERVING")
    assert _logged(caplog, "NOT_SERVING", "schema", "newer than this server", "9999")


def _degraded() -> float | None:
    return REGISTRY.get_sample_value("cvault_health_degraded")


def test_a_black_holed_key_server_degrades_but_serves_while_keys_are_cached(
    openbao: OpenBaoDevServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 15: with OpenBao unreachable every replica turned NOT_SERVING at once although
    reads kept working from the caches (a load balancer would take the whole service out).
    Now: degraded (a warning, ``cvault_health_degraded`` 1) and SERVING while cached keys
    serve; a call that needs the key server fails UNAVAILABLE; NOT_SERVING once no cached key
    is left; SERVING and not degraded after the heal."""
    host, _, port = openbao.url.removeprefix("http://").partition(":")
    proxy = TcpProxy(host, int(port))
    url = f"sqlite:///{tmp_path / 'degraded.db'}"
    upgrade(url)
    bao = OpenBaoSettings(url=f"http://{proxy.address}", token=openbao.root_token)
    app = build_app(_settings(url, bao))
    running = app.serve("127.0.0.1:0")
    caplog.set_level(logging.INFO, logger="vault.api.server")
    try:
        with VaultClient(
            running.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=20
        ) as vc:
            _wait_for(running.address, "SERVING")
            created = vc.create_record("demo", sample_record(1))
            proxy.partition()  # packets dropped: connections open, nothing answers
            held = time.monotonic() + 4.0  # many probe rounds (every 0.2 s)
            while time.monotonic() < held:
                assert _health(running.address) == "SERVING"
                time.sleep(0.2)
            assert _degraded() == 1.0
            assert any(
                r.levelno == logging.WARNING and "degraded, still SERVING" in r.getMessage()
                for r in caplog.records
            )
            assert vc.get_record("demo", created.record_id).fields["email"].output == "plain"
            app.services.core.keys.tenant_keys.clear()  # caches gone (aged out, say)
            app.services.core.keys.data_keys.clear()
            with pytest.raises(Unavailable):
                vc.get_record("demo", created.record_id, timeout=8)
            _wait_for(running.address, "NOT_SERVING")
            assert _logged(caplog, "NOT_SERVING", "key_server", "unreachable")
            proxy.heal()
            _wait_for(running.address, "SERVING")
            assert _degraded() == 0.0
            assert vc.get_record("demo", created.record_id).fields["email"].output == "plain"
    finally:
        proxy.close()
        running.stop(0.5)
        app.close()
