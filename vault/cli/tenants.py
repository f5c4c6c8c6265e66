"""``cvault tenants ...``: the tenants the vault serves, for operators. A tenant exists only once
created here (or by a write of a role with ``tenant.create``); a write to any other tenant is
refused (NOT_FOUND, ``tenant_unknown``). Creations are audited as ``operator:<user>``."""

from __future__ import annotations

import argparse
import sys

from vault.cli import _server
from vault.cli._common import CONFIG_HELP, Subparsers, operator, print_json
from vault.deadline import Deadline
from vault.errors import InvalidInput


def register(sub: Subparsers) -> None:
    tenants = sub.add_parser("tenants", help="create and list tenants").add_subparsers(
        dest="tenants_command", required=True
    )
    c = tenants.add_parser("create", help="create tenants (existing ones are left as they are)")
    c.add_argument("names", nargs="+", metavar="TENANT")
    c.add_argument("--config", help=CONFIG_HELP)
    c.set_defaults(func=cmd_create)
    ls = tenants.add_parser("list", help="every tenant, when and by whom it was created")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--config", help=CONFIG_HELP)
    ls.set_defaults(func=cmd_list)


def cmd_create(args: argparse.Namespace) -> int:
    """Create each tenant named; an existing one is reported, not an error."""
    with operator(args) as op:
        tenants = op.services().core.tenants
        for name in args.names:
            try:
                _server.check_tenant(name)
            except InvalidInput:
                print(f"cvault tenants create: not a tenant name: {name!r}", file=sys.stderr)
                return 2
            event = op.event("admin.tenants.create", name)
            made = tenants.create(name, event.principal, [event], deadline=Deadline.after(30))
            print(f"{name}: {'created' if made else 'exists already'}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Every tenant (audited)."""
    with operator(args) as op:
        rows = op.services().core.tenants.all()
        op.audit("admin.tenants.list", f"tenants:{len(rows)}")
    if args.json:
        print_json([{"name": n, "created_at": t.isoformat(), "created_by": b} for n, t, b in rows])
        return 0
    for name, created_at, created_by in rows:
        print(f"{name}\t{created_at:%Y-%m-%d %H:%M}\t{created_by}")
    return 0
