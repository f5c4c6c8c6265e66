"""The gRPC side of the SDK: opening a channel (plaintext or mTLS, blocking or asyncio) with its
retry service config, and mapping a failed call's status to a :mod:`vault.errors` class."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from vault import errors
from vault.api import ERROR_DOMAIN, ERROR_OF_STATUS, REASONS
from vault.v1 import audit_pb2, records_pb2, tokens_pb2

_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
]

#: every service the SDK calls, named from the generated descriptors
SERVICES: tuple[str, ...] = tuple(
    s.full_name
    for module in (records_pb2, audit_pb2, tokens_pb2, health_pb2)
    for s in module.DESCRIPTOR.services_by_name.values()
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """gRPC's retry policy for every RPC of the vault (a ``grpc.service_config``).

    Only UNAVAILABLE is retried by default: the vault fails closed, so an UNAVAILABLE from it
    means nothing was written. A connection lost after the server committed is also
    UNAVAILABLE; the SDK makes such a retry harmless (see the README: creates carry an
    idempotency key, updates an expected version). Every attempt shares the call's deadline.
    """

    #: attempts in all, the first included (gRPC caps this at 5)
    max_attempts: int = 4
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    backoff_multiplier: float = 2.0
    retryable_codes: tuple[str, ...] = ("UNAVAILABLE",)

    def __post_init__(self) -> None:
        if not 2 <= self.max_attempts <= 5:
            raise ValueError("max_attempts must be 2..5 (gRPC caps retries at 5 attempts)")
        if not 0 < self.initial_backoff <= self.max_backoff or self.backoff_multiplier <= 0:
            raise ValueError("backoffs must be positive, initial_backoff <= max_backoff")
        unknown = set(self.retryable_codes) - set(grpc.StatusCode.__members__)
        if unknown or not self.retryable_codes or "OK" in self.retryable_codes:
            raise ValueError(f"retryable_codes: not retryable status names: {sorted(unknown)}")

    def service_config(self) -> str:
        """The JSON service config applying this policy to every method of :data:`SERVICES`."""
        policy = {
            "maxAttempts": self.max_attempts,
            "initialBackoff": f"{self.initial_backoff:.3f}s",
            "maxBackoff": f"{self.max_backoff:.3f}s",
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": list(self.retryable_codes),
        }
        names = [{"service": s} for s in SERVICES]
        return json.dumps({"methodConfig": [{"name": names, "retryPolicy": policy}]})


def _options(retry: RetryPolicy | bool) -> list[tuple[str, Any]]:
    """Channel options: message sizes, and the retry service config unless ``retry`` is False
    (gRPC's transparent retries of calls that never reached the server stay on)."""
    options = [*_OPTIONS, ("grpc.enable_retries", 1)]
    policy = RetryPolicy() if retry is True else retry
    if isinstance(policy, RetryPolicy):
        options.append(("grpc.service_config", policy.service_config()))
    return options


def _open_channel(
    address: str, credentials: grpc.ChannelCredentials | None, retry: RetryPolicy | bool = True
) -> grpc.Channel:
    if credentials:
        return grpc.secure_channel(address, credentials, options=_options(retry))
    return grpc.insecure_channel(address, options=_options(retry))


def _open_aio_channel(
    address: str, credentials: grpc.ChannelCredentials | None, retry: RetryPolicy | bool = True
) -> grpc.aio.Channel:
    if credentials:
        return grpc.aio.secure_channel(address, credentials, options=_options(retry))
    return grpc.aio.insecure_channel(address, options=_options(retry))


def _mtls_credentials(ca: str | Path, cert: str | Path, key: str | Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes(),
        private_key=Path(key).read_bytes(),
        certificate_chain=Path(cert).read_bytes(),
    )


def _tls_credentials(ca: str | Path | None) -> grpc.ChannelCredentials:
    """Server-authenticated TLS: ``ca`` the server's CA, None the system's roots."""
    return grpc.ssl_channel_credentials(Path(ca).read_bytes() if ca else None)


def _error_info(exc: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The vault's ``google.rpc.ErrorInfo`` in a failed call's status details, if any."""
    if not hasattr(exc, "trailing_metadata"):
        return None
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]  # an RpcError is a Call
    except ValueError:  # details that do not match the status: not ours
        return None
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
            return info
    return None


def _error(exc: grpc.RpcError) -> errors.VaultServiceError:
    """The :mod:`vault.errors` exception for a failed call: by the reason of the status's
    ``ErrorInfo``, else by the reason that prefixes the details text (``reason: message``, what
    older servers send), else by the status code."""
    code = exc.code()
    details = exc.details() or ""
    info = _error_info(exc)
    if info is not None:
        reason = info.reason
        message = details.removeprefix(f"{reason}: ")
    else:
        reason, _, message = details.partition(": ")
    cls = REASONS.get(reason) or ERROR_OF_STATUS.get(code) or errors.VaultServiceError
    if cls is errors.InvalidInput:
        field_name, _, problem = message.partition(": ")
        if info is not None and "field" in info.metadata:
            field_name = info.metadata["field"]
            problem = message.removeprefix(f"{field_name}: ")
        reason = info.reason if info is not None else "invalid_argument"
        return errors.InvalidInput(field_name, problem, reason=reason)
    if cls is errors.DecryptionFailed:
        return errors.DecryptionFailed()
    err = cls(message or details)
    err.reason = reason or err.reason
    return err
