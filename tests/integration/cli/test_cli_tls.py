"""The CLI over TLS: client commands reach a server that requires mTLS with ``--ca/--cert/--key``
(or ``CVAULT_CA``/``CVAULT_CERT``/``CVAULT_KEY``), and a TLS + API-key server with ``--ca``;
without them they fail with exit 3 and say how to give them. Operator commands reach an OpenBao
served over TLS (``bao server -dev -dev-tls``) with ``[openbao] ca_cert`` / ``keys init
--ca-cert`` / ``BAO_CACERT``; without the CA they report a certificate problem naming the URL
(``tls_error``, exit 1), not an outage."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support import API_KEYS, FIELD_CLASSES, KEY_PREFIX, api_key_of
from vault.api import RunningServer
from vault.app import App, build_app
from vault.cli import main
from vault.config import AuthSettings, OpenBaoSettings, Settings
from vault.devcerts import DevPki, generate_dev_pki
from vault.keys import init_field_keys
from vault.keys.openbao_dev import OpenBaoDevServer, find_bao_binary
from vault.storage import upgrade

pytestmark = pytest.mark.openbao

TENANT = "demo"  # the deployed sample policy's roles reach it
ROLE = "backend-service"
PURPOSE = "account-management"
TLS_ENV = ("CVAULT_CA", "CVAULT_CERT", "CVAULT_KEY", "CVAULT_ADDRESS", "CVAULT_API_KEY")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TLS settings, admin token or dev state from the caller's environment."""
    for name in (*TLS_ENV, "BAO_CACERT", "VAULT_CACERT", "BAO_TOKEN", "VAULT_TOKEN", "BAO_ADDR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CVAULT_STATE_DIR", str(tmp_path / "no-dev-state"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``cvault ARGV`` in this process: (exit status, stdout, stderr)."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


# --- the gRPC server -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return generate_dev_pki(tmp_path_factory.mktemp("pki"), roles=(ROLE,))


def _app(openbao: OpenBaoDevServer, folder: Path, auth: AuthSettings) -> App:
    url = f"sqlite:///{folder / 'vault.db'}"
    upgrade(url)
    settings = Settings(
        database_url=url,
        openbao=OpenBaoSettings(url=openbao.url, token=openbao.root_token),
        auth=auth,
    )
    app = build_app(settings)  # the deployed sample policy
    app.create_tenants([TENANT], created_by="test")
    return app


@pytest.fixture(scope="module")
def mtls_server(
    openbao: OpenBaoDevServer, pki: DevPki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A server that requires a client certificate (no API keys at all)."""
    auth = AuthSettings(
        tls_cert_file=str(pki.server.cert),
        tls_key_file=str(pki.server.key),
        client_ca_file=str(pki.ca.cert),
    )
    app = _app(openbao, tmp_path_factory.mktemp("mtls"), auth)
    running = app.serve("127.0.0.1:0")
    try:
        yield running
    finally:
        running.stop(grace=0)
        app.close()


@pytest.fixture(scope="module")
def tls_server(
    openbao: OpenBaoDevServer, pki: DevPki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """TLS without client certificates: callers authenticate with an API key."""
    key_id = f"dev-{ROLE}"
    auth = AuthSettings(
        tls_cert_file=str(pki.server.cert),
        tls_key_file=str(pki.server.key),
        api_keys={key_id: API_KEYS[key_id][1]},
    )
    app = _app(openbao, tmp_path_factory.mktemp("tls"), auth)
    running = app.serve("127.0.0.1:0")
    try:
        yield running
    finally:
        running.stop(grace=0)
        app.close()


def _mtls_flags(pki: DevPki) -> list[str]:
    client = pki.clients[ROLE]
    return ["--ca", str(pki.ca.cert), "--cert", str(client.cert), "--key", str(client.key)]


def test_client_commands_reach_an_mtls_server_with_the_flags(
    mtls_server: RunningServer, pki: DevPki, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--address", mtls_server.address, "--tenant", TENANT, *_mtls_flags(pki)]
    status, out, err = run(capsys, "create", "email=ada@example.com", *where)
    assert status == 0, err
    record_id = json.loads(out)["record_id"]
    status, out, err = run(capsys, "get", record_id, "--purpose", PURPOSE, *where)
    assert status == 0, err
    assert json.loads(out)["fields"]["email"]["value"] == "ada@example.com"
    status, out, err = run(capsys, "records", "erase", "--record", record_id, *where)
    assert status == 0, err
    assert json.loads(out)["record_id"] == record_id


def test_client_commands_take_the_tls_files_from_the_environment(
    mtls_server: RunningServer,
    pki: DevPki,
    tmp_path: Path,
) -> None:
    """As a separate process (the installed script's way), with only CVAULT_* variables."""
    client = pki.clients[ROLE]
    env = dict(
        os.environ,
        CVAULT_ADDRESS=mtls_server.address,
        CVAULT_CA=str(pki.ca.cert),
        CVAULT_CERT=str(client.cert),
        CVAULT_KEY=str(client.key),
    )
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"email": "grace@example.com"}) + "\n")
    argv = ["tokenize-file", str(src), str(out), "--fields", "email", "--tenant", TENANT]
    done = subprocess.run(
        [sys.executable, "-m", "vault.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    token = json.loads(out.read_text())["email"]
    assert token != "grace@example.com"
    assert token.startswith("tok_")


def test_without_the_tls_options_a_client_command_fails_with_exit_3(
    mtls_server: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CVAULT_API_KEY", api_key_of(ROLE))
    where = ["--address", mtls_server.address, "--tenant", TENANT]
    status, out, err = run(capsys, "find", "email=ada@example.com", *where)
    assert status == 3
    assert out == ""
    assert err.startswith("cvault: unavailable: cannot reach the server: ")
    assert "pass --ca FILE (and --cert/--key for mTLS)" in err
    status, _, err = run(capsys, "find", "email=ada@example.com", *where, "--json")
    assert status == 3
    problem = json.loads(err)
    assert problem["error"] == "unavailable"
    assert "--ca" in problem["message"]


def test_a_server_certificate_from_another_ca_is_a_tls_error(
    mtls_server: RunningServer,
    pki: DevPki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = generate_dev_pki(tmp_path / "other", roles=(ROLE,))
    client = pki.clients[ROLE]
    flags = ["--ca", str(other.ca.cert), "--cert", str(client.cert), "--key", str(client.key)]
    where = ["--address", mtls_server.address, "--tenant", TENANT, *flags]
    status, _, err = run(capsys, "find", "email=ada@example.com", *where, "--json")
    assert status == 1, err
    assert json.loads(err)["error"] == "tls_error"


def test_server_tls_with_an_api_key(
    tls_server: RunningServer,
    pki: DevPki,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CVAULT_API_KEY", api_key_of(ROLE))
    where = ["--address", tls_server.address, "--tenant", TENANT]
    status, out, err = run(
        capsys, "create", "email=lin@example.com", *where, "--ca", str(pki.ca.cert)
    )
    assert status == 0, err
    assert json.loads(out)["record_id"]
    status, _, err = run(capsys, "find", "email=lin@example.com", *where)
    assert status == 3
    assert "--ca" in err


def test_a_half_given_client_certificate_is_a_usage_error(
    pki: DevPki, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cert = str(pki.clients[ROLE].cert)
    assert run(capsys, "get", "r", "--address", "x:1", "--cert", cert)[0] == 2
    status, _, err = run(capsys, "get", "r", "--address", "x:1", "--ca", str(tmp_path / "none"))
    assert status == 1
    assert "cannot read --ca file" in err


# --- OpenBao over TLS ------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsOpenBao:
    url: str
    ca: Path
    token: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def tls_openbao() -> Iterator[TlsOpenBao]:
    """``bao server -dev -dev-tls``: in memory, its CA written into a folder of ours."""
    folder = Path(tempfile.mkdtemp(prefix="cvault-bao-tls-"))
    port, token = _free_port(), "dev-tls-root"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env["BAO_DEV_ROOT_TOKEN_ID"] = token
    argv = [find_bao_binary(), "server", "-dev", "-dev-tls", f"-dev-tls-cert-dir={folder}"]
    argv += ["-dev-no-store-token", f"-dev-listen-address=127.0.0.1:{port}"]
    with open(folder / "server.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = TlsOpenBao(f"https://127.0.0.1:{port}", folder / "vault-ca.pem", token)
    try:
        _wait_ready(server)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_ready(server: TlsOpenBao) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.ca.exists():
            try:
                health = requests.get(
                    f"{server.url}/v1/sys/health", verify=str(server.ca), timeout=2
                )
                if health.status_code == 200:
                    return
            except requests.RequestException:
                pass
        time.sleep(0.2)
    raise AssertionError("bao -dev-tls did not start")


@pytest.fixture(scope="module")
def keyed_openbao(tls_openbao: TlsOpenBao) -> TlsOpenBao:
    init_field_keys(
        tls_openbao.url,
        tls_openbao.token,
        key_prefix=KEY_PREFIX,
        field_classes=FIELD_CLASSES,
        verify=str(tls_openbao.ca),
    )
    return tls_openbao


def _config(folder: Path, bao: TlsOpenBao, monkeypatch: pytest.MonkeyPatch, *, ca: bool) -> Path:
    """Settings over a database of the test's own; the operator's tokens in the environment."""
    monkeypatch.setenv("CVAULT_OPENBAO_TOKEN", bao.token)
    monkeypatch.setenv("BAO_TOKEN", bao.token)
    url = f"sqlite:///{folder / 'operator.db'}"
    upgrade(url)
    cfg = folder / "vault.toml"
    ca_line = f'ca_cert = "{bao.ca}"\n' if ca else ""
    cfg.write_text(
        f'database_url = "{url}"\n[openbao]\nurl = "{bao.url}"\n'
        f'key_prefix = "{KEY_PREFIX}"\n{ca_line}'
    )
    return cfg


def test_keys_init_verifies_openbao_with_ca_cert(
    tls_openbao: TlsOpenBao, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAO_TOKEN", tls_openbao.token)
    init = ["keys", "init", "--url", tls_openbao.url, "--json"]
    status, out, err = run(capsys, *init, "--ca-cert", str(tls_openbao.ca))
    assert status == 0, err
    assert f"{KEY_PREFIX}-email" in json.loads(out)["keys"]
    monkeypatch.setenv("BAO_CACERT", str(tls_openbao.ca))
    status, out, err = run(capsys, *init)
    assert status == 0, err
    assert f"{KEY_PREFIX}-audit" in json.loads(out)["keys"]


def test_keys_init_without_the_ca_reports_the_certificate(
    tls_openbao: TlsOpenBao, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAO_TOKEN", tls_openbao.token)
    status, out, err = run(capsys, "keys", "init", "--url", tls_openbao.url, "--json")
    assert (status, out) == (1, "")
    problem = json.loads(err)
    assert problem["error"] == "tls_error"
    assert tls_openbao.url in problem["message"]
    assert "ca_cert" in problem["message"]


def test_operator_commands_honour_ca_cert(
    keyed_openbao: TlsOpenBao,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = str(_config(tmp_path, keyed_openbao, monkeypatch, ca=True))
    status, out, err = run(capsys, "tenants", "create", "acme", "--config", cfg, "--json")
    assert status == 0, err
    assert json.loads(out) == [{"name": "acme", "created": True}]
    status, out, err = run(capsys, "keys", "status", "--config", cfg, "--json")
    assert status == 0, err
    assert json.loads(out)
    status, out, err = run(capsys, "tokens", "purge", "--config", cfg, "--json")
    assert status == 0, err
    assert json.loads(out) == {"expired_tokens": 0, "dry_run": False}
    status, out, err = run(capsys, "audit", "verify", "--config", cfg, "--json")
    assert status == 0, err
    assert all(chain["ok"] for chain in json.loads(out))
    status, out, err = run(capsys, "keys", "shred-report", "--config", cfg, "--json")
    assert status == 0, err
    assert json.loads(out)["complete"] is True


def test_operator_commands_without_ca_cert_report_a_tls_error(
    keyed_openbao: TlsOpenBao,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = str(_config(tmp_path, keyed_openbao, monkeypatch, ca=False))
    for argv in (["keys", "status"], ["tenants", "create", "acme"], ["audit", "verify"]):
        status, _, err = run(capsys, *argv, "--config", cfg)
        assert status == 1, (argv, err)
        assert err.startswith("cvault: tls_error: "), (argv, err)
        assert keyed_openbao.url in err
        assert "unavailable" not in err


def test_an_unreadable_ca_cert_is_a_local_error(
    keyed_openbao: TlsOpenBao,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = _config(tmp_path, keyed_openbao, monkeypatch, ca=False)
    cfg.write_text(cfg.read_text() + f'ca_cert = "{tmp_path / "missing.pem"}"\n')
    status, _, err = run(capsys, "tenants", "list", "--config", str(cfg), "--json")
    assert status == 1
    assert json.loads(err)["error"] == "bad_file"
