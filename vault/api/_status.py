"""The one table from our error classes to gRPC status codes, used by server and SDK alike."""

from __future__ import annotations

import grpc

from vault import errors

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
