"""Wiring: settings -> database, key server client, key manager, schema, services, server."""

from __future__ import annotations

from dataclasses import dataclass

from vault.api import RunningServer, start_server
from vault.config import Settings
from vault.errors import ConfigError
from vault.keys import AppRoleAuth, KeyManager, KeyServerAuth, TokenAuth, TransitKeyWrapper
from vault.schema import RecordSchema, load_schema
from vault.service import RecordsService
from vault.storage import Database, current_revision, head_revision


def make_auth(settings: Settings) -> KeyServerAuth:
    bao = settings.openbao
    if bao.auth == "approle":
        return AppRoleAuth(bao.role_id, bao.secret_id)
    return TokenAuth(bao.token)


def make_wrapper(settings: Settings) -> TransitKeyWrapper:
    bao = settings.openbao
    return TransitKeyWrapper(
        bao.url,
        make_auth(settings),
        key_prefix=bao.key_prefix,
        mount=bao.mount,
        timeout=bao.timeout_seconds,
        verify=bao.ca_cert or True,
    )


@dataclass
class App:
    settings: Settings
    db: Database
    keys: KeyManager
    schema: RecordSchema
    records: RecordsService

    def check_ready(self) -> None:
        """Refuse to start a server that cannot serve (STYLE 6): the database must answer and
        be at the newest migration, and the key server must answer.

        Raises:
            ConfigError: with what is wrong and how to fix it.
        """
        if not self.db.ping():
            raise ConfigError("database unreachable: check database_url")
        current, head = current_revision(self.settings.database_url), head_revision()
        if current != head:
            raise ConfigError(
                f"database schema is at {current or 'nothing'}, not {head}: run `cvault db upgrade`"
            )
        if not self.keys.healthy():
            raise ConfigError(f"key server unreachable or sealed at {self.settings.openbao.url}")

    def serve(self, listen: str | None = None) -> RunningServer:
        return start_server(
            self.records,
            listen or self.settings.listen,
            dev_admin_key_sha256=self.settings.dev_admin_key_sha256,
            max_workers=self.settings.max_workers,
            health_interval=self.settings.health_interval_seconds,
        )

    def close(self) -> None:
        self.db.dispose()


def build_app(settings: Settings) -> App:
    """Build every part and fail at construction on a bad schema or settings (STYLE 6)."""
    schema = load_schema(settings.schema or None)
    db = Database(settings.database_url)
    keys = KeyManager(make_wrapper(settings), settings.cache)
    return App(settings, db, keys, schema, RecordsService(db, keys, schema))
