"""What the command modules share: the dev state folder and its settings file, the client of the
client commands, the operator commands' settings, key server and session, and printing."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, TypeAlias

from vault.cli import _server
from vault.client import VaultClient
from vault.config import OpenBaoSettings, Settings, load_settings
from vault.schema import FieldClass

#: the settings file ``cvault dev`` writes into the state folder and the other commands read
DEV_SETTINGS = "dev.json"
#: the field classes with a transit key of their own (``keys init``, ``--all``, ``keys status``)
FIELD_CLASSES = tuple(c.value for c in FieldClass)
CONFIG_HELP = "TOML settings (default: make dev's settings)"
ADDRESS_HELP = "server address (default: from make dev's settings)"

#: what ``add_subparsers`` returns, where each command module adds its parsers
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir or os.environ.get("CVAULT_STATE_DIR", ".cvault"))


def dev_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What ``cvault dev`` wrote to its settings file (nothing when it never ran)."""
    path = state_dir(args) / DEV_SETTINGS
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


# --- client commands ---------------------------------------------------------------------------


def add_client_options(p: argparse.ArgumentParser) -> None:
    """``--address`` and ``--tenant`` (``--as ROLE`` is a global option of ``cvault``)."""
    p.add_argument("--address", help=ADDRESS_HELP)
    p.add_argument("--tenant")


def add_client_parser(sub: Subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    """A command that talks to the server as a client, with its client options."""
    p = sub.add_parser(name, help=help_text)
    add_client_options(p)
    return p


def client(args: argparse.Namespace) -> VaultClient:
    """A client acting as ``--as ROLE`` with that role's dev API key (or $CVAULT_API_KEY)."""
    dev = dev_settings(args)
    address = args.address or os.environ.get("CVAULT_ADDRESS") or dev.get("address")
    if not address:
        raise SystemExit("no server address: pass --address or run `make dev` first")
    key = os.environ.get("CVAULT_API_KEY") or dict(dev.get("api_keys", {})).get(args.role)
    if not key:
        raise SystemExit(f"no API key for role {args.role!r}: set CVAULT_API_KEY")
    return VaultClient(address, api_key=str(key), purpose=getattr(args, "purpose", "") or "")


def tenant(args: argparse.Namespace) -> str:
    return str(args.tenant or dev_settings(args).get("tenant") or "demo")


# --- operator commands -------------------------------------------------------------------------


def operator_settings(args: argparse.Namespace) -> Settings:
    """Settings for operator commands: from --config (production: the admin/operator
    credentials in the environment) or from `make dev`'s settings file."""
    if args.config:
        return load_settings(args.config)
    dev = dev_settings(args)
    if not dev:
        raise SystemExit("no settings: pass --config FILE or run `make dev` first")
    return Settings(
        database_url=str(dev["database_url"]),
        openbao=OpenBaoSettings(url=str(dev["openbao_url"]), token=str(dev["openbao_root_token"])),
    )


def operator(args: argparse.Namespace, settings: Settings | None = None) -> _server.Operator:
    """An operator command's session (its audit log), from ``settings`` or
    :func:`operator_settings`."""
    return _server.Operator(settings if settings is not None else operator_settings(args))


def admin_token(args: argparse.Namespace) -> str:
    """The operator's OpenBao token: $BAO_TOKEN / $VAULT_TOKEN, else `make dev`'s root token."""
    token = os.environ.get("BAO_TOKEN") or os.environ.get("VAULT_TOKEN") or ""
    if not token and not args.config:
        token = str(dev_settings(args).get("openbao_root_token") or "")
    if not token:
        raise SystemExit("set BAO_TOKEN (or VAULT_TOKEN) to an admin token")
    return token


def key_server(args: argparse.Namespace) -> tuple[str, str, str]:
    """(url, key prefix, transit mount) from --config, or `make dev`'s settings."""
    if args.config:
        bao = load_settings(args.config).openbao
        return bao.url, bao.key_prefix, bao.mount
    return str(dev_settings(args)["openbao_url"]), "cvault", "transit"
