"""gRPC layer: the only place that knows protobuf (the SDK holds the other end of the wire).

Imports are lazy so that the SDK, which needs only the status table, does not load the server
stack (SQLAlchemy, Alembic, hvac) into client processes.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vault.api._authn import ApiKeyStore, Authenticator, new_api_key, server_credentials
    from vault.api._guard import CallLimits
    from vault.api._status import ERROR_DOMAIN, ERROR_OF_STATUS, REASONS, status_of
    from vault.api.records import RecordsServicer
    from vault.api.server import RunningServer, start_server

_EXPORTS = {
    "ApiKeyStore": "vault.api._authn",
    "Authenticator": "vault.api._authn",
    "new_api_key": "vault.api._authn",
    "server_credentials": "vault.api._authn",
    "CallLimits": "vault.api._guard",
    "ERROR_DOMAIN": "vault.api._status",
    "ERROR_OF_STATUS": "vault.api._status",
    "REASONS": "vault.api._status",
    "status_of": "vault.api._status",
    "RecordsServicer": "vault.api.records",
    "RunningServer": "vault.api.server",
    "start_server": "vault.api.server",
}

__all__ = [
    "ERROR_DOMAIN",
    "ERROR_OF_STATUS",
    "REASONS",
    "ApiKeyStore",
    "Authenticator",
    "CallLimits",
    "RecordsServicer",
    "RunningServer",
    "new_api_key",
    "server_credentials",
    "start_server",
    "status_of",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
