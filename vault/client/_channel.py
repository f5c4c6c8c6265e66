"""The gRPC side of the SDK: opening a channel (plaintext or mTLS) and mapping a failed call's
status to a :mod:`vault.errors` class."""

from __future__ import annotations

from pathlib import Path

import grpc

from vault import errors
from vault.api import ERROR_OF_STATUS, REASONS

_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
]


def _open_channel(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    if credentials:
        return grpc.secure_channel(address, credentials, options=_OPTIONS)
    return grpc.insecure_channel(address, options=_OPTIONS)


def _mtls_credentials(ca: str | Path, cert: str | Path, key: str | Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes(),
        private_key=Path(key).read_bytes(),
        certificate_chain=Path(cert).read_bytes(),
    )


def _error(exc: grpc.RpcError) -> errors.VaultServiceError:
    """The :mod:`vault.errors` exception for a failed call: by the reason that prefixes the
    status details (``reason: message``), else by the status code."""
    code = exc.code()
    details = exc.details() or ""
    reason, _, message = details.partition(": ")
    cls = REASONS.get(reason) or ERROR_OF_STATUS.get(code) or errors.VaultServiceError
    if cls is errors.InvalidInput:
        field_name, _, problem = message.partition(": ")
        return errors.InvalidInput(field_name, problem)
    if cls is errors.DecryptionFailed:
        return errors.DecryptionFailed()
    err = cls(message or details)
    err.reason = reason or err.reason
    return err
