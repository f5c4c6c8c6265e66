"""Prometheus metrics of the whole service, in one registry (a shared utility, like
:mod:`vault.errors`: every layer may record here, none depends on another through it).

Labels are a closed vocabulary: gRPC method names (only of registered methods), status code
names, key-server operation names, cache names and reason codes (the ``reason`` of
:class:`vault.errors.VaultServiceError`, constants of the code). Never a value, a tenant name,
a principal, a record id or any other string a caller sends: :func:`code_label` turns anything
that does not look like a code constant into ``other``.

The metrics are process-wide (one set per process, in :data:`REGISTRY`): tests that start many
servers in one process share them, and the HTTP endpoint (:func:`serve_metrics`) is started
only when ``[metrics] listen`` is set.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterator, Sized
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import Any, TypeVar, cast
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
    start_http_server,
)

from vault.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

#: the registry every metric of the service lives in (and the only one the endpoint serves)
REGISTRY = CollectorRegistry(auto_describe=True)
process_collector.ProcessCollector(registry=REGISTRY)
platform_collector.PlatformCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RPCS = Counter(
    "cvault_rpc_total",
    "gRPC calls handled, by method and status code",
    ("method", "code"),
    registry=REGISTRY,
)
RPC_SECONDS = Histogram(
    "cvault_rpc_duration_seconds",
    "gRPC call latency (a stream: until its last response), by method and status code",
    ("method", "code"),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
KEY_SERVER_CALLS = Counter(
    "cvault_key_server_calls_total",
    "Key-server (OpenBao/Vault) requests, retries included, by operation and outcome",
    ("operation", "outcome"),
    registry=REGISTRY,
)
KEY_SERVER_SECONDS = Histogram(
    "cvault_key_server_duration_seconds",
    "Key-server request latency (retries included), by operation and outcome",
    ("operation", "outcome"),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
CACHE_LOOKUPS = Counter(
    "cvault_key_cache_lookups_total",
    "Lookups in the unwrapped-key caches (tenant_keys, data_keys), by result (hit or miss)",
    ("cache", "result"),
    registry=REGISTRY,
)
AUDIT_APPEND_SECONDS = Histogram(
    "cvault_audit_append_duration_seconds",
    "Time to chain and insert audit rows inside the caller's transaction, by outcome",
    ("outcome",),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
DENIALS = Counter(
    "cvault_denials_total",
    "Calls refused by authentication or policy (audited denials), by reason code",
    ("reason",),
    registry=REGISTRY,
)
LIMIT_REFUSALS = Counter(
    "cvault_limit_refusals_total",
    "Calls refused by a limit (role limits, admission: server_busy, too_many_streams), by reason",
    ("reason",),
    registry=REGISTRY,
)
DEGRADED_GAUGE = Gauge(
    "cvault_health_degraded",
    "1 while health finds a part degraded but still serving (the key server not answering "
    "while cached keys serve), else 0",
    registry=REGISTRY,
)

#: what a reason code, operation or outcome looks like (a constant of the code)
_CODE = re.compile(r"[a-z][a-z0-9_]{0,47}")
#: the key-server operations (label ``operation``)
KEY_SERVER_OPERATIONS = frozenset(
    {
        "wrap",
        "unwrap",
        "rewrap",
        "login",
        "token",
        "key_info",
        "key_rotate",
        "key_config",
        "key_trim",
        "checkpoint",
        "capabilities",
        "admin",
        "other",
    }
)
#: the key-server outcomes (label ``outcome``)
KEY_SERVER_OUTCOMES = frozenset({"ok", "unavailable", "denied", "rejected", "error"})
CACHES = frozenset({"tenant_keys", "data_keys", "other"})


def code_label(value: str) -> str:
    """``value`` when it looks like a reason code (lower-case, digits, ``_``), else ``other``:
    a label never carries a free-form string."""
    return value if _CODE.fullmatch(value) else "other"


def observe_rpc(method: str, code: str, seconds: float) -> None:
    """One finished gRPC call (``method``: a registered full method name)."""
    RPCS.labels(method, code).inc()
    RPC_SECONDS.labels(method, code).observe(seconds)


def observe_key_server(operation: str, outcome: str, seconds: float) -> None:
    """One key-server request (with its retries)."""
    op = operation if operation in KEY_SERVER_OPERATIONS else "other"
    out = outcome if outcome in KEY_SERVER_OUTCOMES else "error"
    KEY_SERVER_CALLS.labels(op, out).inc()
    KEY_SERVER_SECONDS.labels(op, out).observe(seconds)


class CacheCounter:
    """The hit and miss counters of one named cache, bound once (the lookup is a hot path)."""

    def __init__(self, cache: str) -> None:
        name = cache if cache in CACHES else "other"
        self.hit = CACHE_LOOKUPS.labels(name, "hit")
        self.miss = CACHE_LOOKUPS.labels(name, "miss")


@contextmanager
def audit_append_timer() -> Iterator[None]:
    """Time an audit append (outcome ``ok``, or ``failed`` when it raises)."""
    started = perf_counter()
    outcome = "failed"
    try:
        yield
        outcome = "ok"
    finally:
        AUDIT_APPEND_SECONDS.labels(outcome).observe(perf_counter() - started)


def timed_audit_append(append: F) -> F:
    """Decorate ``AuditLog.append(conn, events, ...)``: time it when it has events to write."""

    @functools.wraps(append)
    def timed(self: Any, conn: Any, events: Sized, *args: Any, **kwargs: Any) -> Any:
        if not events:
            return append(self, conn, events, *args, **kwargs)
        with audit_append_timer():
            return append(self, conn, events, *args, **kwargs)

    return cast(F, timed)


def count_denial(reason: str) -> None:
    DENIALS.labels(code_label(reason)).inc()


def count_limit_refusal(reason: str) -> None:
    LIMIT_REFUSALS.labels(code_label(reason)).inc()


def exposition() -> bytes:
    """The text the endpoint serves (for tests and ``cvault`` diagnostics)."""
    return generate_latest(REGISTRY)


@dataclass
class MetricsServer:
    """The running ``/metrics`` HTTP endpoint."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve_metrics(listen: str) -> MetricsServer:
    """Serve :data:`REGISTRY` over HTTP at ``host:port`` (port 0 picks one).

    Raises: ConfigError: not ``host:port``, or the address cannot be bound.
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"[metrics] listen must be host:port, not {listen!r:.80}")
    try:
        server, thread = start_http_server(int(port), host.strip("[]"), registry=REGISTRY)
    except OSError as exc:
        raise ConfigError(f"[metrics] cannot listen on {listen}: {exc.strerror}") from None
    return MetricsServer(server, thread)


__all__ = [
    "REGISTRY",
    "CacheCounter",
    "MetricsServer",
    "audit_append_timer",
    "code_label",
    "count_denial",
    "count_limit_refusal",
    "exposition",
    "observe_key_server",
    "observe_rpc",
    "serve_metrics",
    "timed_audit_append",
]
