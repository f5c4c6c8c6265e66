"""``cvault``: run the service (``dev``, ``serve``), operate it (``db``, ``keys``) and try it by
hand (``create``, ``get``, ``update``, ``find``, ``delete``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vault import errors
from vault.filetools import add_file_commands

if TYPE_CHECKING:
    from vault.api import RunningServer
    from vault.app import App

DEV_SETTINGS = "dev.json"
FIELD_CLASSES = (
    "email",
    "phone",
    "name",
    "address",
    "date_of_birth",
    "national_id",
    "card_number",
    "iban",
    "free_text",
    "ip_address",
)


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir or os.environ.get("CVAULT_STATE_DIR", ".cvault"))


def _dev_settings(args: argparse.Namespace) -> dict[str, Any]:
    path = _state_dir(args) / DEV_SETTINGS
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}


# --- dev ---------------------------------------------------------------------------------------


DEV_ROLES = ("backend-service", "support-agent", "ai-pipeline", "fraud-analyst", "dpo", "key-admin")


def _dev_listen_pair(listen: str) -> tuple[str, str]:
    """API-key port as asked, and the mTLS port next to it (port + 1; port 0 picks any)."""
    host, _, port = listen.rpartition(":")
    return listen, f"{host}:{int(port) + 1 if int(port) else 0}"


def cmd_dev(args: argparse.Namespace) -> int:
    """Embedded default: OpenBao + SQLite + the gRPC server, all stopped on Ctrl-C."""
    from vault.api._authn import new_api_key, server_credentials
    from vault.app import build_app
    from vault.config import AuditSettings, AuthSettings, OpenBaoSettings, Settings, deploy_file
    from vault.devcerts import generate_dev_pki
    from vault.keys import ensure_kv_v2, init_field_keys, setup_approle, write_policy
    from vault.keys.openbao_dev import OpenBaoDevServer
    from vault.storage import upgrade

    state = _state_dir(args)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    bao = OpenBaoDevServer(persistent_dir=state / "openbao")
    bao.start()
    try:
        prefix = "cvault"
        init_field_keys(bao.url, bao.root_token, key_prefix=prefix, field_classes=FIELD_CLASSES)
        ensure_kv_v2(bao.url, bao.root_token)  # the audit log's chain-head checkpoints
        runtime_policy = deploy_file("openbao", "runtime-policy.hcl").read_text()
        write_policy(bao.url, bao.root_token, "cvault-runtime", runtime_policy)
        role_id, secret_id = setup_approle(
            bao.url,
            bao.root_token,
            role_name="cvault-dev",
            policies=["cvault-runtime"],
            token_ttl="1h",  # noqa: S106 - a duration
            token_max_ttl="24h",  # noqa: S106 - a duration
        )
        db_url = f"sqlite:///{(state / 'vault.db').resolve()}"
        upgrade(db_url)
        pki = generate_dev_pki(state / "pki", roles=DEV_ROLES)
        # One API key per sample role, made fresh each start: the keys go to dev.json (0600),
        # only their salted hashes to the server's settings.
        api_keys: dict[str, str] = {}
        stored: dict[str, dict[str, str]] = {}
        for role in DEV_ROLES:
            key, entry = new_api_key(f"dev-{role}")
            api_keys[role] = key
            stored[f"dev-{role}"] = entry
        policy_file = (
            Path(args.policy) if args.policy else deploy_file("policy", "sample-policy.yaml")
        )
        key_listen, mtls_listen = _dev_listen_pair(args.listen)
        settings = Settings(
            listen=key_listen,
            database_url=db_url,
            policy=str(policy_file),
            openbao=OpenBaoSettings(
                url=bao.url, key_prefix=prefix, auth="approle", role_id=role_id, secret_id=secret_id
            ),
            auth=AuthSettings(
                tls_cert_file=str(pki.server.cert),
                tls_key_file=str(pki.server.key),
                client_ca_file=str(pki.ca.cert),
                api_keys=stored,
            ),
            audit=AuditSettings(jsonl=str(state / "audit.jsonl")),
            shutdown_grace_seconds=args.grace,
        )
        app = build_app(settings)
        app.check_ready()
        mtls = server_credentials(
            cert_chain=pki.server.cert.read_bytes(),
            private_key=pki.server.key.read_bytes(),
            client_ca=pki.ca.cert.read_bytes(),
            require_client_auth=True,
        )
        # the API-key port is plaintext loopback for trying things by hand; mTLS is the real mode
        app.credentials = None
        app.policy.install_sighup()
        running = app.serve(extra_ports=[(mtls_listen, mtls)])
        mtls_address = f"127.0.0.1:{running.extra_ports[0]}"
        info = {
            "address": running.address,
            "mtls_address": mtls_address,
            "api_keys": api_keys,
            "pki": {
                "ca": str(pki.ca.cert),
                **{
                    role: {"cert": str(c.cert), "key": str(c.key)}
                    for role, c in pki.clients.items()
                },
            },
            "policy": str(policy_file),
            "tenant": "demo",
            "database_url": db_url,
            "audit_jsonl": str(state / "audit.jsonl"),
            "openbao_url": bao.url,
            "openbao_root_token": bao.root_token,
        }
        settings_path = state / DEV_SETTINGS
        fd = os.open(settings_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh, indent=2)
        print(
            f"cvault dev: serving vault.v1 on {running.address} (API keys) and {mtls_address} "
            f"(mTLS)\n  SQLite {state / 'vault.db'}, OpenBao {bao.url}, policy {policy_file}\n"
            f"  dev settings (addresses, one API key per sample role, certificate paths) are in "
            f"{settings_path}; the CLI reads them.\n"
            "  try (each command acts as a policy role: --as ROLE, default backend-service):\n"
            "    .venv/bin/cvault create email=ada@example.com phone=+442079460958\n"
            "    .venv/bin/cvault get <record-id> --purpose account-management\n"
            "    .venv/bin/cvault --as support-agent get <record-id> --purpose customer-support\n"
            "    .venv/bin/cvault --as ai-pipeline get <record-id>            # tokens only\n"
            "    .venv/bin/cvault find email=ADA@example.com\n"
            "    .venv/bin/cvault --as dpo access <record-id>                  # who saw it\n"
            "    .venv/bin/cvault delete <record-id>\n"
            f"  mTLS with the dev certificates in {state / 'pki'}, e.g. grpcurl -cacert ca.pem "
            f"-cert dpo.pem -key dpo-key.pem {mtls_address} list\n"
            "  Ctrl-C stops the server and OpenBao.",
            flush=True,
        )
        _serve_until_signalled(
            "cvault dev", running, app, grace=settings.shutdown_grace_seconds, force=bao.stop
        )
    finally:
        bao.stop()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from vault.app import build_app
    from vault.config import load_settings

    app = build_app(load_settings(args.config))
    app.check_ready()
    app.policy.install_sighup()  # `kill -HUP` reloads the policy (an invalid file keeps the old)
    running = app.serve()
    print(f"cvault: serving vault.v1 on port {running.port}", flush=True)
    _serve_until_signalled("cvault", running, app, grace=app.settings.shutdown_grace_seconds)
    return 0


#: how long past grace + STOP_MARGIN a stop may still take (closing the audit log, OpenBao)
#: before the process is ended regardless
FORCE_MARGIN = 2.0


def _serve_until_signalled(
    name: str,
    running: RunningServer,
    app: App,
    *,
    grace: float,
    force: Callable[[], None] = lambda: None,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop within ``grace`` plus a few seconds.

    Calls in flight get ``grace`` seconds; then gRPC cancels them, however they are stuck (a
    stream whose client never reads or never half-closes). A second signal, or a stop still
    running ``grace + STOP_MARGIN + FORCE_MARGIN`` seconds later, runs ``force`` (in dev:
    stop OpenBao) and ends the process at once with status 1.
    """
    stop = threading.Event()

    def forced(why: str) -> None:
        print(f"{name}: {why}: stopping now", file=sys.stderr, flush=True)
        try:
            force()
        finally:
            os._exit(1)

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():
            forced(f"{signal.Signals(signum).name} again")
        stop.set()

    from vault.api.server import STOP_MARGIN

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(0.5):
        pass
    print(f"{name}: stopping (calls in flight get {grace:g} s)", flush=True)
    watchdog = threading.Timer(
        grace + STOP_MARGIN + FORCE_MARGIN, forced, args=("the stop took too long",)
    )
    watchdog.daemon = True
    watchdog.start()
    running.stop(grace)
    app.close()
    print(f"{name}: stopped", flush=True)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from vault.config import load_settings
    from vault.storage import upgrade

    url = args.database_url or load_settings(args.config).database_url
    upgrade(url)
    print("database is at the newest schema revision")
    return 0


def _operator_settings(args: argparse.Namespace) -> Any:
    """Settings for operator commands: from --config (production: the admin/operator
    credentials in the environment) or from `make dev`'s settings file."""
    from vault.config import OpenBaoSettings, Settings, load_settings

    if args.config:
        return load_settings(args.config)
    dev = _dev_settings(args)
    if not dev:
        raise SystemExit("no settings: pass --config FILE or run `make dev` first")
    return Settings(
        database_url=str(dev["database_url"]),
        openbao=OpenBaoSettings(url=str(dev["openbao_url"]), token=str(dev["openbao_root_token"])),
    )


def _operator_audit_log(args: argparse.Namespace) -> Any:
    """An AuditLog for operator commands (see :func:`_operator_settings`)."""
    from vault.audit import AuditLog
    from vault.keys import KeyManager, KvCheckpointStore, TransitKeyWrapper
    from vault.storage import Database

    settings = _operator_settings(args)
    from vault.app import make_auth

    bao = settings.openbao
    auth = make_auth(settings)
    wrapper = TransitKeyWrapper(bao.url, auth, key_prefix=bao.key_prefix, mount=bao.mount)
    checkpoint = KvCheckpointStore(
        bao.url, auth, mount=settings.audit.kv_mount, path=settings.audit.kv_path
    )
    return AuditLog(
        Database(settings.database_url),
        KeyManager(wrapper),
        chain=settings.audit.chain,
        checkpoint=checkpoint,
    )


def _audit_admin_action(
    log: Any, action: str, reason: str, *, tenant: str = "", record_id: str | None = None
) -> None:
    """Operator commands are audited too, as the OS user who ran them. Best effort: a broken
    chain must still be reportable, so a failure here is printed, not raised."""
    import getpass

    from vault.audit import ALLOWED, AuditEvent
    from vault.deadline import Deadline
    from vault.errors import VaultServiceError

    event = AuditEvent(
        action=action,
        outcome=ALLOWED,
        principal=f"operator:{getpass.getuser()}"[:256],
        role="operator",
        purpose="",
        tenant=tenant,
        record_id=record_id,
        reason=reason[:64],
    )
    try:
        log.after_commit(log.record([event], deadline=Deadline.after(30)))
    except VaultServiceError as exc:
        print(f"cvault: this command could not be audited: {exc.reason}", file=sys.stderr)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Recompute the MAC chain; exit 1 naming the first edited, deleted, inserted or reordered
    row, or a truncated tail (against the checkpoint kept in OpenBao)."""
    from vault.deadline import Deadline

    log = _operator_audit_log(args)
    report = log.verify(deadline=Deadline.after(600))
    _audit_admin_action(log, "admin.audit.verify", "ok" if report.ok else report.problem)
    log.close()
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


def cmd_audit_query(args: argparse.Namespace) -> int:
    """Who saw this customer's data, when and why (operator view, straight from the log)."""
    from vault.deadline import Deadline

    log = _operator_audit_log(args)
    entries = log.query(
        _tenant(args), args.record_id, deadline=Deadline.after(60), limit=args.limit
    )
    log.close()
    _print(
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


def cmd_tokens_purge(args: argparse.Namespace) -> int:
    """Delete the tokens whose TTL passed (``--dry-run``: only count them). Audited."""
    from vault.service.tokens import purge_expired_tokens

    log = _operator_audit_log(args)
    n = purge_expired_tokens(log.db, batch=args.batch, dry_run=args.dry_run)
    if args.dry_run:
        print(f"{n} expired tokens would be purged")
    else:
        _audit_admin_action(log, "admin.tokens.purge", f"purged {n}")
        print(f"purged {n} expired tokens")
    log.close()
    return 0


def _admin_token(args: argparse.Namespace) -> str:
    """The operator's OpenBao token: $BAO_TOKEN / $VAULT_TOKEN, else `make dev`'s root token."""
    token = os.environ.get("BAO_TOKEN") or os.environ.get("VAULT_TOKEN") or ""
    if not token and not args.config:
        token = str(_dev_settings(args).get("openbao_root_token") or "")
    if not token:
        raise SystemExit("set BAO_TOKEN (or VAULT_TOKEN) to an admin token")
    return token


def _key_server(args: argparse.Namespace) -> tuple[str, str, str]:
    """(url, key prefix, transit mount) from --config, or `make dev`'s settings."""
    from vault.config import load_settings

    if args.config:
        bao = load_settings(args.config).openbao
        return bao.url, bao.key_prefix, bao.mount
    return str(_dev_settings(args)["openbao_url"]), "cvault", "transit"


def _classes(args: argparse.Namespace) -> list[str]:
    if args.all:
        return [*FIELD_CLASSES, "audit"]
    if not args.field_class:
        raise SystemExit("give --class CLASS or --all")
    return [args.field_class]


def cmd_keys_rotate_field(args: argparse.Namespace) -> int:
    """New field-key version(s), and every wrapped key rewrapped to it by the key server."""
    from vault.keys import FieldKeyAdmin
    from vault.service.keyops import rotate_field

    log = _operator_audit_log(args)
    url, prefix, mount = _key_server(args)
    campaign = _campaign(log.db, "field:")
    with FieldKeyAdmin(url, _admin_token(args), key_prefix=prefix, mount=mount) as admin:
        for c in _classes(args):
            if _finished_before(log.db, f"field:{c}", campaign, c):
                continue
            bar = _KeyProgress(f"rotate-field {c}", None)
            report = rotate_field(
                log.db,
                admin,
                c,
                batch=args.batch,
                max_per_second=args.max_per_second,
                progress=bar.update,
                campaign=campaign,
            )
            bar.close()
            what = "rotated to" if report.rotated else "resumed at"
            print(
                f"{c}: {what} v{report.version}; {report.rewrapped} keys rewrapped"
                + (
                    f" ({report.converted} converted from the earlier format)"
                    if report.converted
                    else ""
                )
            )
            _audit_admin_action(
                log, "admin.keys.rotate-field", f"{c} v{report.version} {report.rewrapped}"
            )
    log.close()
    return 0


class _KeyProgress:
    """Rotation progress on stderr: a tqdm bar with an ETA on a terminal, else a plain line at
    the first batch, then at most every 2 seconds, and at the end. Counts only."""

    def __init__(self, label: str, total: int | None) -> None:
        self._label, self._total = label, total
        self._start = self._last = time.monotonic()
        self._done = 0
        self._bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit=" keys", file=sys.stderr)

    def update(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self._total = total
            if self._bar is not None:
                self._bar.total = total
        if self._bar is not None:
            self._bar.update(done - self._done)
        first = self._done == 0
        self._done = done
        now = time.monotonic()
        if self._bar is None and (first or now - self._last >= 2.0):
            self._last = now
            self._line()

    def _line(self) -> None:
        elapsed = max(time.monotonic() - self._start, 1e-6)
        rate = self._done / elapsed
        parts = [f"{self._done}" + (f"/{self._total}" if self._total else "") + " keys"]
        parts.append(f"{rate:.0f} keys/s")
        if self._total and rate > 0 and self._done < self._total:
            parts.append(f"ETA {int((self._total - self._done) / rate)} s")
        print(f"  {self._label}: {', '.join(parts)}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._done:
            self._line()


def _campaign(db: Any, scope_prefix: str) -> str:
    """The id of this command's run over its units: a run that was stopped is carried on (its
    finished units are skipped), else a new one."""
    import uuid

    from vault.storage import _keys_repo as keys_repo

    with db.begin(write=False) as conn:
        return keys_repo.unfinished_campaign(conn, scope_prefix) or str(uuid.uuid4())


def _finished_before(db: Any, scope: str, campaign: str, label: str) -> bool:
    """Whether the stopped run this command carries on already finished ``scope`` (said)."""
    from vault.storage import _keys_repo as keys_repo

    with db.begin(write=False) as conn:
        version = keys_repo.finished_in_campaign(conn, scope, campaign)
    if version is not None:
        print(f"{label}: already rotated to v{version} by the run this one carries on")
    return version is not None


def cmd_keys_rotate_tenant(args: argparse.Namespace) -> int:
    """New tenant-key versions; every data key re-wrapped locally; old versions destroyed."""
    from vault.service import Keyring
    from vault.service.keyops import rotate_tenant
    from vault.storage import _keys_repo as keys_repo

    log = _operator_audit_log(args)
    with log.db.begin(write=False) as conn:
        pairs = keys_repo.tenant_classes(conn)
    if args.tenant:
        pairs = [p for p in pairs if p[0] == args.tenant]
    elif not args.all:
        raise SystemExit("give --tenant TENANT or --all")
    if args.field_class:
        pairs = [p for p in pairs if p[1] == args.field_class]
    if not pairs:
        raise SystemExit("no tenant keys match")
    keyring = Keyring(log.db, log.keys)
    campaign = _campaign(log.db, "tenant:")
    for tenant, c in pairs:
        if _finished_before(log.db, f"tenant:{tenant}/{c}", campaign, f"{tenant}/{c}"):
            continue
        with log.db.begin(write=False) as conn:
            total = keys_repo.count_data_keys(conn, tenant, c)
        bar = _KeyProgress(f"rotate-tenant {tenant}/{c}", total)
        report = rotate_tenant(
            log.db,
            keyring,
            tenant,
            c,
            batch=args.batch,
            max_per_second=args.max_per_second,
            progress=bar.update,
            campaign=campaign,
        )
        bar.close()
        what = "rotated to" if report.started else "resumed at"
        print(
            f"{tenant}/{c}: {what} v{report.version}; {report.rewrapped} data keys re-wrapped;"
            f" {report.destroyed} old tenant-key versions destroyed"
        )
        _audit_admin_action(
            log,
            "admin.keys.rotate-tenant",
            f"{c} v{report.version} {report.rewrapped}",
            tenant=tenant,
        )
    log.close()
    return 0


def cmd_keys_shred_report(args: argparse.Namespace) -> int:
    """For records erased since a date: can copies of their data keys in older backups still be
    unwrapped? Audited."""
    from datetime import UTC, datetime

    from vault.keys import field_key_info
    from vault.service.keyops import shred_report

    try:
        since = datetime.fromisoformat(args.since).replace(tzinfo=UTC)
    except ValueError:
        raise SystemExit("--since must be a date (YYYY-MM-DD)") from None
    log = _operator_audit_log(args)
    url, prefix, mount = _key_server(args)
    info = field_key_info(
        url, _admin_token(args), key_prefix=prefix, names=FIELD_CLASSES, mount=mount
    )
    report = shred_report(log.db, info, since)
    done = all(s.complete for s in report)
    _audit_admin_action(log, "admin.keys.shred-report", "complete" if done else "not yet complete")
    log.close()
    if args.json:
        _print(
            {
                "complete": done,
                "records": [
                    {
                        "record_id": s.record_id,
                        "tenant": s.tenant,
                        "kind": s.kind,
                        "erased_at": s.erased_at.isoformat(),
                        "complete": s.complete,
                        "pending": list(s.pending),
                    }
                    for s in report
                ],
            }
        )
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


def _operator_records(args: argparse.Namespace) -> tuple[Any, Any]:
    """(operator audit log, RecordsService over it) for operator commands on records."""
    from vault.config import deploy_file
    from vault.policy import PolicyHolder
    from vault.schema import load_schema
    from vault.service import Access, RecordsService

    settings = _operator_settings(args)
    log = _operator_audit_log(args)
    policy = PolicyHolder(settings.policy or deploy_file("policy", "sample-policy.yaml"))
    svc = RecordsService(
        log.db, log.keys, load_schema(settings.schema or None), Access(policy, log)
    )
    return log, svc


def cmd_records_purge(args: argparse.Namespace) -> int:
    """Crypto-shred what the schema's retention says is past it (records, class values)."""
    import getpass
    from datetime import UTC, datetime

    from vault.audit import ALLOWED, AuditEvent

    if not args.expired:
        raise SystemExit("say --expired (what the schema's retention periods are past)")
    log, svc = _operator_records(args)
    operator = f"operator:{getpass.getuser()}"[:256]

    def event(action: str, tenant: str, record_id: str) -> AuditEvent:
        return AuditEvent(
            action=action,
            outcome=ALLOWED,
            principal=operator,
            role="operator",
            purpose="",
            tenant=tenant,
            record_id=record_id,
        )

    report = svc.purge_expired(
        now=datetime.now(UTC), event=event, batch=args.batch, dry_run=args.dry_run
    )
    log.close()
    if args.dry_run:
        print(
            f"would erase {report.records} records and shred {report.values} class keys"
            " past their retention (dry run)"
        )
    else:
        print(f"erased {report.records} records; shredded {report.values} values past retention")
    return 0


def cmd_keys_rekey(args: argparse.Namespace) -> int:
    """Re-encrypt a record's (or every record of a tenant's) values under new data keys."""
    import getpass

    from vault.audit import ALLOWED, AuditEvent
    from vault.deadline import Deadline
    from vault.storage import repo

    if not args.tenant:
        raise SystemExit("give --tenant (and --record, or every record of the tenant)")
    log, svc = _operator_records(args)
    if args.record:
        ids = [args.record]
    else:
        with log.db.begin(write=False) as conn:
            ids = repo.record_ids_of_tenant(conn, args.tenant)
    operator = f"operator:{getpass.getuser()}"[:256]
    for n, rid in enumerate(ids, 1):
        event = AuditEvent(
            action="admin.keys.rekey",
            outcome=ALLOWED,
            principal=operator,
            role="operator",
            purpose="",
            tenant=args.tenant,
            record_id=rid,
        )
        new = svc.rekey(args.tenant, rid, events=[event], deadline=Deadline.after(60))
        print(f"{args.tenant}/{rid}: {len(new)} new data keys")
        if n % 100 == 0:
            print(f"  {n}/{len(ids)} records re-keyed", file=sys.stderr, flush=True)
    log.close()
    return 0


def cmd_keys_auto_rotate(args: argparse.Namespace) -> int:
    """Rotate what the [rotation] schedule says is due: tenant keys, then field keys (then retire
    and trim them when `trim` is on). For cron or a Kubernetes CronJob. Audited."""
    from datetime import UTC, datetime

    from vault.keys import FieldKeyAdmin, field_key_info
    from vault.service import Keyring
    from vault.service.keyops import due_rotations, retire, rotate_field, rotate_tenant, trim

    settings = _operator_settings(args)
    schedule = settings.rotation
    try:
        now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    except ValueError:
        raise SystemExit("--now must be an ISO date and time") from None
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    log = _operator_audit_log(args)
    url, prefix, mount = _key_server(args)
    token = _admin_token(args)
    info = field_key_info(
        url, token, key_prefix=prefix, names=[*FIELD_CLASSES, "audit"], mount=mount
    )
    due = due_rotations(
        log.db,
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
        log.close()
        return 0
    keyring = Keyring(log.db, log.keys)
    for tenant, c in due.tenant_keys:
        r = rotate_tenant(log.db, keyring, tenant, c)
        _audit_admin_action(
            log, "admin.keys.rotate-tenant", f"{c} v{r.version} {r.rewrapped} auto", tenant=tenant
        )
    with FieldKeyAdmin(url, token, key_prefix=prefix, mount=mount) as admin:
        for c in due.field_keys:
            f = rotate_field(log.db, admin, c)
            _audit_admin_action(log, "admin.keys.rotate-field", f"{c} v{f.version} auto")
            if schedule.trim:
                retire(log.db, admin, c)
                trim(log.db, admin, c)
                _audit_admin_action(log, "admin.keys.trim", f"{c} v{f.version} auto")
    print("done")
    log.close()
    return 0


def cmd_keys_rotate_index(args: argparse.Namespace) -> int:
    """A new index key per (tenant, class): blind indexes rebuilt under it, the old dropped."""
    from vault.service.keyops import rotate_index
    from vault.storage import _keys_repo as keys_repo

    log, svc = _operator_records(args)
    with log.db.begin(write=False) as conn:
        pairs = [p for p in keys_repo.tenant_classes(conn) if p[1] == args.field_class]
    if args.tenant:
        pairs = [p for p in pairs if p[0] == args.tenant]
    for tenant, c in pairs:
        r = rotate_index(svc, tenant, c, batch=args.batch)
        what = "rotated to" if r.started else "resumed at"
        print(
            f"{tenant}/{c}: index key {what} v{r.version}; {r.indexed} index rows made,"
            f" {r.dropped} old rows dropped"
        )
        _audit_admin_action(
            log, "admin.keys.rotate-index", f"{c} v{r.version} {r.indexed}", tenant=tenant
        )
    log.close()
    return 0


def cmd_keys_retire(args: argparse.Namespace) -> int:
    """Raise min_decryption_version; refuses (exit 1) while keys are below it."""
    return _retire_or_trim(args, trim=False)


def cmd_keys_trim(args: argparse.Namespace) -> int:
    """Delete retired field-key versions; refuses (exit 1) while keys are below the newest."""
    return _retire_or_trim(args, trim=True)


def _retire_or_trim(args: argparse.Namespace, *, trim: bool) -> int:
    from vault.keys import FieldKeyAdmin
    from vault.service import keyops

    log = _operator_audit_log(args)
    url, prefix, mount = _key_server(args)
    action = "admin.keys.trim" if trim else "admin.keys.retire"
    status = 0
    with FieldKeyAdmin(url, _admin_token(args), key_prefix=prefix, mount=mount) as admin:
        for c in _classes(args):
            try:
                if trim:
                    v = keyops.trim(log.db, admin, c)
                    print(f"{c}: versions below v{v} deleted from the key server")
                else:
                    v = keyops.retire(log.db, admin, c, getattr(args, "to", None))
                    print(f"{c}: min_decryption_version is now v{v}")
                _audit_admin_action(log, action, f"{c} v{v}")
            except keyops.KeyOpRefused as exc:
                print(f"cvault: refused: {exc}", file=sys.stderr)
                _audit_admin_action(log, action, f"{c} refused {exc.count}")
                status = 1
    log.close()
    return status


def cmd_keys_status(args: argparse.Namespace) -> int:
    """Field-key versions and what is wrapped under each; tenant-key versions in use. Audited."""
    from vault.keys import field_key_info
    from vault.service.keyops import format_status, key_status

    log = _operator_audit_log(args)
    url, prefix, mount = _key_server(args)
    info = field_key_info(
        url, _admin_token(args), key_prefix=prefix, names=[*FIELD_CLASSES, "audit"], mount=mount
    )
    status = key_status(log.db, info)
    _audit_admin_action(log, "admin.keys.status", "ok")
    log.close()
    if args.json:
        _print(status.as_json())
    else:
        print(format_status(status))
    return 0


def cmd_keys_init(args: argparse.Namespace) -> int:
    from vault.keys import init_field_keys

    token = os.environ.get("BAO_TOKEN") or os.environ.get("VAULT_TOKEN") or ""
    if not token:
        print("cvault keys init: set BAO_TOKEN (or VAULT_TOKEN) to an admin token", file=sys.stderr)
        return 2
    url = args.url or os.environ.get("BAO_ADDR") or os.environ.get("VAULT_ADDR") or ""
    names = init_field_keys(url, token, key_prefix=args.prefix, field_classes=FIELD_CLASSES)
    for name in names:
        print(name)
    return 0


# --- client commands ---------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Any:
    """A client acting as ``--as ROLE`` with that role's dev API key (or $CVAULT_API_KEY)."""
    from vault.client import VaultClient

    dev = _dev_settings(args)
    address = args.address or os.environ.get("CVAULT_ADDRESS") or dev.get("address")
    if not address:
        raise SystemExit("no server address: pass --address or run `make dev` first")
    key = os.environ.get("CVAULT_API_KEY") or dict(dev.get("api_keys", {})).get(args.role)
    if not key:
        raise SystemExit(f"no API key for role {args.role!r}: set CVAULT_API_KEY")
    return VaultClient(address, api_key=str(key), purpose=getattr(args, "purpose", "") or "")


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{what} must be name=value (got a field without '=')")
        out[name] = value
    return out


def _tenant(args: argparse.Namespace) -> str:
    return str(args.tenant or _dev_settings(args).get("tenant") or "demo")


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_create(args: argparse.Namespace) -> int:
    with _client(args) as vc:
        r = vc.create_record(
            _tenant(args), _pairs(args.fields, "fields"), idempotency_key=args.idempotency_key or ""
        )
    _print({"record_id": r.record_id, "version": r.version, "tokens": dict(r.tokens)})
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    with _client(args) as vc:
        r = vc.get_record(_tenant(args), args.record_id, fields=args.field or ())
    _print(
        {
            "record_id": r.record_id,
            "version": r.version,
            "fields": {k: {"output": v.output, "value": v.value} for k, v in r.fields.items()},
        }
    )
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    with _client(args) as vc:
        r = vc.update_record(
            _tenant(args),
            args.record_id,
            expected_version=args.expected_version,
            set_fields=_pairs(args.fields, "fields"),
            clear_fields=args.clear or (),
        )
    _print(
        {
            "record_id": r.record_id,
            "version": r.version,
            "tokens": dict(r.tokens),
            "destroyed_data_key_ids": list(r.destroyed_data_key_ids),
        }
    )
    return 0


def cmd_find(args: argparse.Namespace) -> int:
    with _client(args) as vc:
        ids = vc.find_records(_tenant(args), _pairs(args.match, "match"), limit=args.limit)
    _print({"record_ids": ids})
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as vc:
        r = vc.delete_record(_tenant(args), args.record_id)
    _print(
        {
            "tenant": r.tenant,
            "record_id": r.record_id,
            "erased_at": r.erased_at.isoformat(),
            "data_key_ids": list(r.data_key_ids),
        }
    )
    return 0


def cmd_consent(args: argparse.Namespace) -> int:
    with _client(args) as vc:
        if args.set is None:
            c = vc.get_consent(_tenant(args), args.record_id)
        else:
            c = vc.update_consent(
                _tenant(args),
                args.record_id,
                [p for p in args.set.split(",") if p],
                expected_version=args.expected_version,
                source=args.source,
            )
    _print(
        {
            "version": c.version,
            "purposes": list(c.purposes),
            "source": c.source,
            "updated_at": c.updated_at.isoformat() if c.updated_at else None,
        }
    )
    return 0


def cmd_access(args: argparse.Namespace) -> int:
    with _client(args) as vc:
        events = vc.query_access(_tenant(args), args.record_id, limit=args.limit)
    _print(
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
        import base64

        key = base64.b64decode(Path(args.recipient_key).read_text().strip())
    with _client(args) as vc:
        media_type, document = vc.export_customer_data(
            _tenant(args), args.record_id, recipient_public_key=key
        )
    if args.output:
        Path(args.output).write_bytes(document)
        print(f"{media_type}: {len(document)} bytes written to {args.output}")
    else:
        sys.stdout.buffer.write(document + b"\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cvault", description=__doc__)
    p.add_argument("--state-dir", help="dev state folder (default .cvault or $CVAULT_STATE_DIR)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument(
        "--as",
        dest="role",
        default="backend-service",
        help="client commands: act as this sample-policy role (its dev API key)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("dev", help="run OpenBao + SQLite + the server in the foreground")
    d.add_argument("--listen", default="127.0.0.1:50051", help="API-key port; mTLS on port+1")
    d.add_argument("--policy", help="policy file (default: deploy/policy/sample-policy.yaml)")
    d.add_argument(
        "--grace",
        type=float,
        default=2.0,
        help="seconds calls in flight get on Ctrl-C/SIGTERM before they are cancelled",
    )
    d.set_defaults(func=cmd_dev)

    s = sub.add_parser("serve", help="run the server from a settings file")
    s.add_argument("--config", help="TOML settings file")
    s.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database operations").add_subparsers(
        dest="db_command", required=True
    )
    up = db.add_parser("upgrade", help="apply migrations")
    up.add_argument("--database-url")
    up.add_argument("--config")
    up.set_defaults(func=cmd_db_upgrade)

    keys = sub.add_parser("keys", help="key-server operations").add_subparsers(
        dest="keys_command", required=True
    )
    ki = keys.add_parser("init", help="create the transit field keys (admin token in $BAO_TOKEN)")
    ki.add_argument("--url", help="OpenBao address (default $BAO_ADDR)")
    ki.add_argument("--prefix", default="cvault")
    ki.set_defaults(func=cmd_keys_init)
    ks = keys.add_parser("status", help="key versions, and what depends on each (operator)")
    ks.add_argument("--config", help="TOML settings (default: make dev's settings)")
    ks.add_argument("--json", action="store_true", help="machine-readable output")
    ks.set_defaults(func=cmd_keys_status)
    for name, func, text in (
        ("rotate-field", cmd_keys_rotate_field, "new field-key version, rewrap every key to it"),
        ("retire", cmd_keys_retire, "raise min_decryption_version (refuses if keys are below)"),
        ("trim", cmd_keys_trim, "delete retired versions from the key server (same check)"),
    ):
        kp = keys.add_parser(name, help=text)
        which = kp.add_mutually_exclusive_group()
        which.add_argument("--class", dest="field_class", help="a field class, or audit")
        which.add_argument("--all", action="store_true", help="every field class and audit")
        kp.add_argument("--config", help="TOML settings (default: make dev's settings)")
        if name == "rotate-field":
            kp.add_argument("--batch", type=int, default=200, help="keys per transaction")
            kp.add_argument("--max-per-second", type=float, default=None)
        if name == "retire":
            kp.add_argument("--to", type=int, default=None, help="version (default: newest)")
        kp.set_defaults(func=func)
    kt = keys.add_parser(
        "rotate-tenant", help="new tenant-key versions, data keys re-wrapped locally"
    )
    who = kt.add_mutually_exclusive_group()
    who.add_argument("--tenant")
    who.add_argument("--all", action="store_true", help="every tenant")
    kt.add_argument("--class", dest="field_class", help="only this field class")
    kt.add_argument("--batch", type=int, default=500, help="data keys per transaction")
    kt.add_argument("--max-per-second", type=float, default=None)
    kt.add_argument("--config", help="TOML settings (default: make dev's settings)")
    kt.set_defaults(func=cmd_keys_rotate_tenant)
    sr = keys.add_parser(
        "shred-report", help="are erased records' keys still recoverable from backups?"
    )
    sr.add_argument("--since", default="1970-01-01", help="records erased since (YYYY-MM-DD)")
    sr.add_argument("--json", action="store_true")
    sr.add_argument("--config", help="TOML settings (default: make dev's settings)")
    sr.set_defaults(func=cmd_keys_shred_report)
    rk = keys.add_parser("rekey", help="re-encrypt values under new data keys (key exposure)")
    rk.add_argument("--tenant", required=True)
    rk.add_argument("--record", help="one record (default: every record of the tenant)")
    rk.add_argument("--config", help="TOML settings (default: make dev's settings)")
    rk.set_defaults(func=cmd_keys_rekey)
    ri = keys.add_parser("rotate-index", help="new index keys; blind indexes rebuilt under them")
    ri.add_argument("--class", dest="field_class", required=True)
    ri.add_argument("--tenant", help="one tenant (default: every tenant)")
    ri.add_argument("--batch", type=int, default=200, help="values per transaction")
    ri.add_argument("--config", help="TOML settings (default: make dev's settings)")
    ri.set_defaults(func=cmd_keys_rotate_index)
    ar = keys.add_parser("auto-rotate", help="rotate what the [rotation] schedule says is due")
    ar.add_argument("--dry-run", action="store_true", help="only say what is due")
    ar.add_argument("--now", help="evaluate the schedule at this ISO time (default: now)")
    ar.add_argument("--config", help="TOML settings (default: make dev's settings)")
    ar.set_defaults(func=cmd_keys_auto_rotate)

    audit = sub.add_parser("audit", help="audit log operations").add_subparsers(
        dest="audit_command", required=True
    )
    av = audit.add_parser("verify", help="verify the MAC chain; exit 1 naming the first bad row")
    av.add_argument("--config", help="TOML settings (default: make dev's settings)")
    av.set_defaults(func=cmd_audit_verify)
    aq = audit.add_parser("query", help="who saw this customer's data, when and why")
    aq.add_argument("record_id")
    aq.add_argument("--tenant")
    aq.add_argument("--limit", type=int, default=1000)
    aq.add_argument("--config", help="TOML settings (default: make dev's settings)")
    aq.set_defaults(func=cmd_audit_query)

    tokens = sub.add_parser("tokens", help="token table operations").add_subparsers(
        dest="tokens_command", required=True
    )
    tp = tokens.add_parser("purge", help="delete the tokens whose TTL passed")
    tp.add_argument("--dry-run", action="store_true", help="only count them")
    tp.add_argument("--batch", type=int, default=1000, help="rows per transaction")
    tp.add_argument("--config", help="TOML settings (default: make dev's settings)")
    tp.set_defaults(func=cmd_tokens_purge)

    def client_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text)
        c.add_argument("--address", help="server address (default: from make dev's settings)")
        c.add_argument("--tenant")
        return c

    c = client_parser("create", "create a record: cvault create email=... phone=...")
    c.add_argument("fields", nargs="+", metavar="FIELD=VALUE")
    c.add_argument("--idempotency-key")
    c.set_defaults(func=cmd_create)
    g = client_parser("get", "read a record (tokens; --reveal uses the dev admin key)")
    g.add_argument("record_id")
    g.add_argument("--field", action="append")
    g.add_argument("--purpose", help="why you read (a purpose of the policy)")
    g.set_defaults(func=cmd_get)
    u = client_parser("update", "update a record")
    u.add_argument("record_id")
    u.add_argument("--expected-version", type=int, required=True)
    u.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="fields")
    u.add_argument("--clear", action="append", metavar="FIELD")
    u.set_defaults(func=cmd_update)
    f = client_parser("find", "find records by searchable fields")
    f.add_argument("match", nargs="+", metavar="FIELD=VALUE")
    f.add_argument("--limit", type=int, default=0)
    f.set_defaults(func=cmd_find)
    x = client_parser("delete", "crypto-shred a record and print the erasure receipt")
    x.add_argument("record_id")
    x.set_defaults(func=cmd_delete)
    records = sub.add_parser("records", help="record operations").add_subparsers(
        dest="records_command", required=True
    )
    re_ = records.add_parser(
        "erase", help="crypto-shred a record (DeleteRecord) and print the erasure receipt"
    )
    re_.add_argument("--record", dest="record_id", required=True)
    re_.add_argument("--address", help="server address (default: from make dev's settings)")
    re_.add_argument("--tenant")
    re_.set_defaults(func=cmd_delete)
    rp = records.add_parser("purge", help="crypto-shred what is past the schema's retention")
    rp.add_argument("--expired", action="store_true", help="required: purge what has expired")
    rp.add_argument("--dry-run", action="store_true", help="only count")
    rp.add_argument("--batch", type=int, default=100, help="records per transaction")
    rp.add_argument("--config", help="TOML settings (default: make dev's settings)")
    rp.set_defaults(func=cmd_records_purge)
    cn = client_parser("consent", "show, or --set, the purposes a customer consents to")
    cn.add_argument("record_id")
    cn.add_argument("--set", help="comma-separated purposes (the complete new set)")
    cn.add_argument("--expected-version", type=int, default=0)
    cn.add_argument("--source", default="cvault-cli")
    cn.set_defaults(func=cmd_consent)
    ac = client_parser("access", "who saw this customer's data, when and why (audit.read)")
    ac.add_argument("record_id")
    ac.add_argument("--limit", type=int, default=0)
    ac.add_argument("--purpose")
    ac.set_defaults(func=cmd_access)
    ex = client_parser("export", "data subject access export (record.export)")
    ex.add_argument("record_id")
    ex.add_argument("--purpose", default="dsar")
    ex.add_argument("--recipient-key", help="file with a base64 X25519 public key: seal to it")
    ex.add_argument("--output", help="write the document here instead of stdout")
    ex.set_defaults(func=cmd_export)
    add_file_commands(sub, client_parser)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    server_side = args.command in ("dev", "serve", "db", "keys", "audit")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if server_side else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except errors.VaultServiceError as exc:
        print(f"cvault: {exc.reason}: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
