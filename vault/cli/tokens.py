"""``cvault tokens purge``: delete the tokens whose TTL passed; ``cvault tokens fingerprint``:
give tokens made before value fingerprints (migration 0007) theirs, so that an erasure finds
them (operator)."""

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
    tf = tokens.add_parser(
        "fingerprint",
        help="fingerprint tokens made before fingerprints existed (so erasures reach them)",
    )
    tf.add_argument("--batch", type=int, default=500, help="tokens per transaction")
    tf.add_argument("--config", help=CONFIG_HELP)
    tf.set_defaults(func=cmd_fingerprint)


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


def cmd_fingerprint(args: argparse.Namespace) -> int:
    """Fingerprint, under the current index key, every live token without one (or under an
    older index-key version), per tenant and class. Resumable; audited."""
    with operator(args) as op:
        core = op.services().core
        total = 0
        for r in _server.operations.fingerprint_all(core, batch=args.batch):
            total += r.fingerprinted
            done = f"{r.fingerprinted} fingerprinted, {r.skipped} erased"
            print(f"{r.tenant}/{r.field_class}: {done}")
        op.audit("admin.tokens.fingerprint", f"fingerprinted {total}")
        print(f"fingerprinted {total} tokens")
    return 0
