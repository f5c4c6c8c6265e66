"""The grants use cases: a role lends what it may reveal, for a while, to another principal.

A grant lets its grantee reveal, for the grantor's purpose, only tokens of the named records (or
of one conversation scope) and classes, up to ``max_uses`` calls within its lifetime, seeing
what the grantor's role would see, and only while the grantor's role may still issue it under
the current policy. Issuing is audited (one row per record named, naming the grantee as
``on_behalf_of``); each reveal under a grant uses it once, in the reveal's own transaction
(see :mod:`vault.service._token_reveal`).

A grant row counts only with a MAC the service made when it issued it (every column but the use
counters and the revocation; :mod:`vault.service._row_macs`): a row an insider inserted, copied
or edited is refused like a grant that does not exist (``grant_invalid``, audited).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy.engine import Connection

from vault.audit import AuditEvent
from vault.crypto import random_base62
from vault.deadline import Deadline
from vault.errors import InvalidInput, NotFound, PermissionDenied
from vault.policy import Action, Policy, Purpose, Role
from vault.schema import FieldClass
from vault.service._core import Core
from vault.service._token_types import expired
from vault.service.access import Caller
from vault.service.validators import (
    GRANT_RE,
    PRINCIPAL_RE,
    check_record_id,
    check_scope,
    check_tenant,
    matches,
)
from vault.storage import repo, tokens_repo

#: grants live at most a day, name at most 1,000 records and allow at most 10,000 calls and
#: 1,000,000 values
MAX_GRANT_TTL: Final = 86_400
MAX_GRANT_RECORDS: Final = 1000
MAX_GRANT_USES: Final = 10_000
MAX_GRANT_VALUES: Final = 1_000_000
#: the actions a grant lends: its grantor's role must hold the one a use needs
LENT_ACTIONS: Final = frozenset({Action.TOKEN_REVEAL, Action.TEXT_REVEAL})
#: refusal reasons of a reveal under a grant, of issuing and of revoking one
GRANT_INVALID: Final = "grant_invalid"
GRANTEE_NOT_ALLOWED: Final = "grantee_not_allowed"
NOT_THE_GRANTOR: Final = "not_the_grantor"
#: the audit action of RevokeGrant (not a policy action: revoking needs ``grant.issue``)
GRANT_REVOKE: Final = "grant.revoke"
OUTSIDE_GRANT: Final = "outside_grant"
PURPOSE_NOT_ALLOWED: Final = "purpose_not_allowed"

Grant = tokens_repo.GrantRow


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """What a grant allows: ``record_ids`` or a conversation ``scope`` (exactly one)."""

    grantee: str
    field_classes: Sequence[str]
    ttl_seconds: int
    max_uses: int
    record_ids: Sequence[str] = ()
    scope: str = ""
    #: tokens revealed at most over all uses (0: only ``max_uses`` calls bound it)
    max_values: int = 0


@dataclass(frozen=True, slots=True)
class IssuedGrant:
    grant_id: str
    expires_at: datetime


class GrantsService:
    """Issue grants, and say whether one lets its caller reveal. Thread-safe."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def issue(
        self, caller: Caller, tenant: str, request: GrantRequest, *, deadline: Deadline
    ) -> IssuedGrant:
        """A grant letting ``request.grantee`` reveal, for ``caller``'s purpose, only tokens of
        the named records (or of the conversation scope) and classes, up to ``max_uses`` calls
        (and ``max_values`` tokens, when given) within ``ttl_seconds``, seeing what ``caller``'s
        role would see. Audited (one row per record named, naming the grantee as
        ``on_behalf_of``).

        Raises:
            PermissionDenied: the role may not issue grants, use the purpose or lend a reveal
                it does not hold, or the grantee is no principal of the tenant (audited).
            InvalidInput: a bad field (named), including a purpose missing or unknown.
            NotFound: a named record does not exist in the tenant.
        """
        check_tenant(tenant)
        access = self.core.access
        policy, role = access.authorize(
            caller, Action.GRANT_ISSUE, tenant=tenant, deadline=deadline
        )
        purpose = access.check_purpose(
            policy,
            caller,
            role,
            Action.GRANT_ISSUE,
            required=True,
            tenant=tenant,
            record_id=None,
            deadline=deadline,
        )
        assert purpose is not None
        _check_request(request)
        try:
            _check_parties(policy, role, tenant, request.grantee)
        except PermissionDenied as exc:
            raise access.deny(
                caller, role.name, Action.GRANT_ISSUE, exc, tenant=tenant, deadline=deadline
            ) from None
        self.core.tenants.require(caller, role, Action.GRANT_ISSUE, tenant, deadline=deadline)
        now = datetime.now(UTC)
        grant = access.row_macs.seal_grant(
            _new_grant(caller, role, purpose, tenant, request, now), deadline=deadline
        )
        with self.core.audited_write(self._events(caller, role, grant), deadline=deadline) as conn:
            for rid in sorted(grant.record_ids):
                if repo.get_record(conn, tenant, rid) is None:
                    raise NotFound("record not found")
            tokens_repo.insert_grant(conn, grant, now)
        return IssuedGrant(grant.id, grant.expires_at)

    def revoke(self, caller: Caller, tenant: str, grant_id: str, *, deadline: Deadline) -> bool:
        """End a grant now: its next use is refused (``grant_invalid``). Only its grantor may,
        while its role may still issue grants in the tenant. Audited (``grant.revoke``, naming
        the grantee as ``on_behalf_of``). Returns False when it was revoked already.

        Raises:
            PermissionDenied: the role may not issue grants, or the caller is not the grant's
                grantor (``not_the_grantor``; also for a grant that does not exist, or whose
                MAC does not verify: it is refused anyway): audited.
            InvalidInput: ``grant`` is not a grant id.
        """
        check_tenant(tenant)
        access = self.core.access
        _, role = access.authorize(caller, Action.GRANT_ISSUE, tenant=tenant, deadline=deadline)
        if not matches(GRANT_RE, grant_id):
            raise InvalidInput("grant", "is not a grant id")
        grant = self._stored_grant(tenant, grant_id, deadline)
        if grant is None or grant.grantor != caller.principal.name:
            refused = PermissionDenied("not a grant of this caller", reason=NOT_THE_GRANTOR)
            raise access.deny(
                caller, role.name, GRANT_REVOKE, refused, tenant=tenant, deadline=deadline
            )
        event = access.event(
            caller, role.name, GRANT_REVOKE, tenant=tenant, on_behalf_of=grant.grantee
        )
        with self.core.audited_write([event], deadline=deadline) as conn:
            return tokens_repo.revoke_grant(conn, tenant, grant_id, datetime.now(UTC))

    def authority(
        self, caller: Caller, tenant: str, grant_id: str, action: Action, *, deadline: Deadline
    ) -> tuple[Policy, Role, Purpose, Grant]:
        """The policy, the granting role (whose outputs apply), the purpose and the grant, if
        ``grant_id`` is a live grant of this tenant issued to this caller, its row is as the
        service wrote it (its MAC verifies), and its grantor may still issue it under the
        current policy. Any refusal is audited.

        Raises:
            PermissionDenied: the caller has no role, or the grant is not valid for it
                (``grant_invalid``, or ``purpose_not_allowed``): audited.
            AuditUnavailable: no key to check the grant's MAC with (fails closed).
        """
        access = self.core.access
        policy = access.policy.current
        try:
            agent_role = policy.role_of(caller.principal).name
        except PermissionDenied as exc:
            raise access.deny(caller, "", action, exc, tenant=tenant, deadline=deadline) from None
        try:
            if not policy.reaches(caller.principal.name, tenant):
                raise PermissionDenied(
                    "the principal may not reach this tenant", reason="tenant_not_allowed"
                )
            grant = self._live_grant(caller, tenant, grant_id, deadline)
            grantor_role, purpose = _grantor_authority(policy, grant, action)
        except PermissionDenied as exc:
            raise access.deny(
                caller, agent_role, action, exc, tenant=tenant, deadline=deadline
            ) from None
        return policy, grantor_role, purpose, grant

    @staticmethod
    def use(conn: Connection, grant: Grant, values: int) -> None:
        """Count one use of ``grant``, revealing ``values`` tokens, in the reveal's transaction.

        Raises: PermissionDenied (``grant_invalid``) when it was used up or revoked meanwhile,
            or has fewer values left.
        """
        if not tokens_repo.use_grant(conn, grant.id, values):
            raise PermissionDenied("grant used up or revoked", reason=GRANT_INVALID)

    def _stored_grant(self, tenant: str, grant_id: str, deadline: Deadline) -> Grant | None:
        """The grant row, if the service wrote it as it is (its MAC verifies); else None."""
        with self.core.db.begin(write=False) as conn:
            grant = tokens_repo.get_grant(conn, tenant, grant_id)
        if grant is None or not self.core.access.row_macs.grant_ok(grant, deadline=deadline):
            return None
        return grant

    def _live_grant(self, caller: Caller, tenant: str, grant_id: str, deadline: Deadline) -> Grant:
        grant = None
        if matches(GRANT_RE, grant_id):
            grant = self._stored_grant(tenant, grant_id, deadline)
        if grant is None or grant.grantee != caller.principal.name:
            raise PermissionDenied("no such grant for this caller", reason=GRANT_INVALID)
        if expired(grant.expires_at, datetime.now(UTC)):
            raise PermissionDenied("grant expired", reason=GRANT_INVALID)
        if grant.revoked:
            raise PermissionDenied("grant revoked", reason=GRANT_INVALID)
        if grant.uses >= grant.max_uses:
            raise PermissionDenied("grant used up", reason=GRANT_INVALID)
        if caller.purpose and caller.purpose != grant.purpose:
            raise PermissionDenied("purpose differs from the grant's", reason=PURPOSE_NOT_ALLOWED)
        return grant

    def _events(self, caller: Caller, role: Role, grant: Grant) -> list[AuditEvent]:
        return [
            self.core.access.event(
                caller,
                role.name,
                Action.GRANT_ISSUE,
                tenant=grant.tenant,
                record_id=rid,
                field_classes=sorted(grant.field_classes),
                on_behalf_of=grant.grantee,
            )
            for rid in _record_ids_or_none(grant.record_ids)
        ]


def within(grant: Grant, row: tokens_repo.StoredToken) -> bool:
    """Whether a token lies within a grant: its class, and its record or its scope."""
    if row.field_class not in grant.field_classes:
        return False
    if grant.record_ids:
        return row.record_id is not None and row.record_id in grant.record_ids
    return bool(grant.scope) and row.scope == grant.scope


def _grantor_authority(policy: Policy, grant: Grant, action: Action) -> tuple[Role, Purpose]:
    """The grantor's role and the grant's purpose, while the policy still lets that role issue
    this grant and hold ``action``, the reveal it lends. Raises: PermissionDenied
    (``grant_invalid``)."""
    grantor_role = policy.roles.get(grant.grantor_role)
    purpose = policy.purpose(grant.purpose)
    if (
        grantor_role is None
        or purpose is None
        or policy.principals.get(grant.grantor) != grantor_role.name
        or not policy.reaches(grant.grantor, grant.tenant)
        or Action.GRANT_ISSUE not in grantor_role.actions
        or action not in grantor_role.actions
        or grant.purpose not in grantor_role.purposes
    ):
        raise PermissionDenied("the grantor may no longer issue this grant", reason=GRANT_INVALID)
    return grantor_role, purpose


def _check_request(request: GrantRequest) -> None:
    """Raises: InvalidInput naming the field of ``request`` that is wrong."""
    if not matches(PRINCIPAL_RE, request.grantee):
        raise InvalidInput("grantee", "must be a principal name: 1-256 printable ASCII, no spaces")
    if bool(request.record_ids) == bool(request.scope):
        raise InvalidInput("record_ids", "give record ids or a scope (exactly one of them)")
    if len(request.record_ids) > MAX_GRANT_RECORDS:
        raise InvalidInput("record_ids", f"at most {MAX_GRANT_RECORDS} records")
    for i, rid in enumerate(request.record_ids):
        check_record_id(rid, f"record_ids[{i}]")
    check_scope(request.scope)
    if not request.field_classes:
        raise InvalidInput("field_classes", "at least one field class is required")
    for i, c in enumerate(request.field_classes):
        try:
            FieldClass(c)
        except ValueError:
            raise InvalidInput(f"field_classes[{i}]", "unknown field class") from None
    if not 1 <= request.ttl_seconds <= MAX_GRANT_TTL:
        raise InvalidInput("ttl_seconds", f"must be 1..{MAX_GRANT_TTL}")
    if not 1 <= request.max_uses <= MAX_GRANT_USES:
        raise InvalidInput("max_uses", f"must be 1..{MAX_GRANT_USES}")
    if not 0 <= request.max_values <= MAX_GRANT_VALUES:
        raise InvalidInput("max_values", f"must be 0..{MAX_GRANT_VALUES} (0: no bound)")


def _check_parties(policy: Policy, role: Role, tenant: str, grantee: str) -> None:
    """The grantor lends only what it holds, to a principal of the policy in this tenant.

    Raises: PermissionDenied (``action_not_allowed``, ``grantee_not_allowed``).
    """
    if not LENT_ACTIONS & role.actions:
        raise PermissionDenied(
            "a grant lends token.reveal or text.reveal, which this role does not hold",
            reason="action_not_allowed",
        )
    if not policy.reaches(grantee, tenant):
        raise PermissionDenied(
            "the grantee is not a principal of the policy in this tenant",
            reason=GRANTEE_NOT_ALLOWED,
        )


def _new_grant(
    caller: Caller,
    role: Role,
    purpose: Purpose,
    tenant: str,
    request: GrantRequest,
    now: datetime,
) -> Grant:
    return tokens_repo.GrantRow(
        id=f"grt_{random_base62(128)}",
        tenant=tenant,
        grantor=caller.principal.name,
        grantor_role=role.name,
        grantee=request.grantee,
        record_ids=frozenset(request.record_ids),
        scope=request.scope,
        field_classes=frozenset(request.field_classes),
        purpose=purpose.name,
        expires_at=now + timedelta(seconds=request.ttl_seconds),
        max_uses=request.max_uses,
        uses=0,
        max_values=request.max_values,
    )


def _record_ids_or_none(ids: frozenset[str]) -> list[str | None]:
    """The ids in order, or ``[None]`` (one audit row about no particular record)."""
    out: list[str | None] = list(sorted(ids))
    return out or [None]


__all__ = [
    "GRANT_INVALID",
    "MAX_GRANT_RECORDS",
    "MAX_GRANT_TTL",
    "MAX_GRANT_USES",
    "OUTSIDE_GRANT",
    "PURPOSE_NOT_ALLOWED",
    "GrantRequest",
    "GrantsService",
    "IssuedGrant",
    "within",
]
