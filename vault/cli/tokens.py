"""``cvault tokens purge``: delete the tokens whose TTL passed; ``cvault tokens fingerprint``:
give tokens made before value fingerprints (migration 0007) theirs, so that an erasure finds
them (operator)."""

from __future__ import annotations

import argparse

from vault.cli import _server
from vault.cli._common import Report, Subparsers, add_operator_options, operator


def register(sub: Subparsers) -> None:
    tokens = sub.add_parser("tokens", help="token table operations").add_subparsers(
        dest="tokens_command", required=True
    )
    tp = tokens.add_parser("purge", help="delete the tokens whose TTL passed")
    tp.add_argument("--dry-run", action="store_true", help="only count them")
    tp.add_argument("--batch", type=int, default=1000, help="rows per transaction")
    add_operator_options(tp)
    tp.set_defaults(func=cmd_purge)
    tf = tokens.add_parser(
        "fingerprint",
        help="fingerprint tokens made before fingerprints existed (so erasures reach them)",
    )
    tf.add_argument("--batch", type=int, default=500, help="tokens per transaction")
    add_operator_options(tf)
    tf.set_defaults(func=cmd_fingerprint)


def cmd_purge(args: argparse.Namespace) -> int:
    """Delete the tokens whose TTL passed (``--dry-run``: only count them). Audited."""
    out = Report(args)
    with operator(args) as op:
        n = _server.purge_expired_tokens(op.db, batch=args.batch, dry_run=args.dry_run)
        if args.dry_run:
            out.line(f"{n} expired tokens would be purged")
        else:
            op.audit("admin.tokens.purge", f"purged {n}")
            out.line(f"purged {n} expired tokens")
    out.done({"expired_tokens": n, "dry_run": args.dry_run})
    return 0


def cmd_fingerprint(args: argparse.Namespace) -> int:
    """Fingerprint, under the current index key, every live token without one (or under an
    older index-key version), per tenant and class. Resumable; audited."""
    out = Report(args)
    with operator(args) as op:
        core = op.services().core
        total = 0
        for r in _server.operations.fingerprint_all(core, batch=args.batch):
            total += r.fingerprinted
            done = f"{r.fingerprinted} fingerprinted, {r.skipped} erased"
            item = {
                "tenant": r.tenant,
                "class": r.field_class,
                "fingerprinted": r.fingerprinted,
                "skipped": r.skipped,
            }
            out.line(f"{r.tenant}/{r.field_class}: {done}", item)
        op.audit("admin.tokens.fingerprint", f"fingerprinted {total}")
        out.line(f"fingerprinted {total} tokens")
    out.done({"fingerprinted": total, "classes": out.items})
    return 0
