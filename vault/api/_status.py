"""The one table from our error classes to gRPC status codes, used by server and SDK alike, and
the rich status a failed call carries: the ``reason: message`` text and a ``google.rpc.ErrorInfo``
detail with the reason code, for clients in any language."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from vault import errors

#: ``ErrorInfo.domain`` of every error the service raises on purpose
ERROR_DOMAIN = "cvault.v1"

# Most specific first: the first class an error is an instance of decides its status.
STATUS_OF: tuple[tuple[type[errors.VaultServiceError], grpc.StatusCode], ...] = (
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.KeyServerRefused, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.Erased, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ConsentRequired, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Conflict, grpc.StatusCode.ABORTED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DecryptionFailed, grpc.StatusCode.DATA_LOSS),
    (errors.ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Cancelled, grpc.StatusCode.CANCELLED),
)

# What the SDK raises for a status (the reason code in the message picks a subclass).
ERROR_OF_STATUS: dict[grpc.StatusCode, type[errors.VaultServiceError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidInput,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ABORTED: errors.Conflict,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DATA_LOSS: errors.DecryptionFailed,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.CANCELLED: errors.Cancelled,
}
REASONS: dict[str, type[errors.VaultServiceError]] = {
    "erased": errors.Erased,
    "consent_required": errors.ConsentRequired,
    "key_server_unavailable": errors.KeyServerUnavailable,
    "key_server_tls_error": errors.KeyServerTlsError,
    "database_unavailable": errors.DatabaseUnavailable,
    "audit_unavailable": errors.Unavailable,
    "key_server_permission_denied": errors.KeyServerPermissionDenied,
    "key_server_rejected": errors.KeyServerRejected,
}


def status_of(exc: errors.VaultServiceError) -> grpc.StatusCode:
    for cls, code in STATUS_OF:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def wire_message(exc: errors.VaultServiceError) -> str:
    """``<reason>: <message>``; messages name fields, never values."""
    return f"{exc.reason}: {exc.message}"


def error_info(exc: errors.VaultServiceError) -> error_details_pb2.ErrorInfo:
    """The ``google.rpc.ErrorInfo`` of an error: its reason code, our domain, and metadata that
    names things, never a value (``field`` for invalid input; ``retryable`` when it is)."""
    metadata: dict[str, str] = {}
    if isinstance(exc, errors.InvalidInput):
        metadata["field"] = exc.field
    if exc.retryable:
        metadata["retryable"] = "true"
    return error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN, metadata=metadata)


def error_status(exc: errors.VaultServiceError) -> grpc.Status:
    """The status a call fails with: the code of :func:`status_of`, the ``reason: message``
    text (kept for older clients) and the :func:`error_info` detail (``grpc-status-details-bin``
    trailing metadata, what ``grpc_status.rpc_status.from_call`` and other languages read)."""
    return rich_status(status_of(exc), wire_message(exc), error_info(exc))


def rich_status(code: grpc.StatusCode, text: str, info: error_details_pb2.ErrorInfo) -> grpc.Status:
    """A status for ``context.abort_with_status``: ``code``, ``text`` and ``info`` as its
    one detail (also for refusals made outside the handlers: authentication, admission)."""
    detail = any_pb2.Any()
    detail.Pack(info)
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=text, details=[detail])
    )


def refusal_status(
    code: grpc.StatusCode, reason: str, message: str, **metadata: str
) -> grpc.Status:
    """A refusal made before a handler runs (authentication, admission): ``reason: message``
    as text and an ErrorInfo with ``reason`` and ``metadata`` (names and codes, never values)."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)
    return rich_status(code, f"{reason}: {message}", info)
