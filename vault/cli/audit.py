"""``cvault audit verify`` and ``cvault audit query``: the operator's view of the audit log,
straight from the database and the key server (not through the gRPC API)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from vault.cli._common import CONFIG_HELP, Subparsers, operator, print_json, tenant
from vault.deadline import Deadline

if TYPE_CHECKING:  # the audit package pulls in SQLAlchemy: not at parse time
    from vault.audit import VerifyReport


def register(sub: Subparsers) -> None:
    audit = sub.add_parser("audit", help="audit log operations").add_subparsers(
        dest="audit_command", required=True
    )
    av = audit.add_parser(
        "verify", help="verify every chain against its checkpoints; exit 1 naming the first bad row"
    )
    av.add_argument(
        "--chain", help="verify only this chain (default: every chain in the database or in KV)"
    )
    av.add_argument("--config", help=CONFIG_HELP)
    av.set_defaults(func=cmd_verify)
    aq = audit.add_parser("query", help="who saw this customer's data, when and why")
    aq.add_argument("record_id")
    aq.add_argument("--tenant")
    aq.add_argument("--limit", type=int, default=1000)
    aq.add_argument("--config", help=CONFIG_HELP)
    aq.set_defaults(func=cmd_query)


def cmd_verify(args: argparse.Namespace) -> int:
    """Recompute every MAC chain (or the one named by ``--chain``) and compare each with every
    checkpoint of it kept in OpenBao; exit 1 naming, for each chain that fails, the first
    edited, deleted, inserted or reordered row, a truncated tail, or a checkpoint that
    disagrees with the rows, is missing or is malformed."""
    with operator(args) as op:
        deadline = Deadline.after(600)
        if args.chain:
            reports = [op.log.verify_chain(args.chain, deadline=deadline)]
        else:
            reports = op.log.verify_all(deadline=deadline)
        failed = [r for r in reports if not r.ok]
        op.audit("admin.audit.verify", failed[0].problem if failed else "ok")
    for report in reports:
        _print_report(report)
    return 1 if failed else 0


def _print_report(report: VerifyReport) -> None:
    """One line per chain: seqs, chain names and problem names only, never a value."""
    if report.ok:
        checkpoints = (
            f" against {report.checkpoints} checkpoint(s), the newest at seq"
            f" {report.checkpoint_seq}"
            if report.checkpoint_seq
            else ""
        )
        print(f"audit chain {report.chain}: OK, {report.checked} rows verified{checkpoints}")
        return
    row = f"row seq {report.first_bad_seq}" if report.first_bad_seq is not None else "the chain"
    print(
        f"audit chain {report.chain}: FAILED at {row}: {report.problem}. {report.detail}",
        file=sys.stderr,
    )


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
