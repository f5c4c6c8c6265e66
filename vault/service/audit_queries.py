"""Audit queries: who saw a customer's data, when and why (served by ``api/audit.py``)."""

from __future__ import annotations

from vault.audit import AuditEntry
from vault.deadline import Deadline
from vault.errors import InvalidInput
from vault.policy import Action
from vault.service._core import Core
from vault.service.access import Caller
from vault.service.validators import check_record_id, check_tenant

MAX_ENTRIES = 1000
DEFAULT_ENTRIES = 100


class AuditQueries:
    """QueryAccess. Thread-safe."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def query_access(
        self, caller: Caller, tenant: str, record_id: str, *, limit: int = 0, deadline: Deadline
    ) -> list[AuditEntry]:
        """Who saw this customer's data, when and why (newest first). The query is audited."""
        check_tenant(tenant)
        check_record_id(record_id)
        if limit < 0 or limit > MAX_ENTRIES:
            raise InvalidInput("limit", f"must be between 0 and {MAX_ENTRIES}")
        access, audit = self.core.access, self.core.audit
        policy, role = access.authorize(
            caller, Action.AUDIT_READ, tenant=tenant, record_id=record_id, deadline=deadline
        )
        access.check_purpose(
            policy,
            caller,
            role,
            Action.AUDIT_READ,
            required=False,
            tenant=tenant,
            record_id=record_id,
            deadline=deadline,
        )
        entries = audit.query(tenant, record_id, deadline=deadline, limit=limit or DEFAULT_ENTRIES)
        event = access.event(
            caller, role.name, Action.AUDIT_READ, tenant=tenant, record_id=record_id
        )
        audit.record([event], deadline=deadline)
        return entries
