"""``cvault --version``, ``cvault completion``, ``--json`` on every operator command, and the exit
statuses of the one error path (0 ok, 1 local, 2 usage, 3 server)."""

from __future__ import annotations

import argparse
import json
import socket
from importlib import metadata
from pathlib import Path

import pytest
import sqlalchemy.exc

from vault.cli import EPILOG, build_parser, main
from vault.cli._common import EXIT_LOCAL, EXIT_SERVER, EXIT_USAGE

#: commands that serve (no result to print) or print a script
NOT_OPERATOR = {"dev", "serve", "completion"}


@pytest.fixture(autouse=True)
def _no_dev_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CVAULT_STATE_DIR", str(tmp_path / "state"))
    for name in (
        "CVAULT_ADDRESS",
        "CVAULT_API_KEY",
        "CVAULT_CA",
        "CVAULT_CERT",
        "CVAULT_KEY",
        "BAO_TOKEN",
        "VAULT_TOKEN",
        "BAO_ADDR",
        "VAULT_ADDR",
        "BAO_CACERT",
        "VAULT_CACERT",
    ):
        monkeypatch.delenv(name, raising=False)


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[str, object]:
    """Every runnable command ("keys status", "create", ...) -> its parser."""
    found: dict[str, object] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_leaves(sub, (*path, name)))
    if not found and path:
        found[" ".join(path)] = parser
    return found


def test_version_is_the_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"cvault {metadata.version('customer-vault')}"


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert "cvault" in script
    for word in ("tokenize-file", "rotate-field", "--ca", "--json", "--config"):
        assert word in script, word


def test_completion_of_an_unknown_shell_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["completion", "tcsh"])
    assert exited.value.code == EXIT_USAGE


def test_every_operator_and_client_command_takes_json() -> None:
    leaves = _leaves(build_parser())
    assert "keys status" in leaves
    assert "records erase" in leaves
    missing = [
        name
        for name, parser in leaves.items()
        if name not in NOT_OPERATOR
        and "--json" not in getattr(parser, "_option_string_actions", {})
    ]
    assert missing == []


def test_help_documents_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "exit status:" in out
    for line in ("0  done", "1  local error", "2  usage", "3  server error"):
        assert line in out
        assert line in EPILOG


def test_missing_settings_exit_1_with_a_json_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "status", "--json"]) == EXIT_LOCAL
    out, err = capsys.readouterr()
    assert out == ""
    assert json.loads(err) == {
        "error": "missing_setting",
        "message": "no settings: pass --config FILE or run `make dev` first",
    }
    assert main(["tokens", "purge"]) == EXIT_LOCAL
    assert capsys.readouterr().err.startswith("cvault: missing_setting: no settings")


def test_a_bad_config_file_is_a_local_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["tenants", "list", "--config", str(tmp_path / "none.toml"), "--json"]) == 1
    assert json.loads(capsys.readouterr().err)["error"] == "config_error"


def test_keys_init_needs_a_token_and_a_readable_ca(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert main(["keys", "init", "--url", "https://127.0.0.1:1", "--json"]) == EXIT_LOCAL
    assert json.loads(capsys.readouterr().err)["error"] == "missing_setting"
    monkeypatch.setenv("BAO_TOKEN", "t")
    monkeypatch.setenv("BAO_CACERT", str(tmp_path / "missing.pem"))
    assert main(["keys", "init", "--url", "https://127.0.0.1:1"]) == EXIT_LOCAL
    assert "cannot read BAO_CACERT file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["records", "purge"],  # --expired is required
        ["keys", "rotate-field"],  # --class or --all
        ["keys", "shred-pools", "--since", "yesterday"],
        ["create", "no-equals-sign", "--address", "127.0.0.1:1"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--json"]) == EXIT_USAGE
    assert json.loads(capsys.readouterr().err)["error"] == "usage"


def test_argparse_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["keys", "no-such-command"])
    assert exited.value.code == EXIT_USAGE


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cert", "c.pem"], "--cert and --key"),
        (["--key", "k.pem"], "--cert and --key"),
        (["--cert", "c.pem", "--key", "k.pem"], "mTLS needs the server's CA"),
    ],
)
def test_client_tls_option_errors_are_usage_errors(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["get", "r", "--address", "127.0.0.1:1", *flags]) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_an_unreadable_ca_from_the_environment_is_a_local_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CVAULT_CA", str(tmp_path / "missing.pem"))
    assert main(["find", "email=a@example.com", "--address", "127.0.0.1:1"]) == EXIT_LOCAL
    assert "cannot read --ca file" in capsys.readouterr().err


def test_an_unreachable_server_exits_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("CVAULT_API_KEY", "cvk_test_x")
    assert main(["records", "erase", "--record", "r", "--address", address, "--json"]) == 3
    problem = json.loads(capsys.readouterr().err)
    assert problem["error"] == "unavailable"
    assert problem["message"].startswith("cannot reach the server: ")
    assert EXIT_SERVER == 3


def test_no_address_is_a_local_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CVAULT_API_KEY", "cvk_test_x")
    assert main(["get", "r"]) == EXIT_LOCAL
    assert "no server address" in capsys.readouterr().err


def _database_refusal(args: argparse.Namespace) -> int:
    """A database refusal as SQLAlchemy raises it: the statement, and a driver message whose
    DETAIL names a key (what a constraint's message does)."""
    orig = RuntimeError("duplicate key: DETAIL: Key (id)=(6a1f-secret-id) already exists")
    raise sqlalchemy.exc.IntegrityError(
        "UPDATE data_keys SET wrapped=:w WHERE id=:id", {"w": b"\x01wrapped", "id": "6a1f"}, orig
    )


@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_error_is_one_line_without_its_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], debug: bool
) -> None:
    """Issue 15: a rotation stopped on a database refusal printed SQLAlchemy's traceback, with
    the statement and its bind parameters. Now one line names the cause; ``--debug`` adds the
    traceback's frames, never a message or parameter."""
    monkeypatch.setattr("vault.cli.keys.cmd_status", _database_refusal)
    status = main([*(["--debug"] if debug else []), "keys", "status"])
    out, err = capsys.readouterr()
    assert status == EXIT_LOCAL
    lines = [line for line in err.splitlines() if line.startswith("cvault:")]
    assert lines == [
        "cvault: internal_error: the database refused a statement"
        " (IntegrityError: RuntimeError); see --debug"
    ]
    for leaked in ("secret-id", "6a1f", "wrapped", "UPDATE", "DETAIL"):
        assert leaked not in out + err
    assert ("Traceback" in err) is debug
