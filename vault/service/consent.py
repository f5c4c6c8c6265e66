"""Consent use cases: the purposes a customer consents to, read and replaced (versioned).

Each consent row is stored with a MAC the service makes (:mod:`vault.service._row_macs`); a row
whose MAC does not verify (an insider's, or one from before migration 0011) is no consent, and
GetConsent shows it as such: its version, so that UpdateConsent can replace it, and no purposes.
"""

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
        """The purposes the customer consents to, as the vault honours them (no customer
        values: purpose names only). A row whose MAC does not verify shows its version and no
        purposes, source or time.

        Raises:
            AuditUnavailable: no key to check the row's MAC with.
        """
        check_tenant(tenant)
        check_record_id(record_id)
        access = self.core.access
        access.authorize(
            caller, Action.RECORD_READ, tenant=tenant, record_id=record_id, deadline=deadline
        )
        with self.core.db.begin(write=False) as conn:
            live_record(conn, tenant, record_id)
            state = access_repo.get_consent(conn, tenant, record_id)
        if not access.row_macs.consent_ok(
            state, tenant=tenant, record_id=record_id, deadline=deadline
        ):
            state = access_repo.ConsentState(state.version, frozenset(), "", None)
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
        """Replace the consented purposes (versioned like records; audited), sealed with the
        row's MAC; also a row whose MAC does not verify, at its version.

        Raises:
            InvalidInput: an unknown purpose, a bad source or version.
            Conflict: the consent changed since ``expected_version``.
            AuditUnavailable: the audit key (which keys the MAC) could not be obtained.
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
        new = access.row_macs.seal_consent(
            access_repo.ConsentState(
                expected_version + 1, frozenset(purposes), source, datetime.now(UTC)
            ),
            tenant=tenant,
            record_id=record_id,
            deadline=deadline,
        )
        with self.core.audited_write([event], deadline=deadline) as conn:
            live_record(conn, tenant, record_id)
            if not access_repo.set_consent(conn, tenant, record_id, new):
                raise Conflict("consent version is not expected_version")
        return _view(tenant, record_id, new)


def _view(tenant: str, record_id: str, state: access_repo.ConsentState) -> ConsentView:
    return ConsentView(
        tenant,
        record_id,
        state.version,
        tuple(sorted(state.purposes)),
        state.source,
        state.updated_at,
    )
