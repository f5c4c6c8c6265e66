"""What :class:`VaultClient` and :class:`AsyncVaultClient` share besides the calls themselves
(``_calls``): the stubs, the caller's metadata, the default purpose and the deadlines."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc

from vault.client import _calls, _channel
from vault.errors import VaultServiceError
from vault.v1 import audit_pb2_grpc, records_pb2_grpc, tokens_pb2_grpc

#: default deadline of a unary call, and of a whole stream (which carries many batches)
DEFAULT_TIMEOUT = 30.0
DEFAULT_STREAM_TIMEOUT = 600.0


def _mapped(exc: grpc.RpcError) -> VaultServiceError:
    """``vault.client._channel._error(exc)``, looked up on its module at each failure so that a
    wrapper put there (the test suite's scan of error messages, tests/conftest.py) sees every
    one."""
    return _channel._error(exc)


class _ClientBase:
    """State and rules common to both clients. ``channel`` is a ``grpc.Channel`` or a
    ``grpc.aio.Channel``: the generated stubs work over either."""

    def __init__(
        self,
        channel: Any,
        *,
        api_key: str | None,
        purpose: str,
        timeout: float,
        stream_timeout: float,
    ) -> None:
        if timeout <= 0 or stream_timeout <= 0:
            raise ValueError("timeout and stream_timeout must be positive (seconds)")
        self._channel = channel
        self._stubs: dict[str, Any] = {
            _calls.RECORDS: records_pb2_grpc.RecordsStub(channel),
            _calls.AUDIT: audit_pb2_grpc.AuditStub(channel),
            _calls.TOKENS: tokens_pb2_grpc.TokensStub(channel),
            _calls.HEALTH: health_pb2_grpc.HealthStub(channel),
        }
        self._metadata = (("x-api-key", api_key),) if api_key else ()
        self._purpose = purpose
        self._timeout = timeout
        self._stream_timeout = stream_timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_key={'yes' if self._metadata else 'no'})"

    def _method(self, stub: str, method: str) -> Any:
        return getattr(self._stubs[stub], method)

    def _deadline(self, timeout: float | None) -> float:
        """A unary call's timeout: the one given, else the client's (every attempt of a
        retried call shares it)."""
        return timeout or self._timeout

    def _stream_deadline(self, timeout: float | None) -> float:
        """A whole stream's timeout: the one given, else the client's ``stream_timeout``."""
        return timeout or self._stream_timeout

    def _chosen_purpose(self, purpose: str | None, grant: str = "") -> str:
        """The purpose stated, else none under a grant, else this client's default."""
        return purpose if purpose is not None else ("" if grant else self._purpose)

    def _stream_purpose(self, purpose: str | None) -> str:
        """A stream of reveals: the purpose stated, else this client's default."""
        return purpose or self._purpose
