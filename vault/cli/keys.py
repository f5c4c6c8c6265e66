"""``cvault keys ...``: the key lifecycle, for operators (admin token in $BAO_TOKEN). Create the
field keys; show what is wrapped under which version; rotate field, tenant and index keys (online,
resumable); retire and trim old versions; rekey records; shred token pools; report whether
erasures are dead in backups; run the rotation schedule. Every command but ``init`` is audited as
``operator:<user>``."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

from vault.cli import _server
from vault.cli._common import (
    CONFIG_HELP,
    FIELD_CLASSES,
    Subparsers,
    admin_token,
    key_server,
    operator,
    operator_settings,
    print_json,
)
from vault.cli.progress import Progress
from vault.deadline import Deadline
from vault.keys import FieldKeyAdmin, field_key_info, init_field_keys


def register(sub: Subparsers) -> None:
    keys = sub.add_parser("keys", help="key-server operations").add_subparsers(
        dest="keys_command", required=True
    )
    _add_field_key_parsers(keys)
    _add_tenant_key_parsers(keys)


def _add_field_key_parsers(keys: Subparsers) -> None:
    ki = keys.add_parser("init", help="create the transit field keys (admin token in $BAO_TOKEN)")
    ki.add_argument("--url", help="OpenBao address (default $BAO_ADDR)")
    ki.add_argument("--prefix", default="cvault")
    ki.set_defaults(func=cmd_init)
    ks = keys.add_parser("status", help="key versions, and what depends on each (operator)")
    ks.add_argument("--config", help=CONFIG_HELP)
    ks.add_argument("--json", action="store_true", help="machine-readable output")
    ks.set_defaults(func=cmd_status)
    for name, func, text in (
        ("rotate-field", cmd_rotate_field, "new field-key version, rewrap every key to it"),
        ("retire", cmd_retire, "raise min_decryption_version (refuses if keys are below)"),
        ("trim", cmd_trim, "delete retired versions from the key server (same check)"),
    ):
        kp = keys.add_parser(name, help=text)
        which = kp.add_mutually_exclusive_group()
        which.add_argument("--class", dest="field_class", help="a field class, or audit")
        which.add_argument("--all", action="store_true", help="every field class and audit")
        kp.add_argument("--config", help=CONFIG_HELP)
        if name == "rotate-field":
            kp.add_argument("--batch", type=int, default=200, help="keys per transaction")
            kp.add_argument("--max-per-second", type=float, default=None)
        if name == "retire":
            kp.add_argument("--to", type=int, default=None, help="version (default: newest)")
        kp.set_defaults(func=func)


def _add_tenant_key_parsers(keys: Subparsers) -> None:
    kt = keys.add_parser(
        "rotate-tenant", help="new tenant-key versions, data keys re-wrapped locally"
    )
    who = kt.add_mutually_exclusive_group()
    who.add_argument("--tenant")
    who.add_argument("--all", action="store_true", help="every tenant")
    kt.add_argument("--class", dest="field_class", help="only this field class")
    kt.add_argument("--batch", type=int, default=500, help="data keys per transaction")
    kt.add_argument("--max-per-second", type=float, default=None)
    kt.add_argument("--config", help=CONFIG_HELP)
    kt.set_defaults(func=cmd_rotate_tenant)
    sr = keys.add_parser(
        "shred-report", help="are erased records' keys still recoverable from backups?"
    )
    sr.add_argument("--since", default="1970-01-01", help="records erased since (YYYY-MM-DD)")
    sr.add_argument("--json", action="store_true")
    sr.add_argument("--config", help=CONFIG_HELP)
    sr.set_defaults(func=cmd_shred_report)
    sp = keys.add_parser(
        "shred-pools",
        help="destroy the token-pool keys that held standalone tokens of erased records",
    )
    sp.add_argument("--since", required=True, help="erasures from this date on (YYYY-MM-DD)")
    sp.add_argument("--config", help=CONFIG_HELP)
    sp.set_defaults(func=cmd_shred_pools)
    rk = keys.add_parser("rekey", help="re-encrypt values under new data keys (key exposure)")
    rk.add_argument("--tenant", required=True)
    rk.add_argument("--record", help="one record (default: every record of the tenant)")
    rk.add_argument("--config", help=CONFIG_HELP)
    rk.set_defaults(func=cmd_rekey)
    ri = keys.add_parser("rotate-index", help="new index keys; blind indexes rebuilt under them")
    ri.add_argument("--class", dest="field_class", required=True)
    ri.add_argument("--tenant", help="one tenant (default: every tenant)")
    ri.add_argument("--batch", type=int, default=200, help="values per transaction")
    ri.add_argument("--config", help=CONFIG_HELP)
    ri.set_defaults(func=cmd_rotate_index)
    ar = keys.add_parser("auto-rotate", help="rotate what the [rotation] schedule says is due")
    ar.add_argument("--dry-run", action="store_true", help="only say what is due")
    ar.add_argument("--now", help="evaluate the schedule at this ISO time (default: now)")
    ar.add_argument("--config", help=CONFIG_HELP)
    ar.set_defaults(func=cmd_auto_rotate)


# --- field keys ----------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    token = os.environ.get("BAO_TOKEN") or os.environ.get("VAULT_TOKEN") or ""
    if not token:
        print("cvault keys init: set BAO_TOKEN (or VAULT_TOKEN) to an admin token", file=sys.stderr)
        return 2
    url = args.url or os.environ.get("BAO_ADDR") or os.environ.get("VAULT_ADDR") or ""
    names = init_field_keys(url, token, key_prefix=args.prefix, field_classes=FIELD_CLASSES)
    for name in names:
        print(name)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Field-key versions and what is wrapped under each; tenant-key versions in use. Audited."""
    with operator(args) as op:
        url, prefix, mount = key_server(args)
        info = field_key_info(
            url, admin_token(args), key_prefix=prefix, names=[*FIELD_CLASSES, "audit"], mount=mount
        )
        status = _server.operations.key_status(op.db, info)
        op.audit("admin.keys.status", "ok")
    if args.json:
        print_json(status.as_json())
    else:
        print(_server.operations.format_status(status))
    return 0


def _classes(args: argparse.Namespace) -> list[str]:
    if args.all:
        return [*FIELD_CLASSES, "audit"]
    if not args.field_class:
        raise SystemExit("give --class CLASS or --all")
    return [args.field_class]


def cmd_rotate_field(args: argparse.Namespace) -> int:
    """New field-key version(s), and every wrapped key rewrapped to it by the key server."""
    with operator(args) as op:
        url, prefix, mount = key_server(args)
        campaign = op.campaign("field:")
        with FieldKeyAdmin(url, admin_token(args), key_prefix=prefix, mount=mount) as admin:
            for c in _classes(args):
                if _finished_before(op, f"field:{c}", campaign, c):
                    continue
                progress = _key_progress(f"rotate-field {c}", None)
                report = _server.operations.rotate_field(
                    op.db,
                    admin,
                    c,
                    batch=args.batch,
                    max_per_second=args.max_per_second,
                    progress=progress.update,
                    campaign=campaign,
                )
                progress.close()
                what = "rotated to" if report.rotated else "resumed at"
                converted = f" ({report.converted} converted from the earlier format)"
                print(
                    f"{c}: {what} v{report.version}; {report.rewrapped} keys rewrapped"
                    + (converted if report.converted else "")
                )
                op.audit("admin.keys.rotate-field", f"{c} v{report.version} {report.rewrapped}")
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    """Raise min_decryption_version; refuses (exit 1) while keys are below it."""
    return _retire_or_trim(args, trim=False)


def cmd_trim(args: argparse.Namespace) -> int:
    """Delete retired field-key versions; refuses (exit 1) while keys are below the newest."""
    return _retire_or_trim(args, trim=True)


def _retire_or_trim(args: argparse.Namespace, *, trim: bool) -> int:
    action = "admin.keys.trim" if trim else "admin.keys.retire"
    status = 0
    with operator(args) as op:
        url, prefix, mount = key_server(args)
        with FieldKeyAdmin(url, admin_token(args), key_prefix=prefix, mount=mount) as admin:
            for c in _classes(args):
                try:
                    if trim:
                        v = _server.operations.trim(op.db, admin, c)
                        print(f"{c}: versions below v{v} deleted from the key server")
                    else:
                        v = _server.operations.retire(op.db, admin, c, getattr(args, "to", None))
                        print(f"{c}: min_decryption_version is now v{v}")
                    op.audit(action, f"{c} v{v}")
                except _server.operations.KeyOpRefused as exc:
                    print(f"cvault: refused: {exc}", file=sys.stderr)
                    op.audit(action, f"{c} refused {exc.count}")
                    status = 1
    return status


# --- tenant and index keys, data keys ------------------------------------------------------------


def cmd_rotate_tenant(args: argparse.Namespace) -> int:
    """New tenant-key versions; every data key re-wrapped locally; old versions destroyed."""
    with operator(args) as op:
        pairs = _tenant_classes(op, args)
        core = op.services().core
        campaign = op.campaign("tenant:")
        for tenant, c in pairs:
            if _finished_before(op, f"tenant:{tenant}/{c}", campaign, f"{tenant}/{c}"):
                continue
            progress = _key_progress(f"rotate-tenant {tenant}/{c}", op.count_data_keys(tenant, c))
            report = _server.operations.rotate_tenant(
                core,
                tenant,
                c,
                batch=args.batch,
                max_per_second=args.max_per_second,
                progress=progress.update,
                campaign=campaign,
            )
            progress.close()
            what = "rotated to" if report.started else "resumed at"
            print(
                f"{tenant}/{c}: {what} v{report.version}; {report.rewrapped} data keys re-wrapped;"
                f" {report.destroyed} old tenant-key versions destroyed"
            )
            reason = f"{c} v{report.version} {report.rewrapped}"
            op.audit("admin.keys.rotate-tenant", reason, tenant=tenant)
    return 0


def _tenant_classes(op: _server.Operator, args: argparse.Namespace) -> list[tuple[str, str]]:
    """The (tenant, class) pairs ``--tenant``/``--all`` and ``--class`` choose."""
    pairs = op.tenant_classes()
    if args.tenant:
        pairs = [p for p in pairs if p[0] == args.tenant]
    elif not args.all:
        raise SystemExit("give --tenant TENANT or --all")
    if args.field_class:
        pairs = [p for p in pairs if p[1] == args.field_class]
    if not pairs:
        raise SystemExit("no tenant keys match")
    return pairs


def cmd_rotate_index(args: argparse.Namespace) -> int:
    """A new index key per (tenant, class): blind indexes rebuilt under it, the old dropped."""
    with operator(args) as op:
        core = op.services().core
        pairs = [p for p in op.tenant_classes() if p[1] == args.field_class]
        if args.tenant:
            pairs = [p for p in pairs if p[0] == args.tenant]
        for tenant, c in pairs:
            r = _server.operations.rotate_index(core, tenant, c, batch=args.batch)
            what = "rotated to" if r.started else "resumed at"
            print(
                f"{tenant}/{c}: index key {what} v{r.version}; {r.indexed} index rows made,"
                f" {r.dropped} old rows dropped"
            )
            reason = f"{c} v{r.version} {r.indexed}"
            op.audit("admin.keys.rotate-index", reason, tenant=tenant)
    return 0


def cmd_rekey(args: argparse.Namespace) -> int:
    """Re-encrypt a record's (or every record of a tenant's) values under new data keys."""
    if not args.tenant:
        raise SystemExit("give --tenant (and --record, or every record of the tenant)")
    with operator(args) as op:
        core = op.services().core
        ids = [args.record] if args.record else op.record_ids(args.tenant)
        for n, rid in enumerate(ids, 1):
            event = op.event("admin.keys.rekey", args.tenant, rid)
            new = _server.operations.rekey(
                core, args.tenant, rid, events=[event], deadline=Deadline.after(60)
            )
            print(f"{args.tenant}/{rid}: {len(new)} new data keys")
            if n % 100 == 0:
                print(f"  {n}/{len(ids)} records re-keyed", file=sys.stderr, flush=True)
    return 0


def cmd_shred_report(args: argparse.Namespace) -> int:
    """For records erased since a date: can copies of their data keys in older backups still be
    unwrapped? Audited."""
    since = _since(args.since)
    with operator(args) as op:
        url, prefix, mount = key_server(args)
        info = field_key_info(
            url, admin_token(args), key_prefix=prefix, names=FIELD_CLASSES, mount=mount
        )
        report = _server.operations.shred_report(op.db, info, since)
        done = all(s.complete for s in report)
        op.audit("admin.keys.shred-report", "complete" if done else "not yet complete")
    if args.json:
        print_json({"complete": done, "records": [_shred_json(s) for s in report]})
        return 0
    for s in report:
        state = "complete" if s.complete else "not yet complete"
        what = "" if s.kind == "record" else " (cleared or replaced values)"
        print(f"{s.erased_at:%Y-%m-%d %H:%M} {s.tenant}/{s.record_id}{what}: {state}")
        for line in s.pending:
            print(f"    to do: {line}")
    print(
        f"{len(report)} records erased since {args.since}: erasure in backups is "
        + ("complete" if done else "not yet complete")
    )
    return 0


def cmd_shred_pools(args: argparse.Namespace) -> int:
    """Re-seal the other live tokens of each pool that held an erased record's standalone
    tokens under a new pool key and destroy the old one (the shred report's ``shred-pools``
    lines). A pool a running server may still seal under is left, with the time it can go."""
    since = _since(args.since)
    refused = 0
    with operator(args) as op:
        core = op.services().core
        for tenant, key_id in _server.operations.pools_to_shred(op.db, since):
            event = op.event("admin.keys.shred-pool", tenant, reason=f"pool_key:{key_id}")
            try:
                done = _server.operations.shred_pool(
                    core, tenant, key_id, events=[event], deadline=Deadline.after(300)
                )
            except _server.operations.KeyOpRefused as e:
                print(f"{tenant}: left for now: {e}", file=sys.stderr)
                refused += 1
                continue
            print(
                f"{tenant}/{done.field_class}: pool key {key_id} destroyed,"
                f" {done.tokens_resealed} live tokens re-sealed under {done.new_key_id or '-'}"
            )
    return 1 if refused else 0


def _since(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        raise SystemExit("--since must be a date (YYYY-MM-DD)") from None


def _shred_json(s: _server.operations.ShredStatus) -> dict[str, object]:
    return {
        "record_id": s.record_id,
        "tenant": s.tenant,
        "kind": s.kind,
        "erased_at": s.erased_at.isoformat(),
        "complete": s.complete,
        "pending": list(s.pending),
    }


def cmd_auto_rotate(args: argparse.Namespace) -> int:
    """Rotate what the [rotation] schedule says is due: tenant keys, then field keys (then retire
    and trim them when `trim` is on). For cron or a Kubernetes CronJob. Audited."""
    settings = operator_settings(args)
    try:
        now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    except ValueError:
        raise SystemExit("--now must be an ISO date and time") from None
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    with operator(args, settings) as op:
        _auto_rotate(op, args, now)
    return 0


def _auto_rotate(op: _server.Operator, args: argparse.Namespace, now: datetime) -> None:
    schedule = op.settings.rotation
    url, prefix, mount = key_server(args)
    token = admin_token(args)
    info = field_key_info(
        url, token, key_prefix=prefix, names=[*FIELD_CLASSES, "audit"], mount=mount
    )
    due = _server.operations.due_rotations(
        op.db,
        info,
        field_key_days=schedule.field_key_days,
        tenant_key_days=schedule.tenant_key_days,
        now=now,
    )
    print(
        f"due: {len(due.tenant_keys)} tenant keys, {len(due.field_keys)} field keys"
        + (" (dry run)" if args.dry_run else "")
    )
    for tenant, c in due.tenant_keys:
        print(f"  tenant key {tenant}/{c}")
    for c in due.field_keys:
        print(f"  field key {c}")
    if args.dry_run:
        return
    core = op.services().core
    for tenant, c in due.tenant_keys:
        r = _server.operations.rotate_tenant(core, tenant, c)
        reason = f"{c} v{r.version} {r.rewrapped} auto"
        op.audit("admin.keys.rotate-tenant", reason, tenant=tenant)
    with FieldKeyAdmin(url, token, key_prefix=prefix, mount=mount) as admin:
        for c in due.field_keys:
            f = _server.operations.rotate_field(op.db, admin, c)
            op.audit("admin.keys.rotate-field", f"{c} v{f.version} auto")
            if schedule.trim:
                _server.operations.retire(op.db, admin, c)
                _server.operations.trim(op.db, admin, c)
                op.audit("admin.keys.trim", f"{c} v{f.version} auto")
    print("done")


# --- rotation runs -------------------------------------------------------------------------------


def _finished_before(op: _server.Operator, scope: str, campaign: str, label: str) -> bool:
    """Whether the stopped run this command carries on already finished ``scope`` (said)."""
    version = op.finished_in_campaign(scope, campaign)
    if version is not None:
        print(f"{label}: already rotated to v{version} by the run this one carries on")
    return version is not None


def _key_progress(label: str, total: int | None) -> Progress:
    """A rotation's progress on stderr: a bar on a terminal, else a plain line at the first
    batch, then at most every 2 seconds, and at the end."""
    return Progress(label, _key_line, total=total, unit=" keys", interval=2.0, bookends=True)


def _key_line(progress: Progress) -> str:
    """``  rotate-tenant acme/email: 1200/5000 keys, 610 keys/s, ETA 6 s``"""
    done, total = progress.done, progress.total
    rate = done / max(progress.elapsed, 1e-6)
    parts = [f"{done}" + (f"/{total}" if total else "") + " keys", f"{rate:.0f} keys/s"]
    if total and rate > 0 and done < total:
        parts.append(f"ETA {int((total - done) / rate)} s")
    return f"  {progress.label}: {', '.join(parts)}"
