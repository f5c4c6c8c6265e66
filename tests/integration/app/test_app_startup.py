"""A server that starts is a server that can serve: start-up checks name what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import API_KEYS
from vault.app import build_app
from vault.client import VaultClient
from vault.config import AuthSettings, OpenBaoSettings, Settings
from vault.errors import ConfigError, Unauthenticated
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.storage import upgrade

pytestmark = pytest.mark.openbao


def _settings(db_url: str, bao_url: str, token: str) -> Settings:
    return Settings(
        database_url=db_url,
        openbao=OpenBaoSettings(url=bao_url, token=token),
        auth=AuthSettings(api_keys={"test-admin": API_KEYS["test-admin"][1]}),
    )


def test_ready_when_migrated_and_key_server_up(openbao: OpenBaoDevServer, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ok.db'}"
    upgrade(url)
    app = build_app(_settings(url, openbao.url, openbao.root_token))
    try:
        app.check_ready()
    finally:
        app.close()


def test_unreachable_key_server_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ok.db'}"
    upgrade(url)
    app = build_app(_settings(url, "http://127.0.0.1:9", "unused"))
    try:
        with pytest.raises(ConfigError, match="key server unreachable"):
            app.check_ready()
    finally:
        app.close()


def test_no_way_to_authenticate_fails_at_build(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'x.db'}", openbao=OpenBaoSettings(token="t")
    )
    with pytest.raises(ConfigError, match="enable mTLS, API keys"):
        build_app(settings)


def test_bad_schema_file_fails_at_build(tmp_path: Path) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text("schema_version: 1\nfields:\n  email: {class: emial}\n")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", schema=str(schema))
    with pytest.raises(ConfigError, match=r"schema\.yaml:3"):
        build_app(settings)


def test_unauthenticated_calls_are_refused_and_audited(
    openbao: OpenBaoDevServer, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'auth.db'}"
    upgrade(url)
    app = build_app(_settings(url, openbao.url, openbao.root_token))
    running = app.serve("127.0.0.1:0")
    try:
        for key in (None, "cvk_test-admin_" + "A" * 43):
            with VaultClient(running.address, api_key=key, timeout=10) as vc:
                with pytest.raises(Unauthenticated):
                    vc.find_records("t", {"email": "a@example.com"})
                assert vc.health() == "SERVING"  # health needs no credentials
        with app.db.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT action, outcome, reason FROM audit_events ORDER BY seq"
            ).all()
        assert [tuple(r) for r in rows] == [
            ("auth.authenticate", "denied", "missing_credentials"),
            ("auth.authenticate", "denied", "bad_api_key"),
        ]
    finally:
        running.stop(grace=0)
        app.close()
