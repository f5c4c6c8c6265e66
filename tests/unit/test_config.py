"""Settings: the example file loads, mistakes fail at start naming the file, secrets stay out."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import repo_root
from vault.app import call_limits
from vault.config import load_settings
from vault.errors import ConfigError


def test_example_settings_load(tmp_path: Path) -> None:
    text = (repo_root() / "deploy" / "vault.example.toml").read_text()
    (tmp_path / "role").write_text("the-role\n")
    (tmp_path / "secret").write_text("the-secret\n")
    text = text.replace("/run/secrets/cvault/role_id", str(tmp_path / "role"))
    text = text.replace("/run/secrets/cvault/secret_id", str(tmp_path / "secret"))
    cfg = tmp_path / "vault.toml"
    cfg.write_text(text)
    settings = load_settings(cfg, env={})
    assert settings.openbao.auth == "approle"
    assert settings.openbao.role_id == "the-role"
    assert settings.openbao.secret_id == "the-secret"
    assert settings.cache.data_keys.max_entries == 100_000
    assert settings.shutdown_grace_seconds == 10.0
    assert "the-secret" not in repr(settings)


def test_environment_overrides(tmp_path: Path) -> None:
    settings = load_settings(
        None, env={"CVAULT_DATABASE_URL": "sqlite:///x.db", "CVAULT_OPENBAO_TOKEN": "s.tok"}
    )
    assert settings.database_url == "sqlite:///x.db"
    assert settings.openbao.token == "s.tok"
    assert "s.tok" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('listn = "x"\n', "unknown settings"),
        ('[openbao]\ntoken = "s.inline"\n', "put token in a file"),
        ('[openbao]\nauth = "ldap"\n', "auth must be"),
        ("listen = [\n", "vault.toml"),
        ("[cache]\ndata_keys_max_entries = 0\n", "positive"),
        ("shutdown_grace_seconds = -1\n", "shutdown_grace_seconds must be"),
    ],
)
def test_bad_settings_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "vault.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message) as exc:
        load_settings(cfg, env={})
    assert str(cfg) in str(exc.value)
    assert "s.inline" not in str(exc.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nmax_stream = 3\n", "unknown [server] settings ['max_stream']"),
        ('[server]\nreflection = "no"\n', "[server] reflection must be true or false"),
        ("[server]\nmax_streams = 15\n", "max_streams must be 1..max_workers - reserved_workers"),
        ("[server]\nreserved_workers = 0\n", "reserved_workers must be at least 1"),
    ],
)
def test_bad_server_settings_stop_the_start(tmp_path: Path, text: str, message: str) -> None:
    """The admission bounds (issue 11) are checked when the server is built from settings."""
    cfg = tmp_path / "vault.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        call_limits(load_settings(cfg, env={}))
    assert message in str(info.value)


def test_server_settings_reach_the_call_limits(tmp_path: Path) -> None:
    cfg = tmp_path / "vault.toml"
    cfg.write_text("max_workers = 32\n[server]\nmax_streams = 20\nreflection = false\n")
    limits = call_limits(load_settings(cfg, env={}))
    assert (limits.max_workers, limits.max_streams, limits.reflection) == (32, 20, False)


def test_the_database_url_can_come_from_a_file(tmp_path: Path) -> None:
    """Issue 12: a password in the URL need not sit in the settings file (a mounted secret)."""
    url_file = tmp_path / "database_url"
    url_file.write_text("postgresql://cvault:s3cret@db/cvault\n")
    settings_file = tmp_path / "vault.toml"
    settings_file.write_text(f'database_url_file = "{url_file}"\n')
    assert (
        load_settings(settings_file, env={}).database_url == "postgresql://cvault:s3cret@db/cvault"
    )
