"""Log lines with the caller's request id, as text or JSON (a shared utility).

The gRPC server sets the request id of each call (:func:`request_scope`: the caller's valid
``x-request-id``, else a new one) for the call's whole length; :func:`install_request_ids`
makes every log record carry it as ``request_id`` ("" outside a call), whichever handler
formats it. :func:`configure` sets the root handler's format: ``text`` or ``json`` (one JSON
object a line, python-json-logger).

Log lines never carry a customer value: messages name fields, reason codes and ids only.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from vault.errors import ConfigError

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(request_id)s %(rpc_method)s %(message)s"

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("cvault_request_id", default="")
_method: contextvars.ContextVar[str] = contextvars.ContextVar("cvault_rpc_method", default="")
_installed = False
#: the format chosen on the command line or by CVAULT_LOG_FORMAT (wins over the settings file)
_explicit: str | None = None


def new_request_id() -> str:
    return uuid.uuid4().hex


def current_request_id() -> str:
    """The request id of the call this thread is serving ("" outside a call)."""
    return _request_id.get()


def current_method() -> str:
    """The gRPC method this thread is serving ("" outside a call)."""
    return _method.get()


Tokens = tuple[contextvars.Token[str], contextvars.Token[str]]


def set_request_id(request_id: str, method: str = "") -> Tokens:
    """Set the current request id (and gRPC method); give the result to
    :func:`reset_request_id`."""
    return _request_id.set(request_id), _method.set(method)


def reset_request_id(tokens: Tokens) -> None:
    _request_id.reset(tokens[0])
    _method.reset(tokens[1])


@contextmanager
def request_scope(request_id: str, method: str = "") -> Iterator[str]:
    """Make ``request_id`` (and ``method``) the current ones inside the block."""
    tokens = set_request_id(request_id, method)
    try:
        yield request_id
    finally:
        reset_request_id(tokens)


def install_request_ids() -> None:
    """Give every log record a ``request_id`` attribute (idempotent; chains the factory in
    place), and ``rpc_method``: the gRPC method ("" outside a call)."""
    global _installed
    if _installed:
        return
    previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = _request_id.get()
        record.rpc_method = _method.get()
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of a log format (``text`` or ``json``).

    Raises: ConfigError: another format.
    """
    if fmt == "json":
        return JsonFormatter(
            JSON_FIELDS,
            rename_fields={"levelname": "level", "name": "logger", "asctime": "time"},
        )
    if fmt == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ConfigError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r:.40}")


def configure(
    fmt: str, level: int = logging.INFO, *, explicit: bool = False, stream: TextIO | None = None
) -> None:
    """Log to ``stream`` (stderr) in format ``fmt`` at ``level``, with request ids.
    ``explicit``: chosen by the operator on the command line or environment, so that the
    settings file's ``[logging] format`` does not override it (:func:`apply_settings`)."""
    global _explicit
    install_request_ids()
    form = formatter(fmt)
    root = logging.getLogger()
    handlers = [h for h in root.handlers if isinstance(h, logging.StreamHandler)]
    if not handlers:
        handler = logging.StreamHandler(stream or sys.stderr)
        root.addHandler(handler)
        handlers = [handler]
    for h in handlers:
        h.setFormatter(form)
    root.setLevel(level)
    if explicit:
        _explicit = fmt


def apply_settings(fmt: str) -> None:
    """The settings file's ``[logging] format``, unless the operator chose one explicitly."""
    if _explicit is None and fmt != "text":
        configure(fmt, logging.getLogger().level)


__all__ = [
    "FORMATS",
    "apply_settings",
    "configure",
    "current_method",
    "current_request_id",
    "formatter",
    "install_request_ids",
    "new_request_id",
    "request_scope",
    "reset_request_id",
    "set_request_id",
]
