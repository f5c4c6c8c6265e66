"""The gate in front of every use case: who is calling, what the policy lets them do, consent,
shared rate limits, and the audit rows that must commit before anything is revealed.

Order inside a call that can reveal (``GetRecord`` and, later, every reveal path)::

    role = access.authorize(caller, action, ...)        # denial: audited, then raised
    ... read ciphertexts, decide outputs with the policy, decrypt only what may leave ...
    access.audit.prepare(deadline)                       # audit key ready before the transaction
    with db.begin() as conn:
        access.check_consent(conn, ...)                  # FAILED_PRECONDITION, audited
        access.charge(conn, caller, role, n_plain)       # RESOURCE_EXHAUSTED, audited
        entries = access.audit.append(conn, events)      # fails closed: UNAVAILABLE
    access.audit.after_commit(entries)                   # JSON lines, checkpoint
    return values                                        # only now does plaintext leave
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from vault.audit import ALLOWED, DENIED, AuditEvent, AuditLog
from vault.deadline import Deadline
from vault.errors import (
    ConsentRequired,
    InvalidInput,
    PermissionDenied,
    ResourceExhausted,
    VaultServiceError,
)
from vault.identity import Principal
from vault.policy import Action, Policy, PolicyHolder, Purpose, Role
from vault.storage import access_repo

log = logging.getLogger("vault.service.access")

WINDOWS = (("minute", 60), ("day", 86_400))
#: the search counters' windows (their own rows of the same table: ``s-`` + window, <= 8 chars)
SEARCH_WINDOWS = (("s-minute", 60), ("s-day", 86_400))


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling and why: built by the API layer for every request."""

    principal: Principal
    purpose: str | None = None
    request_id: str = ""

    @classmethod
    def of(cls, principal: Principal, purpose: str = "", request_id: str = "") -> Caller:
        return cls(principal, purpose or None, request_id or uuid.uuid4().hex)


class Access:
    """Policy, consent, limits and audit for the records service. Thread-safe."""

    def __init__(
        self,
        policy: PolicyHolder,
        audit: AuditLog,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.audit = audit
        self._clock = clock

    # --- events ------------------------------------------------------------------------------

    def event(
        self,
        caller: Caller,
        role: str,
        action: Action | str,
        *,
        tenant: str,
        record_id: str | None = None,
        field_classes: Sequence[str] = (),
        outcome: str = ALLOWED,
        reason: str = "",
        purpose: str | None = None,
        on_behalf_of: str = "",
    ) -> AuditEvent:
        chosen = purpose if purpose is not None else caller.purpose
        return AuditEvent(
            action=str(action),
            outcome=outcome,
            principal=caller.principal.name[:256],
            role=role,
            # never store a purpose the policy does not know: it came from the client
            purpose=self._known_purpose(chosen),
            tenant=tenant,
            record_id=record_id,
            field_classes=tuple(sorted(set(field_classes))),
            reason=reason,
            request_id=caller.request_id,
            on_behalf_of=on_behalf_of[:256],
        )

    def _known_purpose(self, purpose: str | None) -> str:
        if not purpose:
            return ""
        return purpose if self.policy.current.purpose(purpose) is not None else "unknown"

    def deny(
        self,
        caller: Caller,
        role: str,
        action: Action | str,
        exc: VaultServiceError,
        *,
        tenant: str,
        record_id: str | None = None,
        field_classes: Sequence[str] = (),
        deadline: Deadline,
    ) -> VaultServiceError:
        """Audit a refusal and return the error to raise. If the denial cannot be audited, the
        audit failure is what the caller gets (UNAVAILABLE): nothing passes unrecorded."""
        event = self.event(
            caller,
            role,
            action,
            tenant=tenant,
            record_id=record_id,
            field_classes=field_classes,
            outcome=DENIED,
            reason=exc.reason,
        )
        entries = self.audit.record([event], deadline=deadline)
        self.audit.after_commit(entries)
        return exc

    def deny_consent(
        self,
        caller: Caller,
        role: str,
        action: Action | str,
        purpose: Purpose,
        *,
        tenant: str,
        record_id: str,
        field_classes: Sequence[str] = (),
        deadline: Deadline,
    ) -> VaultServiceError:
        """Audit and return the refusal of a consent-bound purpose the customer did not give."""
        return self.deny(
            caller,
            role,
            action,
            ConsentRequired(f"no consent for purpose {purpose.name}"),
            tenant=tenant,
            record_id=record_id,
            field_classes=field_classes,
            deadline=deadline,
        )

    # --- authorization -----------------------------------------------------------------------

    def authorize(
        self,
        caller: Caller,
        action: Action,
        *,
        tenant: str,
        record_id: str | None = None,
        deadline: Deadline,
    ) -> tuple[Policy, Role]:
        """The policy and role that allow ``action``; a refusal is audited and raised.

        Raises:
            PermissionDenied: unknown principal or action not allowed (audited).
        """
        policy = self.policy.current
        try:
            return policy, policy.check_action(caller.principal, action)
        except PermissionDenied as exc:
            role = self._role_name(policy, caller.principal)
            raise self.deny(
                caller, role, action, exc, tenant=tenant, record_id=record_id, deadline=deadline
            ) from None

    def role_name(self, caller: Caller) -> str:
        """The caller's role under the current policy ("" for an unknown principal)."""
        return self._role_name(self.policy.current, caller.principal)

    @staticmethod
    def _role_name(policy: Policy, principal: Principal) -> str:
        try:
            return policy.role_of(principal).name
        except PermissionDenied:
            return ""

    def check_purpose(
        self,
        policy: Policy,
        caller: Caller,
        role: Role,
        action: Action,
        *,
        required: bool,
        tenant: str,
        record_id: str | None,
        deadline: Deadline,
    ) -> Purpose | None:
        """The stated purpose, checked against the role. A missing or unknown purpose is bad
        input (audited as a denial); a purpose the role may not use is PERMISSION_DENIED."""
        try:
            return policy.check_purpose(role, caller.purpose, required=required)
        except (InvalidInput, PermissionDenied) as exc:
            raise self.deny(
                caller,
                role.name,
                action,
                exc,
                tenant=tenant,
                record_id=record_id,
                deadline=deadline,
            ) from None

    # --- consent and limits (inside the caller's write transaction) ---------------------------

    @staticmethod
    def has_consent(conn: Connection, tenant: str, record_id: str, purpose: Purpose) -> bool:
        if not purpose.consent_required:
            return True
        return purpose.name in access_repo.get_consent(conn, tenant, record_id).purposes

    def charge(self, conn: Connection, caller: Caller, role: Role, plain_values: int) -> None:
        """Count plaintext values against the role's per-minute and per-day limits, shared by
        every replica through the database.

        Raises:
            ResourceExhausted: a limit would be passed; the caller rolls back (nothing counted).
        """
        if plain_values <= 0:
            return
        now = int(self._clock())
        limits = {"minute": role.limits.plain_per_minute, "day": role.limits.plain_per_day}
        for window, seconds in WINDOWS:
            limit = limits[window]
            if limit is None:
                continue
            start = now - now % seconds
            total = access_repo.add_to_counter(
                conn, caller.principal.name, window, start, plain_values
            )
            if total > limit:
                raise ResourceExhausted(
                    f"plaintext limit per {window} reached", reason="limit_exceeded"
                )

    def charge_search(self, conn: Connection, caller: Caller, role: Role) -> None:
        """Count one search (FindRecords call) against the role's ``searches_per_minute`` and
        ``searches_per_day``, shared by every replica through the database.

        Raises:
            ResourceExhausted: a limit would be passed; the caller rolls back (nothing counted).
        """
        now = int(self._clock())
        limits = (role.limits.searches_per_minute, role.limits.searches_per_day)
        for (window, seconds), limit in zip(SEARCH_WINDOWS, limits, strict=True):
            if limit is None:
                continue
            start = now - now % seconds
            total = access_repo.add_to_counter(conn, caller.principal.name, window, start, 1)
            if total > limit:
                raise ResourceExhausted(
                    f"search limit per {window[2:]} reached", reason="limit_exceeded"
                )


__all__ = ["Access", "Caller", "ConsentRequired"]
