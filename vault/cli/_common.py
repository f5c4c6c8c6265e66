"""What the command modules share: the dev state folder and its settings file, the client of the
client commands (its TLS options), the operator commands' settings, key server and session,
``--json`` output, and the one error path with its exit statuses."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import requests

from vault import errors
from vault.cli import _server
from vault.client import VaultClient
from vault.config import OpenBaoSettings, Settings, load_settings
from vault.schema import FieldClass

#: the settings file ``cvault dev`` writes into the state folder and the other commands read
DEV_SETTINGS = "dev.json"
#: the field classes with a transit key of their own (``keys init``, ``--all``, ``keys status``)
FIELD_CLASSES = tuple(c.value for c in FieldClass)
CONFIG_HELP = "TOML settings (default: make dev's settings)"
ADDRESS_HELP = "server address (default: $CVAULT_ADDRESS, else make dev's settings)"

#: exit statuses (``cvault --help`` and the README list them)
EXIT_OK = 0
#: a local error: a bad or unreadable file, invalid settings, a missing setting; also a check
#: the command made that failed (``audit verify`` found a bad row, ``keys retire`` refused)
EXIT_LOCAL = 1
#: bad usage (argparse's own status)
EXIT_USAGE = 2
#: the server, the key server or the database refused or failed
EXIT_SERVER = 3

#: what ``add_subparsers`` returns, where each command module adds its parsers
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CliError(Exception):
    """A failure a command reports (one line on stderr, or JSON with ``--json``) and exits
    with ``status``. Its message names files, settings and URLs, never a customer value."""

    def __init__(self, message: str, *, reason: str = "error", status: int = EXIT_LOCAL) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.status = status


def usage_error(message: str) -> CliError:
    """A bad combination of options or arguments (exit 2)."""
    return CliError(message, reason="usage", status=EXIT_USAGE)


def state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir or os.environ.get("CVAULT_STATE_DIR", ".cvault"))


def dev_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What ``cvault dev`` wrote to its settings file (nothing when it never ran)."""
    path = state_dir(args) / DEV_SETTINGS
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}


# --- output ----------------------------------------------------------------------------------


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def add_json_option(p: argparse.ArgumentParser) -> None:
    """``--json``: the command's result as one JSON document on stdout, errors as JSON on
    stderr."""
    p.add_argument(
        "--json", action="store_true", help="machine-readable output (errors as JSON on stderr)"
    )


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def report_error(args: argparse.Namespace, reason: str, message: str) -> None:
    """The one way an error reaches the operator: ``cvault: reason: message`` on stderr, or
    ``{"error": reason, "message": message}`` with ``--json``."""
    if wants_json(args):
        print(json.dumps({"error": reason, "message": message}), file=sys.stderr)
    else:
        print(f"cvault: {reason}: {message}", file=sys.stderr)


def unexpected_error(exc: BaseException, *, debug: bool) -> str:
    """The one line an unexpected error gets: its kind (and, for the database's refusal, the
    driver's error class), never its message: a database error's message carries the SQL
    statement and may carry values (a constraint's DETAIL names the key). With ``debug``, the
    traceback's frames go to stderr first, again without any message."""
    if debug:
        frames = "".join(traceback.format_tb(exc.__traceback__))
        print(f"Traceback (most recent call last):\n{frames}{type(exc).__name__}", file=sys.stderr)
    kind = type(exc).__name__
    orig = getattr(exc, "orig", None)
    if orig is not None:
        return f"the database refused a statement ({kind}: {type(orig).__name__}); see --debug"
    return f"unexpected {kind}; see --debug, and please report it"


class Report:
    """What a command prints: text lines as they come, or with ``--json`` the items collected
    (or the document given to :meth:`done`) as one JSON document at the end."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json = wants_json(args)
        self.items: list[Any] = []

    def line(self, text: str, item: Any = None) -> None:
        if not self.json:
            print(text, flush=True)
        if item is not None:
            self.items.append(item)

    def done(self, document: Any = None) -> None:
        if self.json:
            print_json(self.items if document is None else document)


# --- client commands -------------------------------------------------------------------------


def add_client_options(p: argparse.ArgumentParser) -> None:
    """``--address``, ``--tenant``, the TLS options and ``--json`` (``--as ROLE`` is a global
    option of ``cvault``)."""
    p.add_argument("--address", help=ADDRESS_HELP)
    p.add_argument("--tenant")
    tls = p.add_argument_group("TLS (default: plaintext, for make dev's API-key port)")
    tls.add_argument("--ca", metavar="FILE", help="the server's CA: use TLS ($CVAULT_CA)")
    tls.add_argument(
        "--cert", metavar="FILE", help="client certificate: mTLS, needs --key ($CVAULT_CERT)"
    )
    tls.add_argument("--key", metavar="FILE", help="its private key ($CVAULT_KEY)")
    add_json_option(p)


def add_client_parser(sub: Subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    """A command that talks to the server as a client, with its client options."""
    p = sub.add_parser(name, help=help_text)
    add_client_options(p)
    return p


@dataclass(frozen=True)
class ClientTls:
    """The TLS files of a client command (``--ca/--cert/--key`` or ``$CVAULT_*``)."""

    ca: str = ""
    cert: str = ""
    key: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.ca or self.cert)


def client_tls(args: argparse.Namespace) -> ClientTls:
    """The TLS options, each from its flag or else its environment variable.

    Raises:
        CliError: (usage) only one of the certificate and its key, or a certificate without
            the server's CA.
    """

    def pick(name: str) -> str:
        return str(getattr(args, name, None) or os.environ.get(f"CVAULT_{name.upper()}") or "")

    tls = ClientTls(pick("ca"), pick("cert"), pick("key"))
    if bool(tls.cert) != bool(tls.key):
        raise usage_error("give the client certificate and its key together (--cert and --key)")
    if tls.cert and not tls.ca:
        raise usage_error("mTLS needs the server's CA too (--ca FILE or $CVAULT_CA)")
    for what, path in (("--ca", tls.ca), ("--cert", tls.cert), ("--key", tls.key)):
        if path and not os.access(path, os.R_OK):
            raise CliError(f"cannot read {what} file {path}", reason="bad_file")
    return tls


def client(args: argparse.Namespace) -> VaultClient:
    """A client of the server at ``--address`` (or $CVAULT_ADDRESS, or make dev's): with
    ``--cert/--key``, authenticated by that certificate over mTLS; otherwise with the API key of
    ``--as ROLE`` (or $CVAULT_API_KEY), over TLS when ``--ca`` is given."""
    tls = client_tls(args)
    args.client_tls = tls  # for the error path's hint
    dev = dev_settings(args)
    default = dev.get("mtls_address") if tls.cert else dev.get("address")
    address = args.address or os.environ.get("CVAULT_ADDRESS") or default
    if not address:
        raise CliError(
            "no server address: pass --address, set CVAULT_ADDRESS or run `make dev` first",
            reason="missing_setting",
        )
    purpose = getattr(args, "purpose", "") or ""
    if tls.cert:
        return VaultClient.mtls(address, ca=tls.ca, cert=tls.cert, key=tls.key, purpose=purpose)
    key = os.environ.get("CVAULT_API_KEY") or dict(dev.get("api_keys", {})).get(args.role)
    if not key:
        raise CliError(
            f"no API key for role {args.role!r}: set CVAULT_API_KEY, or use --cert/--key",
            reason="missing_setting",
        )
    if tls.ca:
        return VaultClient.tls(address, ca=tls.ca, api_key=str(key), purpose=purpose)
    return VaultClient(address, api_key=str(key), purpose=purpose)


def tenant(args: argparse.Namespace) -> str:
    return str(args.tenant or dev_settings(args).get("tenant") or "demo")


# --- operator commands -----------------------------------------------------------------------


def add_operator_options(p: argparse.ArgumentParser) -> None:
    """``--config`` and ``--json``, which every operator command takes."""
    p.add_argument("--config", help=CONFIG_HELP)
    add_json_option(p)


def operator_settings(args: argparse.Namespace) -> Settings:
    """Settings for operator commands: from --config (production: the admin/operator
    credentials in the environment) or from `make dev`'s settings file."""
    if args.config:
        settings = load_settings(args.config)
        check_ca_file(settings.openbao.ca_cert, "[openbao] ca_cert")
    else:
        dev = dev_settings(args)
        if not dev:
            raise CliError(
                "no settings: pass --config FILE or run `make dev` first", reason="missing_setting"
            )
        settings = Settings(
            database_url=str(dev["database_url"]),
            openbao=OpenBaoSettings(
                url=str(dev["openbao_url"]), token=str(dev["openbao_root_token"])
            ),
        )
    remember_key_server(args, settings.openbao.url, settings.openbao.ca_cert or True)
    return settings


def operator(args: argparse.Namespace, settings: Settings | None = None) -> _server.Operator:
    """An operator command's session (its audit log), from ``settings`` or
    :func:`operator_settings`."""
    return _server.Operator(settings if settings is not None else operator_settings(args))


def admin_token(args: argparse.Namespace) -> str:
    """The operator's OpenBao token: $BAO_TOKEN / $VAULT_TOKEN, else the token of --config's
    ``[openbao]`` (``auth = "token"``: ``token_file`` or $CVAULT_OPENBAO_TOKEN, as a CronJob
    mounts it), else `make dev`'s root token."""
    token = os.environ.get("BAO_TOKEN") or os.environ.get("VAULT_TOKEN") or ""
    config = getattr(args, "config", None)
    if not token and config:
        token = load_settings(config).openbao.token
    elif not token:
        token = str(dev_settings(args).get("openbao_root_token") or "")
    if not token:
        raise CliError(
            "set BAO_TOKEN (or VAULT_TOKEN) to an admin token, or token_file in [openbao]",
            reason="missing_setting",
        )
    return token


@dataclass(frozen=True)
class KeyServer:
    """Where the operator's admin calls go: the URL, the key prefix and transit mount, and what
    verifies the server's certificate (``[openbao] ca_cert``, else the system's roots)."""

    url: str
    prefix: str
    mount: str
    verify: bool | str


def env_ca_cert() -> str:
    """The CA file the bao CLI would use: $BAO_CACERT, else $VAULT_CACERT."""
    return os.environ.get("BAO_CACERT") or os.environ.get("VAULT_CACERT") or ""


def check_ca_file(path: str, what: str) -> None:
    """Raises CliError (exit 1) when a configured CA file cannot be read."""
    if path and not os.access(path, os.R_OK):
        raise CliError(f"cannot read {what} file {path}", reason="bad_file")


def key_server(args: argparse.Namespace) -> KeyServer:
    """The key server from --config (its ``[openbao] ca_cert``, else $BAO_CACERT), or from
    `make dev`'s settings."""
    if args.config:
        bao = load_settings(args.config).openbao
        ca = bao.ca_cert or env_ca_cert()
        check_ca_file(ca, "[openbao] ca_cert" if bao.ca_cert else "BAO_CACERT")
        found = KeyServer(bao.url, bao.key_prefix, bao.mount, ca or True)
    else:
        dev = dev_settings(args)
        if "openbao_url" not in dev:
            raise CliError(
                "no settings: pass --config FILE or run `make dev` first", reason="missing_setting"
            )
        found = KeyServer(str(dev["openbao_url"]), "cvault", "transit", True)
    remember_key_server(args, found.url, found.verify)
    return found


def remember_key_server(args: argparse.Namespace, url: str, verify: bool | str) -> None:
    """Note the key server this command talks to, for :func:`tls_problem` on failure."""
    args.key_server_url, args.key_server_verify = url, verify


def tls_problem(args: argparse.Namespace) -> str | None:
    """Why the command's key server fails TLS verification (probing its health endpoint), or
    None when it does not (it is down, or it is not the problem)."""
    url = getattr(args, "key_server_url", "")
    if not url.startswith("https://"):
        return None
    try:
        requests.get(
            f"{url.rstrip('/')}/v1/sys/health",
            verify=getattr(args, "key_server_verify", True),
            timeout=5,
        )
    except requests.exceptions.SSLError as exc:
        detail = "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else ""
        return (
            f"the key server's TLS certificate at {url} was not accepted"
            + (f" ({detail})" if detail else "")
            + ": set [openbao] ca_cert (keys init: --ca-cert or $BAO_CACERT) to its CA"
        )
    except requests.exceptions.RequestException:
        return None
    return None


_REASON = re.compile(r"[a-z][a-z0-9_]*")


def service_error(args: argparse.Namespace, exc: errors.VaultServiceError) -> tuple[str, str, int]:
    """(reason, message, exit status) of a failure of the server, the key server or the
    database: exit 3, except a certificate that does not verify (``tls_error``, exit 1; the
    key server is probed once when the command used one)."""
    if _REASON.fullmatch(exc.reason):
        reason, message = exc.reason, exc.message
    else:  # gRPC's own details (no reason of ours before the first ": ")
        reason, message = type(exc).reason, f"{exc.reason}: {exc.message}"
    if isinstance(exc, errors.KeyServerTlsError):
        return "tls_error", exc.message, EXIT_LOCAL
    # a key-server failure may come wrapped (the audit log's "audit key unavailable"): a
    # certificate that does not verify is the cause whatever the wrapping
    problem = tls_problem(args)
    if problem:
        return "tls_error", problem, EXIT_LOCAL
    tls = getattr(args, "client_tls", None)
    if isinstance(tls, ClientTls) and isinstance(exc, errors.Unavailable):
        if "CERTIFICATE_VERIFY_FAILED" in message:
            return "tls_error", f"the server's certificate was not accepted: {message}", EXIT_LOCAL
        if not tls.enabled:
            message += (
                "; if the server requires TLS, pass --ca FILE (and --cert/--key for mTLS)"
                " or set CVAULT_CA (CVAULT_CERT, CVAULT_KEY)"
            )
        message = f"cannot reach the server: {message}"
    return reason, message, EXIT_SERVER
