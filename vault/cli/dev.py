"""``cvault dev`` (the embedded default: OpenBao, SQLite and the gRPC server in the foreground),
``cvault serve`` (the server from a settings file) and ``cvault db upgrade``; and the signal loop
both servers stop through."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vault.cli import _server, _workers
from vault.cli._common import (
    DEV_SETTINGS,
    FIELD_CLASSES,
    Report,
    Subparsers,
    add_json_option,
    state_dir,
)
from vault.config import (
    AuditSettings,
    AuthSettings,
    OpenBaoSettings,
    Settings,
    deploy_file,
    load_settings,
)
from vault.devcerts import DevPki, generate_dev_pki
from vault.errors import ConfigError
from vault.keys import ensure_kv_v2, init_field_keys, setup_approle, write_policy
from vault.keys.openbao_dev import OpenBaoDevError, OpenBaoDevServer

DEV_ROLES = ("backend-service", "support-agent", "ai-pipeline", "fraud-analyst", "dpo", "key-admin")
#: the sample policy's two tenants: every dev key reaches the first, ``dev-other-backend-service``
#: the second only
DEV_TENANTS = ("demo", "other")
#: API keys made besides one per role (key label -> what it is for)
_OTHER_KEYS = ("other-backend-service",)
#: how long past grace + STOP_MARGIN a stop may still take (closing the audit log, OpenBao)
#: before the process is ended regardless
FORCE_MARGIN = 2.0
#: what stops ``cvault serve``; SIGHUP reloads its policy instead
_SERVE_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: what stops ``cvault dev``: closing its terminal (SIGHUP) too, OpenBao with it
_DEV_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

log = logging.getLogger("vault.cli")


def register(sub: Subparsers) -> None:
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
    s.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the port with other processes (SO_REUSEPORT; off: a busy port is an error)",
    )
    s.add_argument(
        "--workers",
        type=_workers.worker_count,
        default=1,
        help="serve from N processes on the one port (SO_REUSEPORT), each with its own audit"
        " chain and caches; metrics on [metrics] listen's port + i (default 1)",
    )
    # a worker of `--workers N`: started by the supervising cvault serve only
    s.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    s.add_argument("--supervisor", type=int, default=0, help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database operations").add_subparsers(
        dest="db_command", required=True
    )
    up = db.add_parser("upgrade", help="apply migrations (as the tables' owner)")
    up.add_argument("--database-url", help="the owner's (migration role's) URL")
    up.add_argument("--config")
    up.add_argument(
        "--runtime-role",
        default="",
        help="PostgreSQL: create this role for `cvault serve` (if missing) and grant it the"
        " service's rights, append-only on the audit log",
    )
    add_json_option(up)
    up.set_defaults(func=cmd_db_upgrade)


# --- cvault dev ----------------------------------------------------------------------------------


def cmd_dev(args: argparse.Namespace) -> int:
    """Embedded default: OpenBao + SQLite + the gRPC server, all stopped on Ctrl-C."""
    state = state_dir(args)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    # dies with cvault dev, and a server a crashed run left behind is stopped first
    bao = OpenBaoDevServer(persistent_dir=state / "openbao", die_with_parent=True)
    try:
        bao.start()
    except OpenBaoDevError as exc:
        raise ConfigError(f"OpenBao did not start in {state / 'openbao'}: {exc}") from None
    try:
        _run_dev(args, state, bao)
    finally:
        bao.stop()
    return 0


@dataclass(frozen=True)
class _DevSetup:
    """What ``cvault dev`` made before starting the server."""

    settings: Settings
    pki: DevPki
    policy_file: Path
    #: the address of the mTLS port, next to the API-key port of ``settings.listen``
    mtls_listen: str
    #: role -> its API key, for the dev settings file (the server's settings hold only hashes)
    api_keys: dict[str, str] = field(repr=False)


def _run_dev(args: argparse.Namespace, state: Path, bao: OpenBaoDevServer) -> None:
    dev = _set_up_dev(args, state, bao)
    app = _server.build_app(dev.settings)
    app.check_ready()
    app.create_tenants(DEV_TENANTS, created_by="cvault dev")
    mtls = _server.server_credentials(
        cert_chain=dev.pki.server.cert.read_bytes(),
        private_key=dev.pki.server.key.read_bytes(),
        client_ca=dev.pki.ca.cert.read_bytes(),
        require_client_auth=True,
    )
    # the policy file is watched (polled); SIGHUP is the terminal closing: it stops cvault dev
    # and its OpenBao like Ctrl-C
    # the API-key port is plaintext loopback for trying things by hand; mTLS is the real mode
    running = app.serve(plaintext=True, extra_ports=[(dev.mtls_listen, mtls)])
    mtls_address = f"127.0.0.1:{running.extra_ports[0]}"
    _write_dev_settings(state, dev, bao, running.address, mtls_address)
    banner = _dev_banner(running.address, mtls_address, state, bao, dev.policy_file)
    grace = dev.settings.shutdown_grace_seconds
    _serve_until_signalled(
        "cvault dev",
        running,
        app,
        grace=grace,
        force=bao.stop,
        signals=_DEV_SIGNALS,
        on_ready=lambda: print(banner, flush=True),
    )


def _set_up_dev(args: argparse.Namespace, state: Path, bao: OpenBaoDevServer) -> _DevSetup:
    """OpenBao set up for the service, the SQLite database at the newest revision, the dev PKI,
    a fresh API key per sample role, and the server's settings."""
    prefix = "cvault"
    role_id, secret_id = _set_up_openbao(bao, prefix)
    db_url = f"sqlite:///{(state / 'vault.db').resolve()}"
    _server.upgrade_database(db_url)
    pki = generate_dev_pki(state / "pki", roles=DEV_ROLES)
    # One API key per sample role, made fresh each start: the keys go to dev.json (0600),
    # only their salted hashes to the server's settings.
    api_keys: dict[str, str] = {}
    stored: dict[str, dict[str, str]] = {}
    for role in (*DEV_ROLES, *_OTHER_KEYS):
        key, entry = _server.new_api_key(f"dev-{role}")
        api_keys[role] = key
        stored[f"dev-{role}"] = entry
    policy_file = Path(args.policy) if args.policy else deploy_file("policy", "sample-policy.yaml")
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
    return _DevSetup(settings, pki, policy_file, mtls_listen, api_keys)


def _set_up_openbao(bao: OpenBaoDevServer, prefix: str) -> tuple[str, str]:
    """The transit field keys, KV for the audit log, and an AppRole limited to the runtime
    policy of ``deploy/openbao/``: its (role id, secret id)."""
    init_field_keys(bao.url, bao.root_token, key_prefix=prefix, field_classes=FIELD_CLASSES)
    ensure_kv_v2(bao.url, bao.root_token)  # the audit log's chain-head checkpoints
    runtime_policy = deploy_file("openbao", "runtime-policy.hcl").read_text()
    write_policy(bao.url, bao.root_token, "cvault-runtime", runtime_policy)
    return setup_approle(
        bao.url,
        bao.root_token,
        role_name="cvault-dev",
        policies=["cvault-runtime"],
        token_ttl="1h",  # noqa: S106 - a duration
        token_max_ttl="24h",  # noqa: S106 - a duration
    )


def _write_dev_settings(
    state: Path, dev: _DevSetup, bao: OpenBaoDevServer, address: str, mtls_address: str
) -> None:
    """The dev settings file the other commands read (mode 0600: it holds the API keys and
    OpenBao's root token)."""
    info = {
        "address": address,
        "mtls_address": mtls_address,
        "api_keys": dev.api_keys,
        "pki": {
            "ca": str(dev.pki.ca.cert),
            **{
                role: {"cert": str(c.cert), "key": str(c.key)}
                for role, c in dev.pki.clients.items()
            },
        },
        "policy": str(dev.policy_file),
        "tenant": DEV_TENANTS[0],
        "database_url": dev.settings.database_url,
        "audit_jsonl": str(state / "audit.jsonl"),
        "openbao_url": bao.url,
        "openbao_root_token": bao.root_token,
    }
    fd = os.open(state / DEV_SETTINGS, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(info, fh, indent=2)


def _dev_listen_pair(listen: str) -> tuple[str, str]:
    """API-key port as asked, and the mTLS port next to it (port + 1; port 0 picks any)."""
    host, _, port = listen.rpartition(":")
    return listen, f"{host}:{int(port) + 1 if int(port) else 0}"


def _dev_banner(
    address: str, mtls_address: str, state: Path, bao: OpenBaoDevServer, policy_file: Path
) -> str:
    return (
        f"cvault dev: serving vault.v1 on {address} (API keys) and {mtls_address} "
        f"(mTLS)\n  SQLite {state / 'vault.db'}, OpenBao {bao.url}, policy {policy_file}\n"
        f"  dev settings (addresses, one API key per sample role, certificate paths) are in "
        f"{state / DEV_SETTINGS}; the CLI reads them.\n"
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
        "  Ctrl-C stops the server and OpenBao."
    )


# --- cvault serve, cvault db upgrade -------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    worker = args.worker_index
    if args.workers > 1 and worker is None:  # the supervisor of `--workers N`
        for i in range(args.workers):
            _server.worker_settings(settings, i)  # a bad chain or metrics port: fail here
        stop = settings.server.drain_seconds + settings.shutdown_grace_seconds
        return _workers.run(args, settings, stop + _server.STOP_MARGIN + FORCE_MARGIN)
    name = "cvault"
    if worker is not None:
        _workers.die_with_supervisor(args.supervisor)
        settings = _server.worker_settings(settings, worker)
        name = f"cvault worker {worker}"
    app = _server.build_app(settings)
    app.check_ready()
    app.policy.install_sighup()  # `kill -HUP` reloads the policy (an invalid file keeps the old)
    running = app.serve(reuse_port=args.reuse_port or worker is not None)
    _serve_until_signalled(
        name,
        running,
        app,
        grace=app.settings.shutdown_grace_seconds,
        drain=app.settings.server.drain_seconds,
        on_ready=lambda: print(
            f"{name}: serving vault.v1 on port {running.port} (audit chain {app.audit.chain})",
            flush=True,
        ),
        same_stop=0.0 if worker is None else _workers.SAME_STOP,
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    url = args.database_url or load_settings(args.config).database_url
    _server.upgrade_database(url, args.runtime_role)
    out = Report(args)
    out.line("database is at the newest schema revision")
    if args.runtime_role:
        out.line(f"role {args.runtime_role}: granted the service's rights (audit log append-only)")
    out.done({"upgraded": True, "runtime_role": args.runtime_role or None})
    return 0


def _serve_until_signalled(
    name: str,
    running: _server.RunningServer,
    app: _server.App,
    *,
    grace: float,
    drain: float = 0.0,
    force: Callable[[], None] = lambda: None,
    signals: tuple[signal.Signals, ...] = _SERVE_SIGNALS,
    on_ready: Callable[[], None] = lambda: None,
    same_stop: float = 0.0,
) -> None:
    """Serve until one of ``signals`` (``on_ready`` runs once they are handled), then stop
    in three logged steps: health says NOT_SERVING for ``drain`` seconds while calls are still
    served (load balancers move away); new calls are refused and calls in flight get ``grace``
    seconds; then gRPC cancels them, however they are stuck (a stream whose client never
    reads or never half-closes).

    A second signal, or a stop still running ``drain + grace + STOP_MARGIN + FORCE_MARGIN``
    seconds after the first, runs ``force`` (in dev: stop OpenBao) and ends the process at
    once with status 1. A signal within ``same_stop`` seconds of the first is the same stop (a
    worker of ``--workers`` hears it from its supervisor and from a process manager that
    signals every process of the service).
    """
    stop = threading.Event()
    received: list[str] = []
    first = [0.0]

    def forced(why: str) -> None:
        log.error("%s: %s: stopping now", name, why)
        try:
            force()
        finally:
            os._exit(1)

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():
            if time.monotonic() - first[0] < same_stop:
                return
            forced(f"{signal.Signals(signum).name} again")
        received.append(signal.Signals(signum).name)
        first[0] = time.monotonic()
        stop.set()

    for signum in signals:
        signal.signal(signum, on_signal)
    on_ready()  # says "serving" once a signal can stop it
    while not stop.wait(0.5):
        pass
    watchdog = threading.Timer(
        drain + grace + _server.STOP_MARGIN + FORCE_MARGIN,
        forced,
        args=("the stop took too long",),
    )
    watchdog.daemon = True
    watchdog.start()
    log.info("%s: %s: health NOT_SERVING, draining for %g s", name, received[0], drain)
    running.drain()
    time.sleep(drain)
    log.info("%s: refusing new calls; calls in flight get %g s", name, grace)
    running.stop(grace)
    app.close()
    log.info("%s: stopped", name)
