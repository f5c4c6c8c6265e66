"""``cvault audit verify`` and ``cvault audit query``: the operator's view of the audit log,
straight from the database and the key server (not through the gRPC API)."""

from __future__ import annotations

import argparse
import sys

from vault.cli._common import CONFIG_HELP, Subparsers, operator, print_json, tenant
from vault.deadline import Deadline


def register(sub: Subparsers) -> None:
    audit = sub.add_parser("audit", help="audit log operations").add_subparsers(
        dest="audit_command", required=True
    )
    av = audit.add_parser("verify", help="verify the MAC chain; exit 1 naming the first bad row")
    av.add_argument("--config", help=CONFIG_HELP)
    av.set_defaults(func=cmd_verify)
    aq = audit.add_parser("query", help="who saw this customer's data, when and why")
    aq.add_argument("record_id")
    aq.add_argument("--tenant")
    aq.add_argument("--limit", type=int, default=1000)
    aq.add_argument("--config", help=CONFIG_HELP)
    aq.set_defaults(func=cmd_query)


def cmd_verify(args: argparse.Namespace) -> int:
    """Recompute the MAC chain; exit 1 naming the first edited, deleted, inserted or reordered
    row, or a truncated tail (against the checkpoint kept in OpenBao)."""
    with operator(args) as op:
        report = op.log.verify(deadline=Deadline.after(600))
        op.audit("admin.audit.verify", "ok" if report.ok else report.problem)
    if report.ok:
        print(
            f"audit chain {report.chain}: OK, {report.checked} rows verified"
            + (f" (checkpoint at seq {report.checkpoint_seq})" if report.checkpoint_seq else "")
        )
        return 0
    row = f"row seq {report.first_bad_seq}" if report.first_bad_seq is not None else "the chain"
    print(
        f"audit chain {report.chain}: FAILED at {row}: {report.problem}. {report.detail}",
        file=sys.stderr,
    )
    return 1


def cmd_query(args: argparse.Namespace) -> int:
    """Who saw this customer's data, when and why (operator view, straight from the log)."""
    with operator(args) as op:
        entries = op.log.query(
            tenant(args), args.record_id, deadline=Deadline.after(60), limit=args.limit
        )
    print_json(
        [
            {
                "time": e.time.isoformat(),
                "principal": e.principal,
                "role": e.role,
                "action": e.action,
                "purpose": e.purpose,
                "field_classes": list(e.field_classes),
                "outcome": e.outcome,
                "reason": e.reason,
                "request_id": e.request_id,
                "on_behalf_of": e.on_behalf_of,
                "seq": e.seq,
            }
            for e in entries
        ]
    )
    return 0
