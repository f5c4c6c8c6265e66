"""The ``cvault`` command line: one module per command group, each registering its own parsers.

- :mod:`~vault.cli.dev`: ``dev``, ``serve``, ``db upgrade``, and the signal loop both servers
  stop through;
- :mod:`~vault.cli.keys`, :mod:`~vault.cli.audit`, :mod:`~vault.cli.tokens`: operator commands;
- :mod:`~vault.cli.records`: the client commands on records, ``records erase`` and
  ``records purge``;
- :mod:`~vault.cli.files`: ``tokenize-file`` and ``reveal-file`` (their formats in
  :mod:`~vault.cli._formats`);
- :mod:`~vault.cli.progress`: the one progress display, of the key rotations and the file tools;
- :mod:`~vault.cli._common`: what the commands share (dev settings, client, operator settings);
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
import sys
from collections.abc import Sequence

from vault import errors
from vault.cli import audit, dev, files, keys, records, tenants, tokens

#: what ``cvault --help`` says under its usage
DESCRIPTION = (
    "``cvault``: run the service (``dev``, ``serve``), operate it (``db``, ``keys``) and try it"
    " by\nhand (``create``, ``get``, ``update``, ``find``, ``delete``)."
)

#: commands that log at INFO (the client commands log only warnings)
_SERVER_SIDE = ("dev", "serve", "db", "keys", "audit", "tenants")

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cvault", description=DESCRIPTION)
    p.add_argument("--state-dir", help="dev state folder (default .cvault or $CVAULT_STATE_DIR)")
    p.add_argument("-v", "--verbose", action="store_true")
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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The ``cvault`` script: run one command; its exit status."""
    args = build_parser().parse_args(argv)
    server_side = args.command in _SERVER_SIDE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if server_side else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except errors.VaultServiceError as exc:
        print(f"cvault: {exc.reason}: {exc.message}", file=sys.stderr)
        return 1
