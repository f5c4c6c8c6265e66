"""The gate in front of every use case: who is calling, what the policy lets them do, consent,
shared rate limits, and the audit rows that must commit before anything is revealed.

Order inside a call that can reveal (``GetRecord`` and, later, every reveal path)::

    role = access.authorize(caller, action, ...)        # denial: audited, then raised
    ... read ciphertexts, decide outputs with the policy, decrypt only what may leave ...
    access.audit.prepare(deadline)                       # audit key ready before the transaction
    with db.begin() as conn:
        access.check_consent(conn, ...)                  # FAILED_PRECONDITION, audited
        access.charge(conn, principal, role, n_plain)    # RESOURCE_EXHAUSTED, audited
        entries = access.audit.append(conn, events)      # fails closed: UNAVAILABLE
    access.audit.after_commit(entries)                   # JSON lines, checkpoint
    return values                                        # only now does plaintext leave
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

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
from vault.logs import current_method
from vault.metrics import code_label, count_denial, count_limit_refusal
from vault.policy import Action, Policy, PolicyHolder, Purpose, Role
from vault.service._row_macs import RowMacs
from vault.storage import access_repo

log = logging.getLogger("vault.service.access")

WINDOWS = (("minute", 60), ("day", 86_400))
#: the search counters' windows (their own rows of the same table: ``s-`` + window, <= 8 chars)
SEARCH_WINDOWS = (("s-minute", 60), ("s-day", 86_400))
#: the masked-value counters' windows (``k-`` + window)
MASKED_WINDOWS = (("k-minute", 60), ("k-day", 86_400))


def printable(peer: str) -> str:
    """A peer address fit for an audit row: printable ASCII, at most 128 characters."""
    return "".join(c for c in peer if " " < c <= "~")[:128]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling and why: built by the API layer for every request."""

    principal: Principal
    purpose: str | None = None
    request_id: str = ""
    #: the network address the call came from, as the transport saw it ("" when unknown)
    peer: str = ""

    @classmethod
    def of(
        cls, principal: Principal, purpose: str = "", request_id: str = "", peer: str = ""
    ) -> Caller:
        return cls(principal, purpose or None, request_id or uuid.uuid4().hex, printable(peer))


#: the audit action of the row that counts a peer's denials not written one by one
DENIALS_SUPPRESSED = "audit.denials_suppressed"


class DenialLimiter:
    """A per-peer bound on audited denials, so a flood of refused calls from one address
    cannot fill the audit log (it added about 940 rows a second before). Each peer host may
    have ``burst`` denials audited one by one, refilled at ``rate`` a second; past that its
    calls are still refused, but counted instead of written, and the count goes into one
    ``audit.denials_suppressed`` row with the peer's next audited denial. Thread-safe; at most
    ``max_peers`` hosts are remembered (least recently seen forgotten)."""

    def __init__(
        self,
        rate: float = 20.0,
        burst: int = 100,
        *,
        max_peers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate, self._burst, self._max = rate, float(burst), max_peers
        self._clock = clock
        self._peers: OrderedDict[str, list[float]] = OrderedDict()  # host -> [tokens, at, held]
        self._lock = threading.Lock()

    def admit(self, peer: str) -> tuple[bool, int]:
        """Whether to audit this denial, and how many were held back before it (to be
        written now, in one row, when it is audited)."""
        host = peer.rpartition(":")[0] or peer
        now = self._clock()
        with self._lock:
            state = self._peers.pop(host, None) or [self._burst, now, 0.0]
            tokens = min(self._burst, state[0] + (now - state[1]) * self._rate)
            if tokens >= 1:
                held, state[:] = int(state[2]), [tokens - 1, now, 0.0]
            else:
                held, state[:] = -1, [tokens, now, state[2] + 1]
            self._peers[host] = state
            while len(self._peers) > self._max:
                self._peers.popitem(last=False)
        return (held >= 0, max(held, 0))


class Access:
    """Policy, consent, limits and audit for the records service. Thread-safe."""

    def __init__(
        self,
        policy: PolicyHolder,
        audit: AuditLog,
        *,
        clock: Callable[[], float] = time.time,
        denials: DenialLimiter | None = None,
    ) -> None:
        self.policy = policy
        self.audit = audit
        #: seals and checks the grant and consent rows (keyed by the audit key)
        self.row_macs = RowMacs(audit)
        self._clock = clock
        self._denials = denials or DenialLimiter()

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
        at: datetime | None = None,
    ) -> AuditEvent:
        """The audit event of ``caller``'s call; ``at``: its time when several events share
        one (a batch's rows, written in one transaction), else now."""
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
            peer=caller.peer,
            time=at or datetime.now(UTC),
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
        audit failure is what the caller gets (UNAVAILABLE): nothing passes unrecorded. Past
        the peer's bound (:class:`DenialLimiter`) the row is counted, not written."""
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
        self.record_denial(event, deadline=deadline)
        return exc

    def record_denial(self, event: AuditEvent, *, deadline: Deadline) -> None:
        """Write a denial's audit row unless its peer is past its bound; with it, the count of
        those held back since the last one written."""
        audited, held = self._denials.admit(event.peer)
        _observe_denial(event, audited)
        if not audited:
            return
        events = [event]
        if held:
            summary = replace(event, action=DENIALS_SUPPRESSED, reason=f"suppressed:{held}")
            events.insert(0, summary)
        self.audit.record(events, deadline=deadline)

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
            PermissionDenied: unknown principal, action not allowed, or a tenant the principal
                may not reach (audited).
        """
        policy = self.policy.current
        try:
            return policy, policy.check_action(caller.principal, action, tenant=tenant)
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

    def has_consent(
        self, conn: Connection, tenant: str, record_id: str, purpose: Purpose, *, deadline: Deadline
    ) -> bool:
        """Whether the customer consents to ``purpose`` (True when it needs no consent), by a
        consent row the service wrote: one whose MAC does not verify (forged, edited, or from
        before the MACs) counts as no consent, and is logged (:mod:`vault.service._row_macs`).

        Raises: AuditUnavailable: no key to check the row with (fails closed).
        """
        if not purpose.consent_required:
            return True
        state = access_repo.get_consent(conn, tenant, record_id)
        return purpose.name in state.purposes and self.row_macs.consent_ok(
            state, tenant=tenant, record_id=record_id, deadline=deadline
        )

    def charge(
        self, conn: Connection, principal: str, role: Role, plain_values: int, masked: int = 0
    ) -> None:
        """Count the plaintext and masked values ``principal`` got against the role's
        per-minute and per-day limits (each kind its own), shared by every replica through
        the database.

        Raises:
            ResourceExhausted: a limit would be passed; the caller rolls back (nothing counted).
        """
        limits = role.limits
        for kind, n, windows, caps in (
            ("plaintext", plain_values, WINDOWS, (limits.plain_per_minute, limits.plain_per_day)),
            ("masked", masked, MASKED_WINDOWS, (limits.masked_per_minute, limits.masked_per_day)),
        ):
            if n > 0:
                self._count(conn, principal, kind, n, windows, caps)

    def _count(
        self,
        conn: Connection,
        principal: str,
        kind: str,
        n: int,
        windows: tuple[tuple[str, int], ...],
        caps: tuple[int | None, ...],
    ) -> None:
        now = int(self._clock())
        for (window, seconds), limit in zip(windows, caps, strict=True):
            if limit is None:
                continue
            start = now - now % seconds
            total = access_repo.add_to_counter(conn, principal, window, start, n)
            if total > limit:
                per = window.rpartition("-")[2]
                raise ResourceExhausted(f"{kind} limit per {per} reached", reason="limit_exceeded")

    def charge_search(self, conn: Connection, caller: Caller, role: Role) -> None:
        """Count one search (FindRecords call) against the role's ``searches_per_minute`` and
        ``searches_per_day``, shared by every replica through the database.

        Raises:
            ResourceExhausted: a limit would be passed; the caller rolls back (nothing counted).
        """
        caps = (role.limits.searches_per_minute, role.limits.searches_per_day)
        self._count(conn, caller.principal.name, "search", 1, SEARCH_WINDOWS, caps)


#: the action of the audit rows of a call refused by a role limit (vault.service._reveal)
LIMIT_ACTION = "limit.exceeded"


def _observe_denial(event: AuditEvent, audited: bool) -> None:
    """Count a denial or limit refusal by reason, and log one line: reason, action, gRPC
    method and role (the request id comes with every line). No principal, tenant or value.
    Past the peer's bound (not audited) the line is at DEBUG, so that a flood of refused
    calls cannot flood the log either; the metrics count every one."""
    reason = code_label(event.reason)
    limited = event.action == LIMIT_ACTION
    (count_limit_refusal if limited else count_denial)(reason)
    log.log(
        logging.INFO if audited else logging.DEBUG,
        "%s: %s (action %s, method %s, role %s)",
        "limit refusal" if limited else "denied",
        reason,
        event.action or "-",
        current_method() or "-",
        event.role or "-",
    )


__all__ = ["Access", "Caller", "ConsentRequired"]
