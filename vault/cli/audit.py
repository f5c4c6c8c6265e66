"""``cvault audit verify``, ``cvault audit query`` and ``cvault audit re-anchor``: the
operator's view of the audit log, straight from the database and the key server (not through
the gRPC API)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING

from vault.cli._common import (
    CONFIG_HELP,
    CliError,
    Subparsers,
    add_json_option,
    operator,
    print_json,
    tenant,
    usage_error,
    wants_json,
)
from vault.deadline import Deadline
from vault.errors import VaultServiceError

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
    add_json_option(av)
    av.set_defaults(func=cmd_verify)
    aq = audit.add_parser("query", help="who saw this customer's data, when and why")
    aq.add_argument("record_id")
    aq.add_argument("--tenant")
    aq.add_argument("--limit", type=int, default=1000)
    aq.add_argument("--config", help=CONFIG_HELP)
    add_json_option(aq)  # its output is JSON either way
    aq.set_defaults(func=cmd_query)
    ar = audit.add_parser(
        "re-anchor",
        help="after a database restore: record the restore in the chain and re-anchor it to its"
        " checkpoints (every server stopped; exit 1 when refused)",
    )
    ar.add_argument(
        "--reason",
        required=True,
        help="why, recorded in the chain: a ticket or incident id, at most 64 characters,"
        " never a customer value",
    )
    ar.add_argument(
        "--chain",
        help="the chain to re-anchor (`cvault audit verify` names each; default: [audit] chain"
        " when the settings name one)",
    )
    ar.add_argument("--config", help=CONFIG_HELP)
    add_json_option(ar)
    ar.set_defaults(func=cmd_reanchor)


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
    if wants_json(args):
        print_json([_report_json(r) for r in reports])
        return 1 if failed else 0
    for report in reports:
        _print_report(report)
    return 1 if failed else 0


def _after_checkpoint(report: VerifyReport) -> int:
    """Rows after the chain's newest checkpoint: what a truncation with a rewritten head
    could still remove unnoticed (see ``vault/audit/__init__.py``, "the window")."""
    return max(0, report.last_seq - (report.checkpoint_seq or 0))


def _report_json(report: VerifyReport) -> dict[str, object]:
    return {**dataclasses.asdict(report), "rows_after_checkpoint": _after_checkpoint(report)}


def _print_report(report: VerifyReport) -> None:
    """One line per chain: its rows, its newest checkpoint and the rows after it; seqs, chain
    names and problem names only, never a value."""
    if report.ok:
        if report.checkpoint_seq:
            written = f" (written {report.checkpoint_time})" if report.checkpoint_time else ""
            checkpoints = (
                f" against {report.checkpoints} checkpoint(s), the newest at seq"
                f" {report.checkpoint_seq}{written}; {_after_checkpoint(report)} rows after it"
            )
        else:
            checkpoints = "; no checkpoint yet"
        print(f"audit chain {report.chain}: OK, {report.checked} rows verified{checkpoints}")
        for reanchor in report.reanchors:
            print(f"audit chain {report.chain}: {reanchor.describe()}")
        return
    row = f"row seq {report.first_bad_seq}" if report.first_bad_seq is not None else "the chain"
    print(
        f"audit chain {report.chain}: FAILED at {row}: {report.problem}. {report.detail}",
        file=sys.stderr,
    )


def cmd_reanchor(args: argparse.Namespace) -> int:
    """Record a database restore in the audit chain (an ``audit.reanchor`` row naming the lost
    range, MAC'd like every row) and write its checkpoint in a new epoch, so that ``audit
    verify`` accounts for the checkpoints of the rows the restore lost and reports it."""
    reason = args.reason.strip()
    if not reason or len(reason) > 64 or not reason.isprintable():
        raise usage_error("--reason must be 1-64 printable characters")
    with operator(args) as op:
        # Each server process has a chain of its own: the one to re-anchor is named, or the
        # one the settings give every server.
        chain = args.chain or op.settings.audit.chain
        if not chain:
            raise usage_error(
                "name the chain to re-anchor with --chain (`cvault audit verify` lists each"
                " chain and whether it needs one)"
            )
        try:
            done = op.log.reanchor(
                op.event("audit.reanchor", reason=reason), chain=chain, deadline=Deadline.after(600)
            )
        except VaultServiceError as exc:
            if exc.reason != "reanchor_refused":
                raise
            op.audit("admin.audit.reanchor", "refused")
            raise CliError(exc.message, reason=exc.reason) from None
    if wants_json(args):
        print_json(dataclasses.asdict(done))
    else:
        print(f"audit chain {chain}: {done.describe()}")
    return 0


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
