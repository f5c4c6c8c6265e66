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
from typing import Any

from vault.cli import _server
from vault.cli._common import (
    FIELD_CLASSES,
    CliError,
    KeyServer,
    Report,
    Subparsers,
    add_json_option,
    add_operator_options,
    admin_token,
    check_ca_file,
    env_ca_cert,
    key_server,
    operator,
    operator_settings,
    remember_key_server,
    usage_error,
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
    ki.add_argument(
        "--ca-cert",
        metavar="FILE",
        help="CA that verifies OpenBao's certificate (default $BAO_CACERT, $VAULT_CACERT)",
    )
    add_json_option(ki)
    ki.set_defaults(func=cmd_init)
    ks = keys.add_parser("status", help="key versions, and what depends on each (operator)")
    add_operator_options(ks)
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
        add_operator_options(kp)
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
    kt.add_argument(
        "--purge-erased",
        action="store_true",
        help="delete the data-key rows of erased records a restored backup brought back"
        " (default: skip and count them; their old tenant-key version then stays)",
    )
    add_operator_options(kt)
    kt.set_defaults(func=cmd_rotate_tenant)
    sr = keys.add_parser(
        "shred-report", help="are erased records' keys still recoverable from backups?"
    )
    sr.add_argument("--since", default="1970-01-01", help="records erased since (YYYY-MM-DD)")
    add_operator_options(sr)
    sr.set_defaults(func=cmd_shred_report)
    sp = keys.add_parser(
        "shred-pools",
        help="destroy the token-pool keys that held standalone tokens of erased records",
    )
    sp.add_argument("--since", required=True, help="erasures from this date on (YYYY-MM-DD)")
    add_operator_options(sp)
    sp.set_defaults(func=cmd_shred_pools)
    rk = keys.add_parser("rekey", help="re-encrypt values under new data keys (key exposure)")
    rk.add_argument("--tenant", required=True)
    rk.add_argument("--record", help="one record (default: every record of the tenant)")
    add_operator_options(rk)
    rk.set_defaults(func=cmd_rekey)
    ri = keys.add_parser("rotate-index", help="new index keys; blind indexes rebuilt under them")
    ri.add_argument("--class", dest="field_class", required=True)
    ri.add_argument("--tenant", help="one tenant (default: every tenant)")
    ri.add_argument("--batch", type=int, default=500, help="values per transaction")
    add_operator_options(ri)
    ri.set_defaults(func=cmd_rotate_index)
    ar = keys.add_parser("auto-rotate", help="rotate what the [rotation] schedule says is due")
    ar.add_argument("--dry-run", action="store_true", help="only say what is due")
    ar.add_argument("--now", help="evaluate the schedule at this ISO time (default: now)")
    add_operator_options(ar)
    ar.set_defaults(func=cmd_auto_rotate)


# --- field keys ----------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    """Create the transit field keys (admin token in $BAO_TOKEN; TLS verified against
    ``--ca-cert``/$BAO_CACERT, else the system's roots)."""
    token = os.environ.get("BAO_TOKEN") or os.environ.get("VAULT_TOKEN") or ""
    if not token:
        raise CliError("set BAO_TOKEN (or VAULT_TOKEN) to an admin token", reason="missing_setting")
    url = args.url or os.environ.get("BAO_ADDR") or os.environ.get("VAULT_ADDR") or ""
    if not url:
        raise CliError("give --url or set BAO_ADDR", reason="missing_setting")
    ca = args.ca_cert or env_ca_cert()
    check_ca_file(ca, "--ca-cert" if args.ca_cert else "BAO_CACERT")
    remember_key_server(args, url, ca or True)
    names = init_field_keys(
        url, token, key_prefix=args.prefix, field_classes=FIELD_CLASSES, verify=ca or True
    )
    out = Report(args)
    for name in names:
        out.line(name)
    out.done({"keys": names})
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Field-key versions and what is wrapped under each; tenant-key versions in use. Audited."""
    with operator(args) as op:
        info = _key_info(key_server(args), admin_token(args), [*FIELD_CLASSES, "audit"])
        status = _server.operations.key_status(op.db, info)
        op.audit("admin.keys.status", "ok")
    out = Report(args)
    out.line(_server.operations.format_status(status))
    out.done(status.as_json())
    return 0


def _key_info(ks: KeyServer, token: str, names: list[str]) -> dict[str, Any]:
    """What the key server says of each named field key (verified as ``ks`` says)."""
    return dict(
        field_key_info(
            ks.url, token, key_prefix=ks.prefix, names=names, mount=ks.mount, verify=ks.verify
        )
    )


def _field_admin(ks: KeyServer, token: str) -> FieldKeyAdmin:
    return FieldKeyAdmin(ks.url, token, key_prefix=ks.prefix, mount=ks.mount, verify=ks.verify)


def _classes(args: argparse.Namespace) -> list[str]:
    if args.all:
        return [*FIELD_CLASSES, "audit"]
    if not args.field_class:
        raise usage_error("give --class CLASS or --all")
    return [args.field_class]


def cmd_rotate_field(args: argparse.Namespace) -> int:
    """New field-key version(s), and every wrapped key rewrapped to it by the key server."""
    classes = _classes(args)
    out = Report(args)
    with operator(args) as op:
        campaign = op.campaign("field:")
        with _field_admin(key_server(args), admin_token(args)) as admin:
            for c in classes:
                if _finished_before(op, f"field:{c}", campaign, c, out):
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
                out.line(
                    f"{c}: {what} v{report.version}; {report.rewrapped} keys rewrapped"
                    + (converted if report.converted else ""),
                    {
                        "class": c,
                        "version": report.version,
                        "rotated": report.rotated,
                        "rewrapped": report.rewrapped,
                        "converted": report.converted,
                    },
                )
                op.audit("admin.keys.rotate-field", f"{c} v{report.version} {report.rewrapped}")
    out.done()
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
    classes = _classes(args)
    out = Report(args)
    with operator(args) as op, _field_admin(key_server(args), admin_token(args)) as admin:
        for c in classes:
            try:
                if trim:
                    v = _server.operations.trim(op.db, admin, c)
                    text = f"{c}: versions below v{v} deleted from the key server"
                else:
                    v = _server.operations.retire(op.db, admin, c, getattr(args, "to", None))
                    text = f"{c}: min_decryption_version is now v{v}"
                out.line(text, {"class": c, "version": v})
                op.audit(action, f"{c} v{v}")
            except _server.operations.KeyOpRefused as exc:
                if not out.json:
                    print(f"cvault: refused: {exc}", file=sys.stderr)
                out.items.append({"class": c, "refused": str(exc), "count": exc.count})
                op.audit(action, f"{c} refused {exc.count}")
                status = 1
    out.done()
    return status


# --- tenant and index keys, data keys ------------------------------------------------------------


def cmd_rotate_tenant(args: argparse.Namespace) -> int:
    """New tenant-key versions; every data key re-wrapped locally; old versions destroyed."""
    out = Report(args)
    with operator(args) as op:
        pairs = _tenant_classes(op, args)
        core = op.services().core
        campaign = op.campaign("tenant:")
        for tenant, c in pairs:
            if _finished_before(op, f"tenant:{tenant}/{c}", campaign, f"{tenant}/{c}", out):
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
                purge_erased=args.purge_erased,
            )
            progress.close()
            what = "rotated to" if report.started else "resumed at"
            out.line(
                f"{tenant}/{c}: {what} v{report.version}; {report.rewrapped} data keys re-wrapped;"
                f" {report.destroyed} old tenant-key versions destroyed",
                {
                    "tenant": tenant,
                    "class": c,
                    "version": report.version,
                    "started": report.started,
                    "rewrapped": report.rewrapped,
                    "destroyed": report.destroyed,
                    "erased_rows": report.erased,
                    "erased_rows_deleted": report.purged and report.erased > 0,
                },
            )
            if report.erased:
                out.line(_erased_rows_line(tenant, c, report.erased, purged=report.purged))
            reason = f"{c} v{report.version} {report.rewrapped}"
            op.audit("admin.keys.rotate-tenant", reason, tenant=tenant)
    out.done()
    return 0


def _erased_rows_line(tenant: str, field_class: str, count: int, *, purged: bool) -> str:
    """What rotate-tenant did with rows of erased records a restored backup brought back."""
    if purged:
        return f"{tenant}/{field_class}: {count} data-key rows of erased records deleted"
    return (
        f"{tenant}/{field_class}: {count} data-key rows of erased records skipped (restored from"
        " a backup?); their old tenant-key version stays until they are gone: run again with"
        " --purge-erased to delete them"
    )


def _tenant_classes(op: _server.Operator, args: argparse.Namespace) -> list[tuple[str, str]]:
    """The (tenant, class) pairs ``--tenant``/``--all`` and ``--class`` choose."""
    pairs = op.tenant_classes()
    if args.tenant:
        pairs = [p for p in pairs if p[0] == args.tenant]
    elif not args.all:
        raise usage_error("give --tenant TENANT or --all")
    if args.field_class:
        pairs = [p for p in pairs if p[1] == args.field_class]
    if not pairs:
        raise CliError("no tenant keys match", reason="not_found")
    return pairs


def cmd_rotate_index(args: argparse.Namespace) -> int:
    """A new index key per (tenant, class): blind indexes rebuilt under it, the old dropped."""
    out = Report(args)
    with operator(args) as op:
        core = op.services().core
        pairs = [p for p in op.tenant_classes() if p[1] == args.field_class]
        if args.tenant:
            pairs = [p for p in pairs if p[0] == args.tenant]
        for tenant, c in pairs:
            progress = _index_progress(f"rotate-index {tenant}/{c}")
            r = _server.operations.rotate_index(
                core, tenant, c, batch=args.batch, progress=progress.update
            )
            progress.close()
            what = "rotated to" if r.started else "resumed at"
            out.line(
                f"{tenant}/{c}: index key {what} v{r.version}; {r.indexed} index rows made,"
                f" {r.dropped} old rows dropped",
                {
                    "tenant": tenant,
                    "class": c,
                    "version": r.version,
                    "started": r.started,
                    "indexed": r.indexed,
                    "dropped": r.dropped,
                },
            )
            reason = f"{c} v{r.version} {r.indexed}"
            op.audit("admin.keys.rotate-index", reason, tenant=tenant)
    out.done()
    return 0


def cmd_rekey(args: argparse.Namespace) -> int:
    """Re-encrypt a record's (or every record of a tenant's) values under new data keys."""
    if not args.tenant:
        raise usage_error("give --tenant (and --record, or every record of the tenant)")
    out = Report(args)
    with operator(args) as op:
        core = op.services().core
        ids = [args.record] if args.record else op.record_ids(args.tenant)
        for n, rid in enumerate(ids, 1):
            event = op.event("admin.keys.rekey", args.tenant, rid)
            new = _server.operations.rekey(
                core, args.tenant, rid, events=[event], deadline=Deadline.after(60)
            )
            item = {"tenant": args.tenant, "record_id": rid, "new_data_keys": len(new)}
            out.line(f"{args.tenant}/{rid}: {len(new)} new data keys", item)
            if n % 100 == 0:
                print(f"  {n}/{len(ids)} records re-keyed", file=sys.stderr, flush=True)
    out.done()
    return 0


def cmd_shred_report(args: argparse.Namespace) -> int:
    """For records erased since a date: can copies of their data keys in older backups still be
    unwrapped? Audited."""
    since = _since(args.since)
    with operator(args) as op:
        info = _key_info(key_server(args), admin_token(args), list(FIELD_CLASSES))
        report = _server.operations.shred_report(op.db, info, since)
        done = all(s.complete for s in report)
        op.audit("admin.keys.shred-report", "complete" if done else "not yet complete")
    if args.json:
        Report(args).done({"complete": done, "records": [_shred_json(s) for s in report]})
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
    out = Report(args)
    with operator(args) as op:
        core = op.services().core
        for tenant, key_id in _server.operations.pools_to_shred(op.db, since):
            event = op.event("admin.keys.shred-pool", tenant, reason=f"pool_key:{key_id}")
            try:
                done = _server.operations.shred_pool(
                    core, tenant, key_id, events=[event], deadline=Deadline.after(300)
                )
            except _server.operations.KeyOpRefused as e:
                if not out.json:
                    print(f"{tenant}: left for now: {e}", file=sys.stderr)
                out.items.append({"tenant": tenant, "key_id": key_id, "left": str(e)})
                refused += 1
                continue
            out.line(
                f"{tenant}/{done.field_class}: pool key {key_id} destroyed,"
                f" {done.tokens_resealed} live tokens re-sealed under {done.new_key_id or '-'}",
                {
                    "tenant": tenant,
                    "class": done.field_class,
                    "key_id": key_id,
                    "tokens_resealed": done.tokens_resealed,
                    "new_key_id": done.new_key_id,
                },
            )
    out.done()
    return 1 if refused else 0


def _since(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        raise usage_error("--since must be a date (YYYY-MM-DD)") from None


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
        raise usage_error("--now must be an ISO date and time") from None
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    with operator(args, settings) as op:
        _auto_rotate(op, args, now)
    return 0


def _auto_rotate(op: _server.Operator, args: argparse.Namespace, now: datetime) -> None:
    schedule = op.settings.rotation
    ks = key_server(args)
    token = admin_token(args)
    info = _key_info(ks, token, [*FIELD_CLASSES, "audit"])
    due = _server.operations.due_rotations(
        op.db,
        info,
        field_key_days=schedule.field_key_days,
        tenant_key_days=schedule.tenant_key_days,
        now=now,
    )
    out = Report(args)
    out.line(
        f"due: {len(due.tenant_keys)} tenant keys, {len(due.field_keys)} field keys"
        + (" (dry run)" if args.dry_run else "")
    )
    for tenant, c in due.tenant_keys:
        out.line(f"  tenant key {tenant}/{c}")
    for c in due.field_keys:
        out.line(f"  field key {c}")
    document = {
        "dry_run": args.dry_run,
        "tenant_keys": [{"tenant": t, "class": c} for t, c in due.tenant_keys],
        "field_keys": list(due.field_keys),
    }
    if args.dry_run:
        out.done(document)
        return
    core = op.services().core
    for tenant, c in due.tenant_keys:
        r = _server.operations.rotate_tenant(core, tenant, c)
        reason = f"{c} v{r.version} {r.rewrapped} auto"
        op.audit("admin.keys.rotate-tenant", reason, tenant=tenant)
    with _field_admin(ks, token) as admin:
        for c in due.field_keys:
            f = _server.operations.rotate_field(op.db, admin, c)
            op.audit("admin.keys.rotate-field", f"{c} v{f.version} auto")
            if schedule.trim:
                _server.operations.retire(op.db, admin, c)
                _server.operations.trim(op.db, admin, c)
                op.audit("admin.keys.trim", f"{c} v{f.version} auto")
    out.line("done")
    out.done(document)


# --- rotation runs -------------------------------------------------------------------------------


def _finished_before(
    op: _server.Operator, scope: str, campaign: str, label: str, out: Report
) -> bool:
    """Whether the stopped run this command carries on already finished ``scope`` (said)."""
    version = op.finished_in_campaign(scope, campaign)
    if version is not None:
        out.line(
            f"{label}: already rotated to v{version} by the run this one carries on",
            {"scope": label, "version": version, "already_rotated": True},
        )
    return version is not None


def _key_progress(label: str, total: int | None) -> Progress:
    """A rotation's progress on stderr: a bar on a terminal, else a plain line at the first
    batch, then at most every 2 seconds, and at the end."""
    return Progress(label, _key_line, total=total, unit=" keys", interval=2.0, bookends=True)


def _index_progress(label: str) -> Progress:
    """rotate-index's progress on stderr, as :func:`_key_progress` shows a rotation's: blind-index
    rows made of those to make (counted at the start)."""
    return Progress(label, _index_line, unit=" rows", interval=2.0, bookends=True)


def _index_line(progress: Progress) -> str:
    """``  rotate-index acme/email: 12000/50000 rows, 9100 rows/s, ETA 4 s``"""
    return _key_line(progress).replace(" keys", " rows")


def _key_line(progress: Progress) -> str:
    """``  rotate-tenant acme/email: 1200/5000 keys, 610 keys/s, ETA 6 s``"""
    done, total = progress.done, progress.total
    rate = done / max(progress.elapsed, 1e-6)
    parts = [f"{done}" + (f"/{total}" if total else "") + " keys", f"{rate:.0f} keys/s"]
    if total and rate > 0 and done < total:
        parts.append(f"ETA {int((total - done) / rate)} s")
    return f"  {progress.label}: {', '.join(parts)}"
