"""The client commands on records (``create``, ``get``, ``update``, ``find``, ``delete``,
``consent``, ``access``, ``export``, and ``records erase``, which is ``delete``), acting as a
policy role through the gRPC API; and ``records purge``, the operator's retention run."""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from vault.cli import _server
from vault.cli._common import (
    Report,
    Subparsers,
    add_client_options,
    add_client_parser,
    add_operator_options,
    client,
    operator,
    print_json,
    tenant,
    usage_error,
)


def register(sub: Subparsers) -> None:
    _add_record_commands(sub)
    _add_records_group(sub)
    _add_consent_and_access_commands(sub)


def _add_record_commands(sub: Subparsers) -> None:
    c = add_client_parser(sub, "create", "create a record: cvault create email=... phone=...")
    c.add_argument("fields", nargs="+", metavar="FIELD=VALUE")
    c.add_argument("--idempotency-key")
    c.set_defaults(func=cmd_create)
    g = add_client_parser(sub, "get", "read a record (tokens; --reveal uses the dev admin key)")
    g.add_argument("record_id")
    g.add_argument("--field", action="append")
    g.add_argument("--purpose", help="why you read (a purpose of the policy)")
    g.set_defaults(func=cmd_get)
    u = add_client_parser(sub, "update", "update a record")
    u.add_argument("record_id")
    u.add_argument("--expected-version", type=int, required=True)
    u.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="fields")
    u.add_argument("--clear", action="append", metavar="FIELD")
    u.set_defaults(func=cmd_update)
    f = add_client_parser(sub, "find", "find records by searchable fields")
    f.add_argument("match", nargs="+", metavar="FIELD=VALUE")
    f.add_argument("--limit", type=int, default=0)
    f.set_defaults(func=cmd_find)
    x = add_client_parser(sub, "delete", "crypto-shred a record and print the erasure receipt")
    x.add_argument("record_id")
    x.set_defaults(func=cmd_delete)


def _add_records_group(sub: Subparsers) -> None:
    records = sub.add_parser("records", help="record operations").add_subparsers(
        dest="records_command", required=True
    )
    er = records.add_parser(
        "erase", help="crypto-shred a record (DeleteRecord) and print the erasure receipt"
    )
    er.add_argument("--record", dest="record_id", required=True)
    add_client_options(er)
    er.set_defaults(func=cmd_delete)
    rp = records.add_parser("purge", help="crypto-shred what is past the schema's retention")
    rp.add_argument("--expired", action="store_true", help="required: purge what has expired")
    rp.add_argument("--dry-run", action="store_true", help="only count")
    rp.add_argument("--batch", type=int, default=100, help="records per transaction")
    add_operator_options(rp)
    rp.set_defaults(func=cmd_records_purge)


def _add_consent_and_access_commands(sub: Subparsers) -> None:
    cn = add_client_parser(sub, "consent", "show, or --set, the purposes a customer consents to")
    cn.add_argument("record_id")
    cn.add_argument("--set", help="comma-separated purposes (the complete new set)")
    cn.add_argument("--expected-version", type=int, default=0)
    cn.add_argument("--source", default="cvault-cli")
    cn.set_defaults(func=cmd_consent)
    ac = add_client_parser(sub, "access", "who saw this customer's data, when and why (audit.read)")
    ac.add_argument("record_id")
    ac.add_argument("--limit", type=int, default=0)
    ac.add_argument("--purpose")
    ac.set_defaults(func=cmd_access)
    ex = add_client_parser(sub, "export", "data subject access export (record.export)")
    ex.add_argument("record_id")
    ex.add_argument("--purpose", default="dsar")
    ex.add_argument("--recipient-key", help="file with a base64 X25519 public key: seal to it")
    ex.add_argument("--output", help="write the document here instead of stdout")
    ex.set_defaults(func=cmd_export)


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise usage_error(f"{what} must be name=value (got a field without '=')")
        out[name] = value
    return out


def cmd_create(args: argparse.Namespace) -> int:
    fields = _pairs(args.fields, "fields")
    with client(args) as vc:
        r = vc.create_record(tenant(args), fields, idempotency_key=args.idempotency_key or "")
    print_json({"record_id": r.record_id, "version": r.version, "tokens": dict(r.tokens)})
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    with client(args) as vc:
        r = vc.get_record(tenant(args), args.record_id, fields=args.field or ())
    print_json(
        {
            "record_id": r.record_id,
            "version": r.version,
            "fields": {k: {"output": v.output, "value": v.value} for k, v in r.fields.items()},
        }
    )
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    fields = _pairs(args.fields, "fields")
    with client(args) as vc:
        r = vc.update_record(
            tenant(args),
            args.record_id,
            expected_version=args.expected_version,
            set_fields=fields,
            clear_fields=args.clear or (),
        )
    print_json(
        {
            "record_id": r.record_id,
            "version": r.version,
            "tokens": dict(r.tokens),
            "destroyed_data_key_ids": list(r.destroyed_data_key_ids),
        }
    )
    return 0


def cmd_find(args: argparse.Namespace) -> int:
    match = _pairs(args.match, "match")
    with client(args) as vc:
        ids = vc.find_records(tenant(args), match, limit=args.limit)
    print_json({"record_ids": ids})
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """``delete`` and ``records erase``: DeleteRecord, printing the erasure receipt."""
    with client(args) as vc:
        r = vc.delete_record(tenant(args), args.record_id)
    print_json(
        {
            "tenant": r.tenant,
            "record_id": r.record_id,
            "erased_at": r.erased_at.isoformat(),
            "data_key_ids": list(r.data_key_ids),
            "tokens_erased": r.tokens_erased,
            "effective_everywhere_by": (
                r.effective_everywhere_by.isoformat() if r.effective_everywhere_by else None
            ),
        }
    )
    return 0


def cmd_consent(args: argparse.Namespace) -> int:
    with client(args) as vc:
        if args.set is None:
            c = vc.get_consent(tenant(args), args.record_id)
        else:
            c = vc.update_consent(
                tenant(args),
                args.record_id,
                [p for p in args.set.split(",") if p],
                expected_version=args.expected_version,
                source=args.source,
            )
    print_json(
        {
            "version": c.version,
            "purposes": list(c.purposes),
            "source": c.source,
            "updated_at": c.updated_at.isoformat() if c.updated_at else None,
        }
    )
    return 0


def cmd_access(args: argparse.Namespace) -> int:
    with client(args) as vc:
        events = vc.query_access(tenant(args), args.record_id, limit=args.limit)
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
            }
            for e in events
        ]
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    key = b""
    if args.recipient_key:
        key = base64.b64decode(Path(args.recipient_key).read_text().strip())
    with client(args) as vc:
        media_type, document = vc.export_customer_data(
            tenant(args), args.record_id, recipient_public_key=key
        )
    if args.output:
        Path(args.output).write_bytes(document)
        Report(args).line(f"{media_type}: {len(document)} bytes written to {args.output}")
        Report(args).done({"media_type": media_type, "bytes": len(document), "output": args.output})
    else:
        sys.stdout.buffer.write(document + b"\n")
    return 0


def cmd_records_purge(args: argparse.Namespace) -> int:
    """Crypto-shred what the schema's retention says is past it (records, class values)."""
    if not args.expired:
        raise usage_error("say --expired (what the schema's retention periods are past)")
    with operator(args) as op:
        report = _server.operations.purge_expired(
            op.services().core,
            now=datetime.now(UTC),
            event=op.event,
            batch=args.batch,
            dry_run=args.dry_run,
        )
    out = Report(args)
    if args.dry_run:
        out.line(
            f"would erase {report.records} records and shred {report.values} class keys"
            " past their retention (dry run)"
        )
    else:
        out.line(f"erased {report.records} records; shredded {report.values} values past retention")
    out.done({"records": report.records, "values": report.values, "dry_run": args.dry_run})
    return 0
