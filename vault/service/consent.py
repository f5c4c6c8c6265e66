"""Consent use cases: the purposes a customer consents to, read and replaced (versioned)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from vault.deadline import Deadline
from vault.errors import Conflict, InvalidInput
from vault.policy import Action
from vault.service._core import Core, live_record
from vault.service._types import ConsentView
from vault.service.access import Caller
from vault.service.validators import SOURCE_RE, check_record_id, check_tenant, matches
from vault.storage import access_repo


class ConsentService:
    """GetConsent and UpdateConsent. Thread-safe."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def get(
        self, caller: Caller, tenant: str, record_id: str, *, deadline: Deadline
    ) -> ConsentView:
        """The purposes the customer consents to (no customer values: purpose names only)."""
        check_tenant(tenant)
        check_record_id(record_id)
        self.core.access.authorize(
            caller, Action.RECORD_READ, tenant=tenant, record_id=record_id, deadline=deadline
        )
        with self.core.db.begin(write=False) as conn:
            live_record(conn, tenant, record_id)
            state = access_repo.get_consent(conn, tenant, record_id)
        return _view(tenant, record_id, state)

    def update(
        self,
        caller: Caller,
        tenant: str,
        record_id: str,
        purposes: Sequence[str],
        *,
        expected_version: int,
        source: str,
        deadline: Deadline,
    ) -> ConsentView:
        """Replace the consented purposes (versioned like records; audited).

        Raises:
            InvalidInput: an unknown purpose, a bad source or version.
            Conflict: the consent changed since ``expected_version``.
        """
        check_tenant(tenant)
        check_record_id(record_id)
        access = self.core.access
        policy, role = access.authorize(
            caller, Action.CONSENT_WRITE, tenant=tenant, record_id=record_id, deadline=deadline
        )
        if expected_version < 0:
            raise InvalidInput("expected_version", "must be 0 or more")
        if not matches(SOURCE_RE, source):
            raise InvalidInput("source", "must be 1-128 printable ASCII characters")
        for i, name in enumerate(purposes):
            if policy.purpose(name) is None:
                raise InvalidInput(f"purposes[{i}]", "not a purpose of the policy")
        event = access.event(
            caller,
            role.name,
            Action.CONSENT_WRITE,
            tenant=tenant,
            record_id=record_id,
            purpose="",
        )
        with self.core.audited_write([event], deadline=deadline) as conn:
            live_record(conn, tenant, record_id)
            state = access_repo.set_consent(
                conn,
                tenant,
                record_id,
                purposes,
                expected_version=expected_version,
                source=source,
                now=datetime.now(UTC),
            )
            if state is None:
                raise Conflict("consent version is not expected_version")
        return _view(tenant, record_id, state)


def _view(tenant: str, record_id: str, state: access_repo.ConsentState) -> ConsentView:
    return ConsentView(
        tenant,
        record_id,
        state.version,
        tuple(sorted(state.purposes)),
        state.source,
        state.updated_at,
    )
