"""The service layer built the way the server builds it, over SQLite and the in-memory key
server: the one place the unit tests of ``vault/service/`` construct services, so a change of
how services are made (split, composed) changes this module and not the tests.

A test gets a :class:`Vault` (fixture ``svc`` in conftest.py): a fresh migrated SQLite file,
a :class:`FakeKeyServer` and every service over them. Use cases are reached through the
attribute named for their domain (``svc.consent``, ``svc.exports``, ``svc.grants``, ...), the
services :class:`vault.service.Services` built.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, overload

from sqlalchemy import DateTime, bindparam, text

from tests.support import TEST_POLICY
from vault.audit import AuditLog, AuditSink, MemoryCheckpointStore
from vault.deadline import Deadline
from vault.errors import DecryptionFailed
from vault.keys import FieldKeyAdmin, FieldKeyInfo, KeyManager, UnwrapItem, WrapItem
from vault.policy import PolicyHolder
from vault.schema import load_schema
from vault.service import Access, Core, Keyring, RecordsService, Services
from vault.service.audit_queries import AuditQueries
from vault.service.consent import ConsentService
from vault.service.export import ExportService
from vault.service.grants import GrantsService
from vault.service.text import TextService
from vault.service.tokens import PoolLimits, TokensService
from vault.storage import Database, upgrade
from vault.testing import InMemoryKeyWrapper

#: a deadline no unit test reaches
DL = Deadline.after(3600)

_FAKE = "fake:v"
_TRANSIT = "vault:v"


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


class FakeKeyServer(InMemoryKeyWrapper):
    """The in-memory key wrapper with wrapped keys shaped as transit's (``vault:vN:...``), so
    the operator code that reads the field-key version from a stored key (status, rotation,
    the rotation floor) sees versions; plus the few admin operations field-key rotation needs
    (see :class:`FakeFieldKeyAdmin`) and a hook run before the next unwrap of a field class.
    """

    def __init__(self) -> None:
        super().__init__()
        #: called once, with the class, before the next unwrap of a field class (not ``audit``):
        #: the moment a reveal reaches for keys, after its checks and before its commit
        self.before_unwrap: Callable[[str], None] | None = None
        self.created: dict[str, dict[int, float]] = {}
        self.min_decryption: dict[str, int] = {}
        self.min_available: dict[str, int] = {}

    def latest(self, field_class: str) -> int:
        return max(self.created.get(field_class, {1: 0.0}))

    def rotate(self, field_class: str) -> int:
        version = super().rotate(field_class)
        self.created.setdefault(field_class, {1: time.time()})[version] = time.time()
        return version

    def wrap(
        self, field_class: str, items: Sequence[WrapItem], *, deadline: Deadline | None = None
    ) -> list[str]:
        self.created.setdefault(field_class, {1: time.time()})
        return [
            _TRANSIT + w.removeprefix(_FAKE)
            for w in super().wrap(field_class, items, deadline=deadline)
        ]

    def unwrap(
        self, field_class: str, items: Sequence[UnwrapItem], *, deadline: Deadline | None = None
    ) -> list[bytes]:
        hook = self.before_unwrap
        if hook is not None and field_class != "audit":
            self.before_unwrap = None
            hook(field_class)
        floor = max(self.min_decryption.get(field_class, 1), self.min_available.get(field_class, 1))
        converted = []
        for item in items:
            if not item.wrapped.startswith(_TRANSIT):
                raise DecryptionFailed()
            version = item.wrapped[len(_TRANSIT) :].partition(":")[0]
            if version.isdigit() and int(version) < floor:
                raise DecryptionFailed()  # retired or trimmed: the key server refuses it
            converted.append(
                UnwrapItem(_FAKE + item.wrapped.removeprefix(_TRANSIT), item.associated_data)
            )
        return super().unwrap(field_class, converted, deadline=deadline)


class FakeFieldKeyAdmin(FieldKeyAdmin):
    """The admin side of :class:`FakeKeyServer`: the methods field-key rotation, retire and
    trim call, with the key server's checks that matter to them."""

    def __init__(self, server: FakeKeyServer) -> None:  # no HTTP session: nothing to open
        self.server = server
        self.rewrapped: list[str] = []

    def close(self) -> None:
        pass

    @overload
    def info(self, name: str) -> FieldKeyInfo: ...

    @overload
    def info(self, name: str, *, missing_ok: Literal[True]) -> FieldKeyInfo | None: ...

    def info(self, name: str, *, missing_ok: bool = False) -> FieldKeyInfo | None:
        s = self.server
        created = dict(s.created.get(name, {1: time.time()}))
        low = s.min_available.get(name, 1)
        versions = tuple(v for v in sorted(created) if v >= low)
        return FieldKeyInfo(
            name=f"fake-{name}",
            latest_version=s.latest(name),
            min_decryption_version=s.min_decryption.get(name, 1),
            min_encryption_version=0,
            versions=versions,
            created={v: created[v] for v in versions},
        )

    def rotate(self, name: str) -> int:
        return self.server.rotate(name)

    def rewrap(self, name: str, ciphertexts: Sequence[str]) -> list[str]:
        self.rewrapped += ciphertexts
        plain = self.server.unwrap(name, [UnwrapItem(c) for c in ciphertexts])
        return self.server.wrap(name, [WrapItem(p) for p in plain])

    def set_min_decryption_version(self, name: str, version: int) -> None:
        self.server.min_decryption[name] = version

    def trim(self, name: str, min_available_version: int) -> None:
        self.server.min_available[name] = min_available_version


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One ``audit_events`` row as the tests compare it (the MAC chain columns left out)."""

    action: str
    outcome: str
    principal: str
    role: str
    purpose: str
    record_ref: str | None
    field_classes: tuple[str, ...]
    reason: str
    on_behalf_of: str


@dataclass
class Vault:
    """Every service of one vault "process", over one database and one key server."""

    db: Database
    key_server: FakeKeyServer
    keys: KeyManager
    audit: AuditLog
    policy: PolicyHolder
    access: Access
    services: Services
    #: builds another process over the same database and key server (fresh caches)
    _restart: Callable[[], Vault] = field(repr=False)

    # --- each domain's use cases, as the composition root built them ---------------------

    @property
    def core(self) -> Core:
        return self.services.core

    @property
    def keyring(self) -> Keyring:
        return self.services.core.keyring

    @property
    def records(self) -> RecordsService:
        return self.services.records

    @property
    def consent(self) -> ConsentService:
        return self.services.consent

    @property
    def exports(self) -> ExportService:
        return self.services.exports

    @property
    def audit_queries(self) -> AuditQueries:
        return self.services.audit_queries

    @property
    def grants(self) -> GrantsService:
        return self.services.grants

    @property
    def tokens(self) -> TokensService:
        return self.services.tokens

    @property
    def texts(self) -> TextService:
        return self.services.text

    def restart(self) -> Vault:
        """A second process on the same database and key server, with empty key caches."""
        return self._restart()

    # --- looking at what was stored ----------------------------------------------------------

    def ref(self, tenant: str, record_id: str) -> str:
        """The pseudonym audit rows carry for a record."""
        return self.audit.pseudonym(tenant, record_id, deadline=DL)

    def audit_rows(self, tenant: str, action: str | None = None) -> list[AuditRow]:
        """The tenant's audit rows in the order they were written (one chain per process)."""
        sql = (
            "SELECT action, outcome, principal, role, purpose, record_ref, field_classes,"
            " reason, on_behalf_of FROM audit_events WHERE tenant = :tenant"
        )
        params: dict[str, Any] = {"tenant": tenant}
        if action is not None:
            sql += " AND action = :action"
            params["action"] = action
        rows = self.sql(sql + " ORDER BY time, chain, seq", **params)
        return [
            AuditRow(
                r.action,
                r.outcome,
                r.principal,
                r.role,
                r.purpose,
                r.record_ref,
                tuple(c for c in r.field_classes.split(",") if c),
                r.reason,
                r.on_behalf_of,
            )
            for r in rows
        ]

    def sql(self, statement: str, **params: Any) -> list[Any]:
        """Rows of a read (or nothing, for a write), in one transaction. Datetime parameters
        are bound as the tables store them."""
        stmt = text(statement)
        dated = [k for k, v in params.items() if isinstance(v, datetime)]
        if dated:
            stmt = stmt.bindparams(*(bindparam(k, type_=DateTime()) for k in dated))
        with self.db.engine.begin() as conn:
            result = conn.execute(stmt, params)
            return list(result) if result.returns_rows else []

    def scalar(self, statement: str, **params: Any) -> Any:
        [row] = self.sql(statement, **params)
        return row[0]

    def set_time(self, table: str, column: str, when: datetime, **where: str) -> None:
        """Move a stored time (a token's or grant's expiry, a record's last write) to ``when``."""
        assert when.tzinfo is not None
        cond = " AND ".join(f"{k} = :w_{k}" for k in where)
        n = self.scalar(f"SELECT count(*) FROM {table} WHERE {cond}", **_prefixed(where))
        assert n >= 1, f"no {table} row matches"
        self.sql(
            f"UPDATE {table} SET {column} = :when WHERE {cond}",
            when=when.astimezone(UTC),
            **_prefixed(where),
        )


def _prefixed(where: Mapping[str, str]) -> dict[str, str]:
    return {f"w_{k}": v for k, v in where.items()}


class ServiceFactory:
    """Makes :class:`Vault` over fresh copies of one migrated SQLite file; closes them."""

    def __init__(self, template: Path, directory: Path) -> None:
        self._template = template
        self._directory = directory
        self._open: list[tuple[Database, AuditLog]] = []

    def build(
        self,
        *,
        policy: Path = TEST_POLICY,
        schema: Path | None = None,
        clock: Callable[[], float] | None = None,
        pool_max_values: int = 100_000,
        audit_sinks: Sequence[AuditSink] = (),
        checkpoints: MemoryCheckpointStore | None = None,
        checkpoint_every: int = 1000,
    ) -> Vault:
        path = self._directory / f"vault-{uuid.uuid4().hex[:8]}.db"
        shutil.copy(self._template, path)
        holder = PolicyHolder(policy)
        server = FakeKeyServer()

        def make() -> Vault:
            db = Database(f"sqlite:///{path}")
            keys = KeyManager(server)
            # checkpoints inline: a background thread could outlive the test and its database
            audit = AuditLog(
                db,
                keys,
                sinks=audit_sinks,
                checkpoint=MemoryCheckpointStore() if checkpoints is None else checkpoints,
                checkpoint_every=checkpoint_every,
                checkpoint_in_background=False,
            )
            self._open.append((db, audit))
            access = Access(holder, audit) if clock is None else Access(holder, audit, clock=clock)
            services = Services.build(
                db,
                keys,
                load_schema(schema),
                access,
                pools=PoolLimits(max_values=pool_max_values),
            )
            return Vault(db, server, keys, audit, holder, access, services, _restart=make)

        return make()

    def close(self) -> None:
        for db, audit in reversed(self._open):
            audit.close()
            db.dispose()
        self._open.clear()


def migrate(path: Path) -> Path:
    upgrade(f"sqlite:///{path}")
    return path


@contextmanager
def factory_in(template: Path, directory: Path) -> Iterator[ServiceFactory]:
    made = ServiceFactory(template, directory)
    try:
        yield made
    finally:
        made.close()
