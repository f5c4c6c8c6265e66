"""``cvault tenants ...``: the tenants the vault serves, for operators. A tenant exists only once
created here (or by a write of a role with ``tenant.create``); a write to any other tenant is
refused (NOT_FOUND, ``tenant_unknown``). Creations are audited as ``operator:<user>``."""

from __future__ import annotations

import argparse

from vault.cli import _server
from vault.cli._common import Report, Subparsers, add_operator_options, operator, usage_error
from vault.deadline import Deadline
from vault.errors import InvalidInput


def register(sub: Subparsers) -> None:
    tenants = sub.add_parser("tenants", help="create and list tenants").add_subparsers(
        dest="tenants_command", required=True
    )
    c = tenants.add_parser("create", help="create tenants (existing ones are left as they are)")
    c.add_argument("names", nargs="+", metavar="TENANT")
    add_operator_options(c)
    c.set_defaults(func=cmd_create)
    ls = tenants.add_parser("list", help="every tenant, when and by whom it was created")
    add_operator_options(ls)
    ls.set_defaults(func=cmd_list)


def cmd_create(args: argparse.Namespace) -> int:
    """Create each tenant named; an existing one is reported, not an error."""
    out = Report(args)
    with operator(args) as op:
        tenants = op.services().core.tenants
        for name in args.names:
            try:
                _server.check_tenant(name)
            except InvalidInput:
                raise usage_error(f"tenants create: not a tenant name: {name!r}") from None
            event = op.event("admin.tenants.create", name)
            made = tenants.create(name, event.principal, [event], deadline=Deadline.after(30))
            item = {"name": name, "created": made}
            out.line(f"{name}: {'created' if made else 'exists already'}", item)
    out.done()
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Every tenant (audited)."""
    with operator(args) as op:
        rows = op.services().core.tenants.all()
        op.audit("admin.tenants.list", f"tenants:{len(rows)}")
    out = Report(args)
    for name, created_at, created_by in rows:
        item = {"name": name, "created_at": created_at.isoformat(), "created_by": created_by}
        out.line(f"{name}\t{created_at:%Y-%m-%d %H:%M}\t{created_by}", item)
    out.done()
    return 0
