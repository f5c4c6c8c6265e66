"""``cvault``'s parser: each command module registers its own commands, in the order ``cvault
--help`` has always listed them, and building it does not load the server stack."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vault.cli import build_parser, main

COMMANDS = [
    "dev",
    "serve",
    "db",
    "tenants",
    "keys",
    "audit",
    "tokens",
    "create",
    "get",
    "update",
    "find",
    "delete",
    "records",
    "consent",
    "access",
    "export",
    "tokenize-file",
    "reveal-file",
    "completion",
]


def test_help_lists_every_command_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert "{" + ",".join(COMMANDS) + "}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "func"),
    [
        (["serve"], "vault.cli.dev.cmd_serve"),
        (["db", "upgrade"], "vault.cli.dev.cmd_db_upgrade"),
        (["keys", "rotate-tenant", "--all"], "vault.cli.keys.cmd_rotate_tenant"),
        (["audit", "verify"], "vault.cli.audit.cmd_verify"),
        (["tokens", "purge"], "vault.cli.tokens.cmd_purge"),
        (["records", "erase", "--record", "r"], "vault.cli.records.cmd_delete"),
        (["delete", "r"], "vault.cli.records.cmd_delete"),
        (
            ["reveal-file", "a", "b", "--fields", "x", "--purpose", "p"],
            "vault.cli.files.cmd_reveal_file",
        ),
    ],
)
def test_each_command_runs_its_modules_function(argv: list[str], func: str) -> None:
    handler = build_parser().parse_args(argv).func
    assert f"{handler.__module__}.{handler.__name__}" == func


def test_parsing_loads_no_server_stack() -> None:
    # `cvault --help`, the client commands and the file tools start without SQLAlchemy, Alembic
    # and the service layer: vault.cli._server imports them when a command first uses them
    probe = (
        "import sys\n"
        "from vault.cli import build_parser\n"
        "build_parser().parse_args(['get', 'r'])\n"
        "loaded = [m for m in ('sqlalchemy', 'alembic', 'vault.service', 'vault.app', "
        "'vault.storage', 'vault.audit') if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
