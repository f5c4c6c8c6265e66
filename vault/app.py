"""Wiring: settings -> database, key server client, key manager, schema, services, server."""

from __future__ import annotations

from dataclasses import dataclass

from vault.api import RunningServer, start_server
from vault.config import Settings
from vault.keys import AppRoleAuth, KeyManager, KeyServerAuth, TokenAuth, TransitKeyWrapper
from vault.schema import RecordSchema, load_schema
from vault.service import RecordsService
from vault.storage import Database


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
