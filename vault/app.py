"""Wiring: settings -> database, key server, key manager, schema, policy, audit log, services,
authentication and the gRPC server."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from vault.api import (
    ApiKeyStore,
    Authenticator,
    CallLimits,
    RunningServer,
    server_credentials,
    start_server,
)
from vault.audit import ALLOWED, DENIED, AuditEvent, AuditLog, AuditSink, JsonLinesSink
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
from vault.memory import pin_mmap_threshold
from vault.policy import PolicyHolder
from vault.schema import RecordSchema, load_schema
from vault.service import Access, Services
from vault.service.access import printable
from vault.storage import Database, current_revision, grant_runtime_role, head_revision, upgrade
from vault.text import NerUnavailable, ScannerSetup


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

    def check_ready(self) -> None:
        """Refuse to start a server that cannot serve (STYLE 6): the database must answer and
        be at the newest migration, and the key server must answer.

        Raises:
            ConfigError: with what is wrong and how to fix it.
        """
        if not self.db.ping():
            raise ConfigError("database unreachable: check database_url")
        current, head = current_revision(self.settings.database_url), head_revision()
        if current != head:
            raise ConfigError(
                f"database schema is at {current or 'nothing'}, not {head}: run `cvault db upgrade`"
            )
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
    ) -> RunningServer:
        """Start serving on ``listen`` (default: the settings'), with the settings' TLS unless
        ``plaintext`` (``cvault dev``'s loopback port; its mTLS port goes in ``extra_ports``)."""
        # before the gRPC workers allocate: freed large request buffers go back to the system
        pin_mmap_threshold()
        self.policy.start_watching()
        return start_server(
            self.services,
            listen or self.settings.listen,
            authenticator=self.authenticator,
            credentials=None if plaintext else self.credentials,
            extra_ports=extra_ports,
            limits=call_limits(self.settings),
            health_interval=self.settings.health_interval_seconds,
        )

    def close(self) -> None:
        self.policy.stop()
        self.audit.close()
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
    sinks: list[AuditSink] = []
    if settings.audit.jsonl == "-":
        sinks.append(JsonLinesSink(sys.stdout))
    elif settings.audit.jsonl:
        sinks.append(JsonLinesSink(settings.audit.jsonl))
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
        chain=settings.audit.chain,
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
    too): the settings' chain, with the operator's key-server access."""
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
