"""OpenTelemetry tracing of the gRPC server and the key-server calls (a shared utility).

Off by default: :func:`tracer` then hands out the OpenTelemetry API's no-op tracer, which costs
next to nothing. ``[tracing] enabled = true`` (:func:`configure`) installs an SDK tracer
provider of the service's own (not the process-global one, so tests can swap it) that exports
finished spans as JSON lines to a file or to stderr (``exporter = "file"`` / ``"console"``).
The OTLP exporter is not a dependency; a collector can tail the JSON-lines file, or a
deployment that installs ``opentelemetry-exporter-otlp`` can set the provider itself
(:func:`use_provider`).

Spans carry method names, operation names, status codes and reason codes: never a request or
response body, a value, a tenant name or a principal.
"""

from __future__ import annotations

import sys
import threading
from typing import IO

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from vault.errors import ConfigError

EXPORTERS = ("console", "file")
_lock = threading.Lock()
_provider: trace.TracerProvider | None = None
_files: list[IO[str]] = []


def tracer(name: str = "vault") -> trace.Tracer:
    """The service's tracer: of the configured provider, or a no-op one when tracing is off."""
    provider = _provider
    if provider is None:
        return trace.NoOpTracer()
    return provider.get_tracer(name)


def enabled() -> bool:
    return _provider is not None


def use_provider(provider: trace.TracerProvider | None) -> None:
    """Trace with ``provider`` from now on (None: off). For tests and custom exporters."""
    global _provider
    with _lock:
        _provider = provider


def _json_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


def configure(exporter: str, path: str = "", service_name: str = "cvault") -> TracerProvider:
    """Trace to JSON lines: ``exporter`` ``console`` (stderr) or ``file`` (``path``, appended).

    Raises: ConfigError: an unknown exporter, no path for ``file``, or an unwritable file.
    """
    if exporter not in EXPORTERS:
        raise ConfigError(f"[tracing] exporter must be one of {', '.join(EXPORTERS)}")
    out: IO[str]
    if exporter == "file":
        if not path:
            raise ConfigError("[tracing] exporter = 'file' needs file = <path>")
        try:
            out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by shutdown()
        except OSError as exc:
            raise ConfigError(f"[tracing] cannot open {path}: {exc.strerror}") from None
        _files.append(out)
    else:
        out = sys.stderr
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(
        BatchSpanProcessor(ConsoleSpanExporter(out=out, formatter=_json_line))
    )
    use_provider(provider)
    return provider


def shutdown() -> None:
    """Flush and stop the configured provider (spans still queued are exported)."""
    provider = _provider
    use_provider(None)
    if isinstance(provider, TracerProvider):
        provider.shutdown()
    while _files:
        _files.pop().close()


__all__ = ["EXPORTERS", "configure", "enabled", "shutdown", "tracer", "use_provider"]
