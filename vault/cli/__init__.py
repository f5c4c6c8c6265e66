"""The ``cvault`` command line: one module per command group, each registering its own parsers.

- :mod:`~vault.cli.dev`: ``dev``, ``serve``, ``db upgrade``, and the signal loop both servers
  stop through;
- :mod:`~vault.cli.keys`, :mod:`~vault.cli.audit`, :mod:`~vault.cli.tokens`: operator commands;
- :mod:`~vault.cli.records`: the client commands on records, ``records erase`` and
  ``records purge``;
- :mod:`~vault.cli.files`: ``tokenize-file`` and ``reveal-file`` (their formats in
  :mod:`~vault.cli._formats`);
- :mod:`~vault.cli.progress`: the one progress display, of the key rotations and the file tools;
- :mod:`~vault.cli._common`: what the commands share (dev settings, the client and its TLS
  options, operator settings and key server, ``--json``, the one error path and exit statuses);
- :mod:`~vault.cli._operations`: the operator commands' session (audit log, the service layer
  from the one composition root ``vault.app.build_services``, the operator's audit events);
- :mod:`~vault.cli._server`: the server stack (the app, the operator operations of the service
  layer), imported when a command first uses it, so that ``cvault --help``, the client
  commands and the file tools start without SQLAlchemy, Alembic and the service layer (about
  0.6 s).

Every import is at module level; the server stack is reached through ``_server``'s attributes.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from importlib import metadata

import shtab

from vault import errors, logs
from vault.cli import audit, dev, files, keys, records, tenants, tokens
from vault.cli._common import (
    EXIT_LOCAL,
    CliError,
    report_error,
    service_error,
    unexpected_error,
)

#: what ``cvault --help`` says under its usage
DESCRIPTION = (
    "``cvault``: run the service (``dev``, ``serve``), operate it (``db``, ``keys``) and try it"
    " by\nhand (``create``, ``get``, ``update``, ``find``, ``delete``)."
)
#: what ``cvault --help`` says last
EPILOG = """\
client commands: --address/$CVAULT_ADDRESS, --as ROLE or $CVAULT_API_KEY; TLS with
  --ca/$CVAULT_CA (the server's CA), mTLS with --cert/$CVAULT_CERT and --key/$CVAULT_KEY.
operator commands: --config FILE (its [openbao] ca_cert verifies the key server), --json.

exit status:
  0  done
  1  local error: a bad or unreadable file, invalid or missing settings, a key server
     certificate that does not verify (tls_error); or a check that failed (audit verify
     found a bad row, keys retire/trim refused, reveal-file --strict)
  2  usage: bad options or arguments
  3  server error: the server, the key server or the database refused or failed
"""
#: the distribution ``cvault --version`` reports
DISTRIBUTION = "customer-vault"
#: commands that log at INFO (the client commands log only warnings)
_SERVER_SIDE = ("dev", "serve", "db", "keys", "audit", "tenants")

__all__ = ["build_parser", "main", "version"]


def version() -> str:
    """The installed version of the ``customer-vault`` distribution."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cvault",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    p.add_argument("--state-dir", help="dev state folder (default .cvault or $CVAULT_STATE_DIR)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument(
        "--debug",
        action="store_true",
        help="on an unexpected error, also print where it happened (the traceback's frames;"
        " never a message, SQL parameter or value)",
    )
    p.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default=os.environ.get("CVAULT_LOG_FORMAT") or None,
        help="log lines as text or JSON objects, with request ids (default: the settings'"
        " [logging] format, else text; or $CVAULT_LOG_FORMAT)",
    )
    p.add_argument(
        "--as",
        dest="role",
        default="backend-service",
        help="client commands: act as this sample-policy role (its dev API key)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    # the order `cvault --help` lists
    for group in (dev, tenants, keys, audit, tokens, records, files):
        group.register(sub)
    c = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    c.add_argument("shell", choices=("bash", "zsh"))
    c.set_defaults(func=lambda args: _print_completion(p, args.shell))
    return p


def _print_completion(parser: argparse.ArgumentParser, shell: str) -> int:
    """``cvault completion bash|zsh``: e.g. ``source <(cvault completion bash)``."""
    print(shtab.complete(parser, shell=shell))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``cvault`` script: run one command; its exit status (see :data:`EPILOG`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.log_format not in (None, *logs.FORMATS):
        parser.error(f"CVAULT_LOG_FORMAT must be one of {', '.join(logs.FORMATS)}")
    server_side = args.command in _SERVER_SIDE
    logs.configure(
        args.log_format or "text",
        logging.DEBUG if args.verbose else logging.INFO if server_side else logging.WARNING,
        explicit=args.log_format is not None,
    )
    if not args.verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except CliError as exc:
        report_error(args, exc.reason, exc.message)
        return exc.status
    except errors.ConfigError as exc:
        report_error(args, exc.reason, exc.message)
        return EXIT_LOCAL
    except errors.VaultServiceError as exc:
        reason, message, status = service_error(args, exc)
        report_error(args, reason, message)
        return status
    except OSError as exc:  # a file the command was given or writes
        name = exc.filename if isinstance(exc.filename, str) else ""
        problem = exc.strerror or type(exc).__name__
        report_error(args, "os_error", f"{name + ': ' if name else ''}{problem}")
        return EXIT_LOCAL
    except Exception as exc:  # a bug or a database refusal: one line, never its message
        report_error(args, "internal_error", unexpected_error(exc, debug=args.debug))
        return EXIT_LOCAL
