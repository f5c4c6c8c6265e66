"""The composition root of the service layer: every service, built once, over one :class:`Core`.

The server (``vault.app``), every CLI command and the tests build the layer here, so a service
is made one way only and nobody patches what it built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vault.keys import KeyManager
from vault.schema import RecordSchema
from vault.service._core import Core
from vault.service._keyring import Keyring
from vault.service.access import Access
from vault.service.audit_queries import AuditQueries
from vault.service.consent import ConsentService
from vault.service.export import ExportService
from vault.service.grants import GrantsService
from vault.service.records import RecordsService
from vault.service.text import TextService
from vault.service.tokens import PoolLimits, TokensService
from vault.storage import Database
from vault.text import ScannerSetup


@dataclass(frozen=True, slots=True)
class Services:
    """Every use case of the vault, by domain."""

    core: Core
    records: RecordsService
    consent: ConsentService
    exports: ExportService
    audit_queries: AuditQueries
    grants: GrantsService
    tokens: TokensService
    text: TextService

    @classmethod
    def build(
        cls,
        db: Database,
        keys: KeyManager,
        schema: RecordSchema,
        access: Access,
        *,
        keyring: Keyring | None = None,
        pools: PoolLimits | None = None,
        text_setup: ScannerSetup | None = None,
    ) -> Services:
        """The whole layer over these parts."""
        return cls.over(
            Core(db, keys, schema, access, keyring=keyring), pools=pools, text_setup=text_setup
        )

    @classmethod
    def over(
        cls,
        core: Core,
        *,
        pools: PoolLimits | None = None,
        text_setup: ScannerSetup | None = None,
    ) -> Services:
        """The whole layer over an existing core (its caches and keyring shared)."""
        grants = GrantsService(core)
        tokens = TokensService(core, grants, pools=pools)
        return cls(
            core=core,
            records=RecordsService(core),
            consent=ConsentService(core),
            exports=ExportService(core),
            audit_queries=AuditQueries(core),
            grants=grants,
            tokens=tokens,
            text=TextService(tokens, setup=text_setup),
        )

    def readiness(self, on_part: Callable[[str], None] = lambda part: None) -> dict[str, str]:
        """What keeps this process from serving, by part ("" when nothing): for the health
        service (:meth:`Core.readiness`)."""
        return self.core.readiness(on_part)
