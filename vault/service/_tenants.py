"""Which tenants exist. A tenant is created by an operator (``cvault tenants create``) or by a
write of a role that holds ``tenant.create``; a write to any other unknown tenant is refused
(NOT_FOUND, ``tenant_unknown``, audited), so a caller cannot make tenants, and their keys on
the key server, by naming them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from vault.audit import AuditEvent
from vault.deadline import Deadline
from vault.errors import NotFound
from vault.policy import Action, Role
from vault.service.access import Access, Caller
from vault.storage import Database, repo

#: reason of a write refused because its tenant does not exist
TENANT_UNKNOWN = "tenant_unknown"

AuditedWrite = Callable[..., AbstractContextManager[Connection]]


class Tenants:
    """Known tenants (remembered once seen: tenants are never deleted). Thread-safe."""

    def __init__(self, db: Database, access: Access, audited_write: AuditedWrite) -> None:
        self._db = db
        self._access = access
        self._audited_write = audited_write
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def require(
        self, caller: Caller, role: Role, action: Action, tenant: str, *, deadline: Deadline
    ) -> None:
        """Return when ``tenant`` exists, creating it (audited as ``tenant.create``) when the
        role may. Raises: NotFound (``tenant_unknown``, audited)."""
        if tenant in self._known:
            return
        with self._db.begin(write=False) as conn:
            exists = repo.tenant_exists(conn, tenant)
        if not exists:
            if Action.TENANT_CREATE not in role.actions:
                refused = NotFound("tenant not found", reason=TENANT_UNKNOWN)
                raise self._access.deny(
                    caller, role.name, action, refused, tenant=tenant, deadline=deadline
                )
            event = self._access.event(caller, role.name, Action.TENANT_CREATE, tenant=tenant)
            self.create(tenant, caller.principal.name, [event], deadline=deadline)
        with self._lock:
            self._known.add(tenant)

    def all(self) -> list[tuple[str, datetime, str]]:
        """(name, created at, created by) of every tenant."""
        with self._db.begin(write=False) as conn:
            return repo.tenant_names(conn)

    def create(
        self, tenant: str, created_by: str, events: list[AuditEvent], *, deadline: Deadline
    ) -> bool:
        """Create ``tenant`` (``events`` committed with it, only if it was new); whether it
        was new."""
        batch = list(events)
        try:
            with self._audited_write(batch, deadline=deadline) as conn:
                made = repo.create_tenant(conn, tenant, created_by, datetime.now(UTC))
                if not made:
                    batch.clear()
        except IntegrityError:  # created concurrently by another process
            return False
        return made
