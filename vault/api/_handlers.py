"""What every servicer of ``vault.v1`` shares: error mapping, request checks, the caller,
deadlines and timestamps, and the generic handlers that parse requests safely."""

from __future__ import annotations

import functools
import logging
import re
import traceback
from collections.abc import Callable
from datetime import datetime
from importlib import import_module
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from vault.api._authn import current_principal
from vault.api._ranges import check_int64_ranges
from vault.api._status import error_status
from vault.deadline import Deadline
from vault.errors import InvalidInput, VaultServiceError
from vault.logs import current_request_id, new_request_id
from vault.service import Caller, Output
from vault.v1 import records_pb2 as pb

log = logging.getLogger("vault.api")

#: the service's outputs as the wire's enum
OUTPUT = {
    Output.PLAIN: pb.OUTPUT_PLAIN,
    Output.MASKED: pb.OUTPUT_MASKED,
    Output.TOKEN: pb.OUTPUT_TOKEN,
    Output.OMIT: pb.OUTPUT_OMIT,
}

R = TypeVar("R")


def abort_with(context: grpc.ServicerContext, exc: VaultServiceError) -> NoReturn:
    """Fail the call with the error's status: code, ``reason: message`` and ErrorInfo."""
    context.abort_with_status(error_status(exc))
    raise AssertionError("unreachable")  # context.abort_with_status raises


class _Malformed:
    """Stands for a request whose bytes did not parse (e.g. a string that is not UTF-8)."""


MALFORMED = _Malformed()


def safe_deserializer(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """grpcio answers INTERNAL when a request does not parse; we want INVALID_ARGUMENT."""

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return MALFORMED

    return deserialize


def checked(request: object) -> Any:
    """The request, once it parsed and its 64-bit integers are in range.

    Raises:
        InvalidInput: bad bytes or UTF-8 (``request``), or an integer out of range (its field).
    """
    if request is MALFORMED:
        raise InvalidInput("request", "not a valid message (bad bytes or UTF-8)")
    if isinstance(request, Message):
        check_int64_ranges(request)
    return request


def handle_errors(method: Callable[..., R]) -> Callable[..., R]:
    """Map our errors to their status; anything else is a bug: INTERNAL, logged without its
    message (a library's message may quote a value), with a request id to find it by."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> R:
        try:
            return method(self, checked(request), context)
        except VaultServiceError as exc:
            if exc.retryable:
                log.warning("%s: %s", method.__name__, exc.reason)
            abort_with(context, exc)
        except Exception as exc:
            internal_error(context, method.__name__, exc)

    return wrapper


def internal_error(context: grpc.ServicerContext, name: str, exc: BaseException) -> NoReturn:
    """A bug: INTERNAL, logged with its traceback but without its message (a library's
    message may quote a value), and the call's request id (the caller's ``x-request-id``,
    else the one the server gave the call) to find the log line by."""
    request_id = current_request_id() or new_request_id()
    log.error(
        "internal error %s in %s: %s\n%s",
        request_id,
        name,
        type(exc).__name__,
        "".join(traceback.format_tb(exc.__traceback__)),
    )
    context.abort(grpc.StatusCode.INTERNAL, f"internal error (request {request_id})")
    raise AssertionError("unreachable") from None


def deadline_of(context: grpc.ServicerContext) -> Deadline:
    """The call's deadline as the service layer takes it, with its cancellation: the context
    is no longer active once the client cancelled, the deadline passed or the server stopped
    (what :meth:`Deadline.check` asks between units of work)."""
    return Deadline.from_remaining(
        context.time_remaining(), cancelled=lambda: not context.is_active()
    )


REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def caller_of(context: grpc.ServicerContext, purpose: str = "") -> Caller:
    """The authenticated principal (set by the auth interceptor), the stated purpose and a
    request id: the client's ``x-request-id`` when it is well formed, else the call's own
    (the one its log lines carry, set by :mod:`vault.api._observe`), else a new one."""
    request_id = ""
    for key, value in context.invocation_metadata():
        if key == "x-request-id" and isinstance(value, str) and REQUEST_ID_RE.fullmatch(value):
            request_id = value
    request_id = request_id or current_request_id()
    return Caller.of(current_principal(), purpose, request_id, context.peer())


def timestamp(value: datetime | None) -> Timestamp:
    """A protobuf timestamp (unset for None)."""
    ts = Timestamp()
    if value is not None:
        ts.FromDatetime(value)
    return ts


def _message_class(module: Any, descriptor: Any) -> Any:
    """The generated class of a message, also when it is defined in an imported proto."""
    if descriptor.file.name == module.DESCRIPTOR.name:
        return getattr(module, descriptor.name)
    return getattr(import_module(_module_of(descriptor.file.name)), descriptor.name)


def _module_of(proto_file: str) -> str:
    return proto_file.removesuffix(".proto").replace("/", ".") + "_pb2"


def service_handler(
    servicer: object, module: Any, service_name: str
) -> grpc.GenericRpcHandler[Any, Any]:
    """A service's handlers, like the generated ``add_*Servicer_to_server`` but with request
    parsing failures answered as INVALID_ARGUMENT instead of INTERNAL."""
    service = module.DESCRIPTOR.services_by_name[service_name]
    handlers = {}
    for m in service.methods:
        make = (
            grpc.stream_stream_rpc_method_handler
            if m.client_streaming and m.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        if m.client_streaming != m.server_streaming:
            raise NotImplementedError(f"{m.name}: only unary or bidirectional methods")
        handlers[m.name] = make(
            getattr(servicer, m.name),
            request_deserializer=safe_deserializer(_message_class(module, m.input_type).FromString),
            response_serializer=_message_class(module, m.output_type).SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
