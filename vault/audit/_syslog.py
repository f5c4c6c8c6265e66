"""The syslog audit sink, and building the configured sinks (``[audit] jsonl`` and ``syslog``).

Each entry is one syslog message at severity ``info``: ``<PRI>cvault-audit: {json}`` (the
JSON object of the JSON-lines sink; no NUL terminator), sent by
``logging.handlers.SysLogHandler`` to a local socket (``/dev/log``: a path, datagram or stream)
or to ``host:port`` over UDP. The default facility is ``authpriv``, which syslog daemons keep in
files only root reads. UDP is unacknowledged: the database chain stays the record of truth.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
from collections.abc import Sequence
from typing import Final

from vault.audit._event import AuditEntry
from vault.audit._sinks import AuditSink, JsonLinesSink, entry_json
from vault.errors import ConfigError

#: the facility audit messages are sent with unless configured
DEFAULT_FACILITY: Final = "authpriv"
#: what precedes each message's JSON (the syslog tag)
IDENT: Final = "cvault-audit: "
DEFAULT_PORT: Final = 514


class _RaisingSysLogHandler(logging.handlers.SysLogHandler):
    """A :class:`SysLogHandler` whose send failures reach the caller (the audit log logs
    them), rather than a traceback on stderr."""

    def handleError(self, record: logging.LogRecord) -> None:
        raise  # called from emit's except block: re-raises the send's exception


def syslog_address(address: str) -> str | tuple[str, int]:
    """A local socket path (starting with ``/``) as is; ``host:port`` or ``[v6]:port`` (port
    default 514) as a UDP address.

    Raises:
        ConfigError: neither.
    """
    if address.startswith("/"):
        return address
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.removeprefix(":") if rest else str(DEFAULT_PORT)
    elif address.count(":") == 1:
        host, port = address.split(":")
    elif ":" not in address:
        host, port = address, str(DEFAULT_PORT)
    else:  # an IPv6 address without brackets: where does the port start?
        host, port = "", ""
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"[audit] syslog must be a socket path or host:port, not {address!r:.80}")
    return host, int(port)


class SyslogSink:
    """Sends one syslog message per audit entry (see the module docstring). Thread-safe.

    Args:
        address: ``/dev/log`` (a local socket path) or ``host:port`` (UDP).
        facility: a syslog facility name (``authpriv``, ``auth``, ``local0`` ... ``local7``).

    Raises:
        ConfigError: a bad address or facility, or a local socket that cannot be reached.
    """

    def __init__(self, address: str, facility: str = DEFAULT_FACILITY) -> None:
        codes = logging.handlers.SysLogHandler.facility_names
        if facility not in codes:
            raise ConfigError(f"[audit] syslog_facility must be one of {sorted(codes)}")
        self._name = address
        try:
            self._handler = _RaisingSysLogHandler(syslog_address(address), codes[facility])
        except OSError as exc:
            raise ConfigError(
                f"[audit] syslog {address!r:.80} cannot be reached ({exc.strerror or exc})"
            ) from None
        self._handler.ident = IDENT
        self._handler.append_nul = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SyslogSink({self._name!r})"

    def write(self, entries: Sequence[AuditEntry]) -> None:
        with self._lock:
            for entry in entries:
                record = logging.LogRecord(
                    "vault.audit.sink", logging.INFO, __file__, 0, entry_json(entry), None, None
                )
                self._handler.emit(record)

    def close(self) -> None:
        with self._lock:
            self._handler.close()


def make_sinks(
    *, jsonl: str = "", syslog: str = "", syslog_facility: str = DEFAULT_FACILITY
) -> list[AuditSink]:
    """The sinks the ``[audit]`` settings ask for: ``jsonl`` ("" none, "-" stdout, else a file
    path) and ``syslog`` ("" none, else an address for :class:`SyslogSink`).

    Raises:
        ConfigError: a bad syslog address or facility.
        OSError: the JSON-lines file cannot be opened.
    """
    sinks: list[AuditSink] = []
    if jsonl == "-":
        sinks.append(JsonLinesSink(sys.stdout))
    elif jsonl:
        sinks.append(JsonLinesSink(jsonl))
    if syslog:
        sinks.append(SyslogSink(syslog, syslog_facility))
    return sinks
