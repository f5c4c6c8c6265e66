"""The server stack as the CLI uses it, each name imported when a command first reads it.

SQLAlchemy, Alembic and the service layer take about 0.6 s to import, which ``cvault --help``, the
client commands and the file tools do without. So the command modules reach them through this
module's attributes (``_server.build_app(settings)``, ``_server.operations.rotate_field(...)``),
and an attribute imports its module the first time it is read, as ``vault.api`` does for the
SDK. For mypy each name is what it is in its own module (the imports under ``TYPE_CHECKING``).

This is also the list of what the CLI takes from the server stack: the app (the one composition
root, through :class:`~vault.cli._operations.Operator` for operator commands), the operator
operations of the service layer, and the dev server's credentials.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vault.api import RunningServer, new_api_key, server_credentials
    from vault.api.server import STOP_MARGIN
    from vault.app import App, build_app, upgrade_database, worker_settings
    from vault.cli._operations import Operator
    from vault.service import operations
    from vault.service.tokens import purge_expired_tokens
    from vault.service.validators import check_tenant

#: name -> the module that defines it
_NAMES = {
    "App": "vault.app",
    "build_app": "vault.app",
    "check_tenant": "vault.service.validators",
    "RunningServer": "vault.api",
    "STOP_MARGIN": "vault.api.server",
    "new_api_key": "vault.api",
    "server_credentials": "vault.api",
    "Operator": "vault.cli._operations",
    "purge_expired_tokens": "vault.service.tokens",
    "upgrade_database": "vault.app",
    "worker_settings": "vault.app",
}
#: name -> a module used as a whole
_MODULES = {"operations": "vault.service.operations"}

__all__ = [
    "STOP_MARGIN",
    "App",
    "Operator",
    "RunningServer",
    "build_app",
    "check_tenant",
    "new_api_key",
    "operations",
    "purge_expired_tokens",
    "server_credentials",
    "upgrade_database",
    "worker_settings",
]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return import_module(_MODULES[name])
    if name in _NAMES:
        return getattr(import_module(_NAMES[name]), name)
    raise AttributeError(name)
