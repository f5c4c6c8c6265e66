"""``cvault tokens purge``: delete the tokens whose TTL passed (operator)."""

from __future__ import annotations

import argparse

from vault.cli import _server
from vault.cli._common import CONFIG_HELP, Subparsers, operator


def register(sub: Subparsers) -> None:
    tokens = sub.add_parser("tokens", help="token table operations").add_subparsers(
        dest="tokens_command", required=True
    )
    tp = tokens.add_parser("purge", help="delete the tokens whose TTL passed")
    tp.add_argument("--dry-run", action="store_true", help="only count them")
    tp.add_argument("--batch", type=int, default=1000, help="rows per transaction")
    tp.add_argument("--config", help=CONFIG_HELP)
    tp.set_defaults(func=cmd_purge)


def cmd_purge(args: argparse.Namespace) -> int:
    """Delete the tokens whose TTL passed (``--dry-run``: only count them). Audited."""
    with operator(args) as op:
        n = _server.purge_expired_tokens(op.db, batch=args.batch, dry_run=args.dry_run)
        if args.dry_run:
            print(f"{n} expired tokens would be purged")
        else:
            op.audit("admin.tokens.purge", f"purged {n}")
            print(f"purged {n} expired tokens")
    return 0
