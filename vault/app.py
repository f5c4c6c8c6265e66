"""Wiring: settings -> database, key server, key manager, schema, policy, audit log, services,
authentication and the gRPC server."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from vault import tracing
from vault.api import (
    ApiKeyStore,
    Authenticator,
    CallLimits,
    RunningServer,
    server_credentials,
    start_server,
)
from vault.audit import (
    ALLOWED,
    DENIED,
    AuditEvent,
    AuditLog,
    make_sinks,
    operator_chain,
    server_chain,
)
from vault.config import Settings, deploy_file
from vault.deadline import Deadline
from vault.errors import ConfigError
from vault.keys import (
    AppRoleAuth,
    KeyManager,
    KeyServerAuth,
    KvCheckpointStore,
    TokenAuth,
    TransitKeyWrapper,
)
from vault.logs import apply_settings as apply_log_format
from vault.memory import pin_mmap_threshold, tune_gc
from vault.metrics import MetricsServer, serve_metrics
from vault.policy import PolicyHolder
from vault.schema import RecordSchema, load_schema
from vault.service import Access, KeySync, Services
from vault.service.access import printable
from vault.storage import Database, grant_runtime_role, upgrade
from vault.text import NerUnavailable, ScannerSetup

log = logging.getLogger("vault.app")


def make_auth(settings: Settings) -> KeyServerAuth:
    bao = settings.openbao
    if bao.auth == "approle":
        return AppRoleAuth(bao.role_id, bao.secret_id)
    return TokenAuth(bao.token)


def make_wrapper(settings: Settings, auth: KeyServerAuth) -> TransitKeyWrapper:
    bao = settings.openbao
    return TransitKeyWrapper(
        bao.url,
        auth,
        key_prefix=bao.key_prefix,
        mount=bao.mount,
        timeout=bao.timeout_seconds,
        verify=bao.ca_cert or True,
    )


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None


def make_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS (with client certificates when required) when a certificate is configured."""
    auth = settings.auth
    if not auth.tls_cert_file:
        return None
    return server_credentials(
        cert_chain=_read(auth.tls_cert_file, "tls_cert_file"),
        private_key=_read(auth.tls_key_file, "tls_key_file"),
        client_ca=_read(auth.client_ca_file, "client_ca_file") if auth.client_ca_file else None,
        require_client_auth=auth.require_client_auth and bool(auth.client_ca_file),
    )


@dataclass
class App:
    settings: Settings
    db: Database
    keys: KeyManager
    schema: RecordSchema
    policy: PolicyHolder
    audit: AuditLog
    services: Services
    authenticator: Authenticator
    credentials: grpc.ServerCredentials | None
    #: the /metrics endpoint, while :meth:`serve` runs with ``[metrics] listen`` set
    metrics_server: MetricsServer | None = None
    #: erasures and rotations reaching this process's key caches, while :meth:`serve` runs
    key_sync: KeySync | None = None

    def check_ready(self) -> None:
        """Refuse to start a server that cannot reach what it needs (STYLE 6): the database
        and the key server must answer. What can be fixed while it runs (a schema to migrate,
        a refused credential, a policy file) leaves it NOT_SERVING instead, with a log line
        naming the cause (:class:`~vault.api.server.HealthMonitor`), until it is fixed.

        Raises:
            ConfigError: with what is wrong and how to fix it.
        """
        if not self.db.ping():
            raise ConfigError("database unreachable: check database_url")
        if not self.keys.healthy():
            raise ConfigError(f"key server unreachable or sealed at {self.settings.openbao.url}")

    def create_tenants(self, names: Sequence[str], *, created_by: str) -> None:
        """Create these tenants unless they exist (audited as ``admin.tenants.create``)."""
        for name in names:
            event = AuditEvent(
                action="admin.tenants.create",
                outcome=ALLOWED,
                principal=created_by,
                role="operator",
                purpose="",
                tenant=name,
            )
            tenants = self.services.core.tenants
            tenants.create(name, created_by, [event], deadline=Deadline.after(30))

    def serve(
        self,
        listen: str | None = None,
        *,
        plaintext: bool = False,
        extra_ports: Sequence[tuple[str, grpc.ServerCredentials | None]] = (),
        reuse_port: bool = False,
    ) -> RunningServer:
        """Start serving on ``listen`` (default: the settings'), with the settings' TLS unless
        ``plaintext`` (``cvault dev``'s loopback port; its mTLS port goes in ``extra_ports``)."""
        # before the gRPC workers allocate: freed large request buffers go back to the system
        pin_mmap_threshold()
        tune_gc()
        self.policy.start_watching()
        self.start_observability()
        self.start_key_sync()
        return start_server(
            self.services,
            listen or self.settings.listen,
            authenticator=self.authenticator,
            credentials=None if plaintext else self.credentials,
            extra_ports=extra_ports,
            limits=call_limits(self.settings),
            health_interval=self.settings.health_interval_seconds,
            reuse_port=reuse_port,
            health_listen=self.settings.server.health_listen,
        )

    def start_key_sync(self) -> None:
        """Apply erasures and rotations to this process's key caches (idempotent; see
        ``vault/service/_sync.py``): its heartbeat is named after its audit chain."""
        if self.key_sync is None:
            self.key_sync = KeySync(self.db, self.keys, replica=self.audit.chain)
            self.key_sync.start()

    def start_observability(self) -> None:
        """JSON logs, tracing and the metrics endpoint as the settings ask (idempotent).

        Raises: ConfigError: the metrics address cannot be bound, or the span file opened."""
        s = self.settings
        apply_log_format(s.logging.format)
        if s.tracing.enabled and not tracing.enabled():
            tracing.configure(s.tracing.exporter, s.tracing.file, s.tracing.service_name)
        if s.metrics.listen and self.metrics_server is None:
            self.metrics_server = serve_metrics(s.metrics.listen)
            host = s.metrics.listen.rpartition(":")[0]
            log.info("metrics on http://%s:%d/metrics", host, self.metrics_server.port)

    def close(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None
        if self.settings.tracing.enabled:
            tracing.shutdown()
        self.policy.stop()
        if self.key_sync is not None:
            self.key_sync.stop()
            self.key_sync = None
        self.audit.close(final_checkpoint=True)
        self.db.dispose()


def call_limits(settings: Settings) -> CallLimits:
    """The server's admission bounds from the settings (``max_workers`` and ``[server]``).

    Raises: ConfigError naming the bound that does not fit."""
    s = settings.server
    streams = s.max_streams or max(1, settings.max_workers // 2)
    try:
        return CallLimits(
            max_workers=settings.max_workers,
            reserved_workers=s.reserved_workers,
            max_streams=streams,
            max_streams_per_principal=s.max_streams_per_principal or max(1, streams // 2),
            stream_idle_seconds=s.stream_idle_seconds,
            stream_max_seconds=s.stream_max_seconds,
            reflection=s.reflection,
            open_streams=s.open_streams,
            open_idle_seconds=s.open_idle_seconds,
        )
    except ValueError as exc:
        raise ConfigError(f"[server]: {exc}") from None


def build_app(settings: Settings) -> App:
    """Build every part and fail at construction on bad settings, schema or policy (STYLE 6)."""
    schema = load_schema(settings.schema or None)
    policy = PolicyHolder(settings.policy or deploy_file("policy", "sample-policy.yaml"))
    db = Database(settings.database_url)
    auth = make_auth(settings)
    keys = KeyManager(make_wrapper(settings, auth), settings.cache)
    sinks = make_sinks(
        jsonl=settings.audit.jsonl,
        syslog=settings.audit.syslog,
        syslog_facility=settings.audit.syslog_facility,
    )
    bao = settings.openbao
    checkpoint = KvCheckpointStore(
        bao.url,
        auth,
        mount=settings.audit.kv_mount,
        path=settings.audit.kv_path,
        verify=bao.ca_cert or True,
    )
    audit = AuditLog(
        db,
        keys,
        chain=_chain(settings.audit.chain, "chain", server_chain),
        sinks=sinks,
        checkpoint=checkpoint,
        checkpoint_every=settings.audit.checkpoint_every,
    )
    services = build_services(settings, audit, schema=schema, policy=policy)
    access = services.core.access
    api_keys = ApiKeyStore(settings.auth.api_keys) if settings.auth.api_keys else None
    authenticator = Authenticator(
        api_keys=api_keys,
        allow_mtls=bool(settings.auth.tls_cert_file and settings.auth.client_ca_file),
        # asked on each call that needs it (a reload counts): picks among a certificate's SANs
        known_principals=lambda: policy.current.principals,
        on_denied=_audit_denial(access),
    )
    return App(
        settings,
        db,
        keys,
        schema,
        policy,
        audit,
        services,
        authenticator,
        make_credentials(settings),
    )


def build_services(
    settings: Settings,
    audit: AuditLog,
    *,
    schema: RecordSchema | None = None,
    policy: PolicyHolder | None = None,
) -> Services:
    """The service layer over ``audit``'s database and key manager, under the settings'
    schema and policy (loaded here unless given): what the server and every CLI command use."""
    schema = schema or load_schema(settings.schema or None)
    policy = policy or PolicyHolder(settings.policy or deploy_file("policy", "sample-policy.yaml"))
    text = settings.text
    setup = ScannerSetup(ner=text.ner, phone_regions=text.phone_regions, recall=text.recall)
    try:
        setup.detectors()  # a bad region or a missing NER model stops the start here
    except (ValueError, NerUnavailable) as exc:
        raise ConfigError(f"[text]: {exc}") from None
    return Services.build(audit.db, audit.keys, schema, Access(policy, audit), text_setup=setup)


def build_operator_audit_log(settings: Settings) -> AuditLog:
    """The audit log of an operator command (its database and key manager serve the command
    too), with the operator's key-server access (TLS verified against ``[openbao] ca_cert``).
    Its own rows go to the operator chain (``[audit] operator_chain``, default ``ops_<host>``),
    never to a server's: a command never waits for a server's chain head, nor a server for it."""
    bao = settings.openbao
    auth = make_auth(settings)
    verify = bao.ca_cert or True
    wrapper = TransitKeyWrapper(
        bao.url, auth, key_prefix=bao.key_prefix, mount=bao.mount, verify=verify
    )
    checkpoint = KvCheckpointStore(
        bao.url, auth, mount=settings.audit.kv_mount, path=settings.audit.kv_path, verify=verify
    )
    return AuditLog(
        Database(settings.database_url),
        KeyManager(wrapper),
        chain=_chain(settings.audit.operator_chain, "operator_chain", operator_chain),
        checkpoint=checkpoint,
    )


def _chain(configured: str, setting: str, pick: Callable[[str], str]) -> str:
    """The chain ``pick`` makes of ``[audit] <setting>``; ConfigError naming the setting."""
    try:
        return pick(configured)
    except ValueError as exc:
        raise ConfigError(f"[audit] {setting}: {exc}") from None


def worker_settings(settings: Settings, index: int) -> Settings:
    """The settings of worker ``index`` of ``cvault serve --workers N``: its own audit chain
    (``[audit] chain`` or the host's name, then ``-w<index>``) and, when ``[metrics] listen``
    names a port, that port plus ``index`` (Prometheus scrapes each worker; port 0 stays 0).
    The gRPC and health ports are shared (SO_REUSEPORT).

    Raises:
        ConfigError: an invalid chain name, or a metrics port that would pass 65535.
    """
    chain = _chain(settings.audit.chain, "chain", lambda c: server_chain(c, worker=index))
    metrics = settings.metrics
    host, sep, port = metrics.listen.rpartition(":")
    if sep and port.isdigit() and int(port) > 0:
        if int(port) + index > 65535:
            raise ConfigError(f"[metrics] listen: port {port} + worker {index} passes 65535")
        metrics = replace(metrics, listen=f"{host}:{int(port) + index}")
    return replace(settings, audit=replace(settings.audit, chain=chain), metrics=metrics)


def upgrade_database(url: str, runtime_role: str = "") -> None:
    """Migrate the database at ``url`` to the newest schema (``cvault db upgrade``), then give
    ``runtime_role`` (PostgreSQL) the service's rights, append-only on the audit log."""
    upgrade(url)
    if runtime_role:
        grant_runtime_role(url, runtime_role)


def _audit_denial(access: Access) -> Callable[[str, str], None]:
    """Unauthenticated calls are audited as denials (principal unknown), with the peer's
    address, under the per-peer bound of :class:`~vault.service.access.DenialLimiter`."""

    def on_denied(reason: str, peer: str) -> None:
        event = AuditEvent(
            action="auth.authenticate",
            outcome=DENIED,
            principal="",
            role="",
            purpose="",
            tenant="",
            reason=reason,
            peer=printable(peer),
        )
        access.record_denial(event, deadline=Deadline.after(5))

    return on_denied
