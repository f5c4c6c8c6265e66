"""The one reveal commit: what must be written before a plain or masked value leaves.

Every path that lets a value leave (GetRecord, Reveal and StreamReveal, RevealText and its
stream, ExportCustomerData, reveals under a grant) ends in :func:`reveal_tx`::

    with reveal_tx(core, caller, role, action, tenant=t, record_id=r, deadline=d) as tx:
        tx.require_consent(record_id, purpose)   # consent re-checked inside the transaction,
                                                 # by a row whose MAC verifies
        tx.charge(n_plain)                       # the role's limits, shared by every replica
        tx.append(events)                        # the audit rows
    # committed: only now may the values be returned

A refusal inside the transaction (consent withdrawn meanwhile, a limit reached, a grant used up)
rolls everything back and is audited as a denial; an audit or database failure rolls back and
surfaces as UNAVAILABLE: nothing is revealed unrecorded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

from vault.audit import AuditEntry, AuditEvent
from vault.deadline import Deadline
from vault.errors import ConsentRequired, PermissionDenied, ResourceExhausted
from vault.policy import Action, Purpose, Role
from vault.service.access import LIMIT_ACTION, Caller

if TYPE_CHECKING:
    from vault.service._core import Core


@dataclass
class RevealTx:
    """The open reveal transaction (see the module docstring)."""

    core: Core
    conn: Connection
    caller: Caller
    role: Role
    deadline: Deadline
    #: the classes a refusal's audit row names (set by the caller once it knows them)
    classes: Sequence[str] = ()
    entries: list[AuditEntry] = field(default_factory=list)
    _consent: dict[str, bool] = field(default_factory=dict)

    def consented(self, tenant: str, record_id: str, purpose: Purpose) -> bool:
        """Whether the customer consents to ``purpose`` now (True when it needs no consent), by
        a consent row whose MAC verifies: a forged or edited one counts as none."""
        if record_id not in self._consent:
            self._consent[record_id] = self.core.access.has_consent(
                self.conn, tenant, record_id, purpose, deadline=self.deadline
            )
        return self._consent[record_id]

    def require_consent(self, tenant: str, record_id: str, purpose: Purpose | None) -> None:
        """Raises ConsentRequired (audited by :func:`reveal_tx`) without consent."""
        if purpose is not None and not self.consented(tenant, record_id, purpose):
            raise ConsentRequired(f"no consent for purpose {purpose.name}")

    def charge(self, plain_values: int, masked: int = 0, *, also: str = "") -> None:
        """Count plain and masked values against the role's limits (ResourceExhausted past
        them), for the caller and, under a grant, ``also`` for the grantor: a grant spends its
        grantor's budget too, so more grantees do not add more allowance."""
        access = self.core.access
        for principal in dict.fromkeys(p for p in (self.caller.principal.name, also) if p):
            access.charge(self.conn, principal, self.role, plain_values, masked)

    def append(self, events: Sequence[AuditEvent]) -> None:
        """The audit rows of what leaves, in this transaction."""
        if events:
            self.entries += self.core.audit.append(self.conn, events, deadline=self.deadline)


@contextmanager
def reveal_tx(
    core: Core,
    caller: Caller,
    role: Role,
    action: Action,
    *,
    tenant: str,
    record_id: str | None = None,
    deadline: Deadline,
) -> Iterator[RevealTx]:
    """One write transaction for consent, limit and audit rows; refusals audited."""
    core.audit.prepare(deadline=deadline)
    tx: RevealTx | None = None
    try:
        with core.db.begin() as conn:
            tx = RevealTx(core, conn, caller, role, deadline)
            yield tx
    except PermissionDenied as exc:
        raise core.access.deny(
            caller, role.name, action, exc, tenant=tenant, deadline=deadline
        ) from None
    except ConsentRequired as exc:
        raise _denied(core, tx, action, exc, tenant, record_id) from None
    except ResourceExhausted as exc:
        raise _denied(core, tx, LIMIT_ACTION, exc, tenant, record_id) from None
    assert tx is not None
    core.audit.after_commit(tx.entries)


def _denied(
    core: Core,
    tx: RevealTx | None,
    action: Action | str,
    exc: ConsentRequired | ResourceExhausted,
    tenant: str,
    record_id: str | None,
) -> Exception:
    assert tx is not None
    return core.access.deny(
        tx.caller,
        tx.role.name,
        action,
        exc,
        tenant=tenant,
        record_id=record_id,
        field_classes=sorted(tx.classes),
        deadline=tx.deadline,
    )
