"""Service settings: a TOML file, with ``CVAULT_*`` environment variables taking precedence.

Example (``cvault serve --config vault.toml``)::

    listen = "127.0.0.1:50051"
    database_url = "postgresql://vault@db/vault"   # or database_url_file (a password in it)
    schema = "schema.yaml"            # optional; the packaged default otherwise
    policy = "policy.yaml"            # who may see what: see deploy/policy/README.md

    [openbao]
    url = "https://openbao:8200"
    key_prefix = "cvault"
    auth = "approle"                  # or "token"
    role_id_file = "/run/secrets/role_id"
    secret_id_file = "/run/secrets/secret_id"
    # token_file = "/run/secrets/token"   (auth = "token"; or CVAULT_OPENBAO_TOKEN)

    [rotation]                        # cvault keys auto-rotate (0: never)
    field_key_days = 90
    tenant_key_days = 30

    [cache]
    tenant_keys_max_entries = 10000
    tenant_keys_max_age_seconds = 3600
    tenant_keys_max_uses = 1000000
    data_keys_max_entries = 100000
    data_keys_max_age_seconds = 600
    data_keys_max_uses = 1000000
    data_keys_on_write = false        # cache the data keys a write makes (bulk loads: no)

    [auth]                            # mTLS: the principal is the client certificate's SAN
    tls_cert_file = "/etc/cvault/tls/server.pem"
    tls_key_file = "/etc/cvault/tls/server-key.pem"
    client_ca_file = "/etc/cvault/tls/clients-ca.pem"
    # API keys (development, tests): salted hashes only, see AuthSettings
    # [auth.api_keys.ci-smoke]
    # principal = "apikey:ci-smoke"
    # salt = "..."
    # hash = "..."

    [server]                          # admission (vault.api._guard): nobody takes every worker
    reserved_workers = 2              # of max_workers, kept for health checks
    max_streams = 8                   # streaming calls at once (default: half of max_workers)
    max_streams_per_principal = 4     # (default: half of max_streams)
    stream_idle_seconds = 60          # a stream whose client sends nothing is cancelled
    stream_max_seconds = 3600
    reflection = true                 # server reflection (needs no credentials)
    open_streams = 2                  # reflection and health-watch streams at once
    open_idle_seconds = 10
    drain_seconds = 5                 # SIGTERM: NOT_SERVING this long, still serving, then stop
    health_listen = "0.0.0.0:8086"    # plaintext, grpc.health.v1 only: for kubelet probes

    [text]                            # TokenizeText detection (vault.text.ScannerSetup)
    ner = "none"                      # or "spacy:<package>", "presidio", "presidio:<package>"
    phone_regions = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "CA", "AU", "IN"]
    recall = "standard"               # "high": strict mode, every capitalised word run

    [metrics]                         # Prometheus /metrics over HTTP ("" or absent: off)
    listen = "127.0.0.1:9464"

    [tracing]                         # OpenTelemetry spans as JSON lines (vault.tracing)
    enabled = false
    exporter = "console"              # stderr; or "file" with file = "/var/log/cvault/spans.jsonl"

    [logging]
    format = "text"                   # or "json"; --log-format and CVAULT_LOG_FORMAT win

There is no admin key setting: callers authenticate with mTLS or an API key (``[auth]``) and
the policy maps their principal to a role. Secrets are read from files or the environment,
never from the TOML file itself.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vault.errors import ConfigError
from vault.keys import CacheLimits, CacheSettings


@dataclass(frozen=True)
class OpenBaoSettings:
    url: str = "http://127.0.0.1:8200"
    key_prefix: str = "cvault"
    mount: str = "transit"
    auth: str = "token"
    token: str = field(default="", repr=False)
    role_id: str = field(default="", repr=False)
    secret_id: str = field(default="", repr=False)
    timeout_seconds: float = 5.0
    ca_cert: str = ""


@dataclass(frozen=True)
class AuthSettings:
    """How callers authenticate: mTLS (production) and/or API keys (development, tests).

    ``api_keys`` maps key id -> {"principal", "salt", "hash"} (salted hashes, never the keys;
    make them with :func:`vault.api._authn.new_api_key`).
    """

    tls_cert_file: str = ""
    tls_key_file: str = ""
    client_ca_file: str = ""
    require_client_auth: bool = True
    api_keys: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class AuditSettings:
    jsonl: str = ""  # "" no second sink, "-" stdout, else a file path
    # "": one chain per server process, named from the host (vault.audit.server_chain); with
    # `cvault serve --workers N` each worker appends "-w<i>"
    chain: str = ""
    # the chain operator commands append their own rows to ("": ops_<host>)
    operator_chain: str = ""
    checkpoint_every: int = 1000
    kv_mount: str = "secret"
    kv_path: str = "cvault/audit/head"
    syslog: str = ""  # "" no syslog sink, else a socket path (/dev/log) or host:port (UDP)
    syslog_facility: str = "authpriv"


@dataclass(frozen=True)
class RotationSettings:
    """When ``cvault keys auto-rotate`` (from cron or a Kubernetes CronJob) rotates: a level
    whose newest key is older than its period is rotated; 0 never rotates that level.
    ``trim``: after a field-key rotation, also retire and trim the old versions (what makes old
    backups unreadable)."""

    field_key_days: float = 0.0
    tenant_key_days: float = 0.0
    trim: bool = True


#: phone regions tried besides a call's own (same as vault.text.DEFAULT_PHONE_REGIONS)
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "CA", "AU", "IN")


@dataclass(frozen=True)
class TextSettings:
    """``[text]``: how TokenizeText finds values (see vault.text.ScannerSetup)."""

    ner: str = "none"
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS
    recall: str = "standard"


@dataclass(frozen=True)
class ServerSettings:
    """Admission bounds of the gRPC server (``[server]``; see ``vault.api.CallLimits``)."""

    reserved_workers: int = 2
    max_streams: int = 0  # 0: half of max_workers
    max_streams_per_principal: int = 0  # 0: half of max_streams
    stream_idle_seconds: float = 60.0
    stream_max_seconds: float = 3600.0
    reflection: bool = True
    open_streams: int = 2
    open_idle_seconds: float = 10.0
    #: on SIGTERM, how long health says NOT_SERVING while calls are still served, so load
    #: balancers stop sending new ones before the server refuses them
    drain_seconds: float = 5.0
    #: a plaintext port serving only grpc.health.v1 (Kubernetes' probes cannot speak mTLS);
    #: "" = none
    health_listen: str = ""


@dataclass(frozen=True)
class MetricsSettings:
    """``[metrics]``: the Prometheus endpoint (``host:port``; "" = off)."""

    listen: str = ""


@dataclass(frozen=True)
class TracingSettings:
    """``[tracing]``: OpenTelemetry spans as JSON lines to stderr (``console``) or a file."""

    enabled: bool = False
    exporter: str = "console"
    file: str = ""
    service_name: str = "cvault"

    def __post_init__(self) -> None:
        if self.exporter not in ("console", "file") or (self.exporter == "file" and not self.file):
            raise ValueError("[tracing] exporter must be 'console' or 'file' (with file = <path>)")


@dataclass(frozen=True)
class LoggingSettings:
    """``[logging]``: ``format`` "text" or "json" (``--log-format``/``CVAULT_LOG_FORMAT`` win)."""

    format: str = "text"

    def __post_init__(self) -> None:
        if self.format not in ("text", "json"):
            raise ValueError("[logging] format must be 'text' or 'json'")


def _table(cls: type[Any], table: Mapping[str, Any], name: str, source: str) -> Any:
    """A settings dataclass of flat scalar fields from its TOML table (types checked)."""
    known = cls.__dataclass_fields__
    if set(table) - set(known):
        raise ConfigError(f"{source}: unknown [{name}] settings {sorted(set(table) - set(known))}")
    defaults = cls()
    for key, value in table.items():
        if type(value) is not type(getattr(defaults, key)):
            raise ConfigError(
                f"{source}: [{name}] {key} must be a {type(getattr(defaults, key)).__name__}"
            )
    return cls(**table)


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    database_url: str = "sqlite:///.cvault/vault.db"
    schema: str = ""
    policy: str = ""
    health_interval_seconds: float = 2.0
    max_workers: int = 16
    #: on SIGTERM/SIGINT, how long calls in flight may finish before they are cancelled
    shutdown_grace_seconds: float = 10.0
    openbao: OpenBaoSettings = field(default_factory=OpenBaoSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    rotation: RotationSettings = field(default_factory=RotationSettings)
    text: TextSettings = field(default_factory=TextSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)


def _read_secret(table: Mapping[str, Any], key: str, source: str, *, inline: bool = False) -> str:
    """``<key>_file``'s content; ``<key>`` itself only when ``inline`` is allowed (a secret
    never sits in the TOML file)."""
    if f"{key}_file" in table:
        path = Path(str(table[f"{key}_file"]))
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read {key}_file: {exc.strerror}") from None
    if key in table:
        if inline:
            return str(table[key])
        raise ConfigError(f"{source}: put {key} in a file ({key}_file) or the environment")
    return ""


def _openbao(bao: Mapping[str, Any], env: Mapping[str, str], source: str) -> OpenBaoSettings:
    """``[openbao]``: only the credential of the chosen ``auth`` is read (a token-auth
    operator job has no AppRole files), and none may sit in the TOML file itself."""
    for key in ("token", "role_id", "secret_id"):
        if key in bao:
            raise ConfigError(f"{source}: put {key} in a file ({key}_file) or the environment")
    auth = env.get("CVAULT_OPENBAO_AUTH", bao.get("auth", "token"))

    def secret(key: str, needed: bool) -> str:
        if not needed:
            return ""
        return env.get(f"CVAULT_OPENBAO_{key.upper()}") or _read_secret(bao, key, source)

    return OpenBaoSettings(
        url=env.get("CVAULT_OPENBAO_URL", bao.get("url", OpenBaoSettings.url)),
        key_prefix=env.get("CVAULT_KEY_PREFIX", bao.get("key_prefix", "cvault")),
        mount=bao.get("mount", "transit"),
        auth=auth,
        token=secret("token", auth == "token"),
        role_id=secret("role_id", auth == "approle"),
        secret_id=secret("secret_id", auth == "approle"),
        timeout_seconds=float(bao.get("timeout_seconds", 5.0)),
        ca_cert=env.get("CVAULT_OPENBAO_CA_CERT", bao.get("ca_cert", "")),
    )


def _flag(table: Mapping[str, Any], name: str, source: str) -> bool:
    """A true/false setting (absent: false); anything else is refused, not guessed."""
    value = table.get(name, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: {name} must be true or false")
    return value


def _cache_limits(table: Mapping[str, Any], prefix: str, default: CacheLimits) -> CacheLimits:
    return CacheLimits(
        max_entries=int(table.get(f"{prefix}_max_entries", default.max_entries)),
        max_age_seconds=float(table.get(f"{prefix}_max_age_seconds", default.max_age_seconds)),
        max_uses=int(table.get(f"{prefix}_max_uses", default.max_uses)),
    )


_TOP = {
    "listen",
    "policy",
    "auth",
    "audit",
    "database_url",
    "database_url_file",
    "schema",
    "health_interval_seconds",
    "max_workers",
    "shutdown_grace_seconds",
    "openbao",
    "cache",
    "rotation",
    "text",
    "server",
    "metrics",
    "tracing",
    "logging",
}
_OPENBAO = {
    "url",
    "key_prefix",
    "mount",
    "auth",
    "token_file",
    "role_id_file",
    "secret_id_file",
    "timeout_seconds",
    "ca_cert",
    "token",
    "role_id",
    "secret_id",
}


_AUTH = {"tls_cert_file", "tls_key_file", "client_ca_file", "require_client_auth", "api_keys"}
_AUDIT = {
    "jsonl",
    "chain",
    "operator_chain",
    "checkpoint_every",
    "kv_mount",
    "kv_path",
    "syslog",
    "syslog_facility",
}


def _auth(table: Mapping[str, Any], source: str) -> AuthSettings:
    if set(table) - _AUTH:
        raise ConfigError(f"{source}: unknown [auth] settings {sorted(set(table) - _AUTH)}")
    keys = table.get("api_keys", {})
    if not isinstance(keys, Mapping) or not all(isinstance(v, Mapping) for v in keys.values()):
        raise ConfigError(f"{source}: [auth.api_keys] must map key ids to tables")
    return AuthSettings(
        tls_cert_file=str(table.get("tls_cert_file", "")),
        tls_key_file=str(table.get("tls_key_file", "")),
        client_ca_file=str(table.get("client_ca_file", "")),
        require_client_auth=bool(table.get("require_client_auth", True)),
        api_keys={str(k): {str(a): str(b) for a, b in v.items()} for k, v in keys.items()},
    )


def _audit(table: Mapping[str, Any], source: str, env: Mapping[str, str]) -> AuditSettings:
    if set(table) - _AUDIT:
        raise ConfigError(f"{source}: unknown [audit] settings {sorted(set(table) - _AUDIT)}")
    return AuditSettings(
        jsonl=str(table.get("jsonl", "")),
        chain=env.get("CVAULT_AUDIT_CHAIN") or str(table.get("chain", "")),
        operator_chain=str(table.get("operator_chain", "")),
        checkpoint_every=int(table.get("checkpoint_every", 1000)),
        kv_mount=str(table.get("kv_mount", "secret")),
        kv_path=str(table.get("kv_path", "cvault/audit/head")),
        syslog=str(table.get("syslog", "")),
        syslog_facility=str(table.get("syslog_facility", "authpriv")),
    )


_ROTATION = frozenset({"field_key_days", "tenant_key_days", "trim"})


def _rotation(table: Mapping[str, Any], source: str) -> RotationSettings:
    if set(table) - _ROTATION:
        raise ConfigError(f"{source}: unknown [rotation] settings {sorted(set(table) - _ROTATION)}")
    out = RotationSettings(
        field_key_days=float(table.get("field_key_days", 0.0)),
        tenant_key_days=float(table.get("tenant_key_days", 0.0)),
        trim=bool(table.get("trim", True)),
    )
    if out.field_key_days < 0 or out.tenant_key_days < 0:
        raise ConfigError(f"{source}: [rotation] periods must be 0 (never) or positive")
    return out


_TEXT = frozenset({"ner", "phone_regions", "recall"})


def _server(table: Mapping[str, Any], source: str) -> ServerSettings:
    known = set(ServerSettings.__dataclass_fields__)
    if set(table) - known:
        raise ConfigError(f"{source}: unknown [server] settings {sorted(set(table) - known)}")
    defaults = ServerSettings()
    values = {k: type(getattr(defaults, k))(table.get(k, getattr(defaults, k))) for k in known}
    if not isinstance(table.get("reflection", True), bool):
        raise ConfigError(f"{source}: [server] reflection must be true or false")
    if not 0 <= values["drain_seconds"] <= 300:
        raise ConfigError(f"{source}: [server] drain_seconds must be 0..300")
    return ServerSettings(**values)


def _text(table: Mapping[str, Any], source: str) -> TextSettings:
    if set(table) - _TEXT:
        raise ConfigError(f"{source}: unknown [text] settings {sorted(set(table) - _TEXT)}")
    regions = table.get("phone_regions", DEFAULT_PHONE_REGIONS)
    if not isinstance(regions, list | tuple) or not all(isinstance(r, str) for r in regions):
        raise ConfigError(f"{source}: [text] phone_regions must be a list of region codes")
    settings = TextSettings(
        ner=str(table.get("ner", "none")),
        phone_regions=tuple(r.upper() for r in regions),
        recall=str(table.get("recall", "standard")),
    )
    if settings.recall not in ("standard", "high"):
        raise ConfigError(f"{source}: [text] recall must be 'standard' or 'high'")
    kind, _, package = settings.ner.partition(":")
    if settings.ner != "none" and not (kind == "spacy" and package) and kind != "presidio":
        raise ConfigError(
            f"{source}: [text] ner must be 'none', 'spacy:<package>' or 'presidio[:<package>]'"
        )
    return settings


def deploy_file(*parts: str) -> Path:
    """A file shipped from ``deploy/``: inside the installed package, or in the source tree."""
    here = Path(__file__).resolve().parent
    for base in (here / "_deploy", here.parent / "deploy"):
        candidate = base.joinpath(*parts)
        if candidate.is_file():
            return candidate
    raise ConfigError(f"deploy file not found: {'/'.join(parts)}")


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Settings from a TOML file (optional) and the environment.

    Raises:
        ConfigError: unknown keys, unreadable secret files or bad values, naming the file.
    """
    env = os.environ if env is None else env
    source = str(path) if path else "<environment>"
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"{source}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    unknown = set(data) - _TOP
    if unknown:
        raise ConfigError(f"{source}: unknown settings {sorted(unknown)}")
    bao = dict(data.get("openbao", {}))
    if set(bao) - _OPENBAO:
        raise ConfigError(f"{source}: unknown [openbao] settings {sorted(set(bao) - _OPENBAO)}")
    cache = dict(data.get("cache", {}))
    defaults = CacheSettings()
    try:
        openbao = _openbao(bao, env, source)
        settings = Settings(
            listen=env.get("CVAULT_LISTEN", data.get("listen", Settings.listen)),
            database_url=env.get("CVAULT_DATABASE_URL")
            or _read_secret(data, "database_url", source, inline=True)
            or Settings.database_url,
            schema=env.get("CVAULT_SCHEMA", data.get("schema", "")),
            policy=env.get("CVAULT_POLICY", data.get("policy", "")),
            health_interval_seconds=float(data.get("health_interval_seconds", 2.0)),
            max_workers=int(data.get("max_workers", 16)),
            shutdown_grace_seconds=float(
                data.get("shutdown_grace_seconds", Settings.shutdown_grace_seconds)
            ),
            openbao=openbao,
            cache=CacheSettings(
                tenant_keys=_cache_limits(cache, "tenant_keys", defaults.tenant_keys),
                data_keys=_cache_limits(cache, "data_keys", defaults.data_keys),
                data_keys_on_write=_flag(cache, "data_keys_on_write", source),
            ),
            auth=_auth(data.get("auth", {}), source),
            audit=_audit(data.get("audit", {}), source, env),
            rotation=_rotation(data.get("rotation", {}), source),
            text=_text(data.get("text", {}), source),
            server=_server(data.get("server", {}), source),
            metrics=_table(MetricsSettings, data.get("metrics", {}), "metrics", source),
            tracing=_table(TracingSettings, data.get("tracing", {}), "tracing", source),
            logging=LoggingSettings(
                format=env.get("CVAULT_LOG_FORMAT")
                or _table(LoggingSettings, data.get("logging", {}), "logging", source).format
            ),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if not 0 <= settings.shutdown_grace_seconds <= 300:
        raise ConfigError(f"{source}: shutdown_grace_seconds must be 0..300")
    if openbao.auth not in ("token", "approle"):
        raise ConfigError(f"{source}: [openbao] auth must be 'token' or 'approle'")
    return settings
