"""Data subject access: everything held about one customer, as one JSON document.

The fields (as the policy gives them to the caller's role), the consents with their history, and
the access history, built by :func:`export_document`; sealed to the requester's X25519 key when
one is given. What leaves goes through the reveal commit like any other reveal: the consent of a
consent-bound purpose is checked again inside it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import CryptoError
from nacl.public import PublicKey, SealedBox

from vault.audit import AuditEntry
from vault.deadline import Deadline
from vault.errors import Erased, InvalidInput
from vault.policy import Action, Output, Policy, Purpose, Role
from vault.schema import FieldClass
from vault.service._core import Core, live_record
from vault.service._reading import REVEALING, RecordReader, render
from vault.service._reveal import reveal_tx
from vault.service._types import Export, FieldOutput
from vault.service.access import Caller
from vault.service.validators import check_record_id, check_tenant
from vault.storage import RecordRow, StoredValue, access_repo, repo

FORMAT = "cvault-dsar-export/1"


def check_recipient(public_key: bytes) -> None:
    """An export's recipient key must be one a sealed box can be made to: 32 bytes, and not a
    low-order point (libsodium refuses those, as their shared secret is known to anyone).
    Checked by sealing nothing to it, before anything is read, counted or audited.

    Raises:
        InvalidInput: naming ``recipient_public_key``.
    """
    problem = "must be a 32-byte X25519 public key of full order"
    if len(public_key) != PublicKey.SIZE:
        raise InvalidInput("recipient_public_key", problem)
    try:
        SealedBox(PublicKey(public_key)).encrypt(b"")
    except (RuntimeError, CryptoError):
        raise InvalidInput("recipient_public_key", problem) from None


@dataclass(frozen=True, slots=True)
class _Held:
    """What the export reads of one customer, in one read transaction."""

    row: RecordRow
    stored: list[StoredValue]
    consent: access_repo.ConsentState
    history: list[access_repo.ConsentState]


class ExportService:
    """ExportCustomerData. Thread-safe."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._reader = RecordReader(core)

    def export(
        self,
        caller: Caller,
        tenant: str,
        record_id: str,
        *,
        recipient_public_key: bytes = b"",
        deadline: Deadline,
    ) -> Export:
        """Everything held about one customer as JSON; sealed to ``recipient_public_key``
        (X25519) when given.

        Raises:
            InvalidInput: a bad public key; a missing or unknown purpose.
            PermissionDenied, NotFound, Erased, ConsentRequired, ResourceExhausted,
            Unavailable: as for GetRecord.
        """
        check_tenant(tenant)
        check_record_id(record_id)
        if recipient_public_key:
            check_recipient(recipient_public_key)
        policy, role, purpose = self._authorize(caller, tenant, record_id, deadline)
        held = self._read(tenant, record_id)
        if purpose.consent_required and purpose.name not in held.consent.purposes:
            raise self.core.access.deny_consent(
                caller,
                role.name,
                Action.EXPORT,
                purpose,
                tenant=tenant,
                record_id=record_id,
                deadline=deadline,
            )
        classes = {s.field_name: FieldClass(s.field_class) for s in held.stored}
        decisions = policy.outputs(role, purpose.name, classes)
        revealed = [s for s in held.stored if decisions[s.field_name].output in REVEALING]
        plain = (
            self._reader.open(tenant, record_id, revealed, deadline=deadline) if revealed else {}
        )
        rendered = render(held.stored, decisions, plain)
        access_log = self.core.audit.query(tenant, record_id, deadline=deadline)
        document = export_document(tenant, record_id, held, rendered, access_log)
        raw = json.dumps(document, sort_keys=True).encode("utf-8")
        with reveal_tx(
            self.core,
            caller,
            role,
            Action.EXPORT,
            tenant=tenant,
            record_id=record_id,
            deadline=deadline,
        ) as tx:
            tx.classes = sorted({s.field_class for s in revealed})
            tx.require_consent(tenant, record_id, purpose)
            outputs = [decisions[s.field_name].output for s in revealed]
            tx.charge(outputs.count(Output.PLAIN), outputs.count(Output.MASKED))
            tx.append(
                [
                    self.core.access.event(
                        caller,
                        role.name,
                        Action.EXPORT,
                        tenant=tenant,
                        record_id=record_id,
                        field_classes=tx.classes,
                    )
                ]
            )
        if recipient_public_key:
            sealed = SealedBox(PublicKey(recipient_public_key)).encrypt(raw)
            return Export("application/json+nacl-sealedbox", bytes(sealed))
        return Export("application/json", raw)

    def _authorize(
        self, caller: Caller, tenant: str, record_id: str, deadline: Deadline
    ) -> tuple[Policy, Role, Purpose]:
        access = self.core.access
        policy, role = access.authorize(
            caller, Action.EXPORT, tenant=tenant, record_id=record_id, deadline=deadline
        )
        purpose = access.check_purpose(
            policy,
            caller,
            role,
            Action.EXPORT,
            required=True,
            tenant=tenant,
            record_id=record_id,
            deadline=deadline,
        )
        assert purpose is not None
        return policy, role, purpose

    def _read(self, tenant: str, record_id: str) -> _Held:
        with self.core.db.begin(write=False) as conn:
            row = live_record(conn, tenant, record_id)
            _, stored = repo.read_record(conn, tenant, record_id)
            consent = access_repo.get_consent(conn, tenant, record_id)
            history = access_repo.consent_history(conn, tenant, record_id)
        if any(s.dek_erased for s in stored):
            raise Erased("record erased")
        return _Held(row, stored, consent, history)


def export_document(
    tenant: str,
    record_id: str,
    held: _Held,
    rendered: Mapping[str, FieldOutput],
    access_log: Sequence[AuditEntry],
) -> dict[str, Any]:
    """The export's JSON document (format ``cvault-dsar-export/1``; keys sorted on output)."""
    classes = {s.field_name: s.field_class for s in held.stored}
    consent = held.consent
    return {
        "format": FORMAT,
        "tenant": tenant,
        "record_id": record_id,
        "version": held.row.version,
        "fields": {
            name: {"class": classes[name], "output": f.output.value, "value": f.value}
            for name, f in rendered.items()
        },
        "consent": {
            "version": consent.version,
            "purposes": sorted(consent.purposes),
            "source": consent.source,
            "updated_at": consent.updated_at.isoformat() if consent.updated_at else None,
            "history": [
                {
                    "version": h.version,
                    "purposes": sorted(h.purposes),
                    "source": h.source,
                    "changed_at": h.updated_at.isoformat() if h.updated_at else None,
                }
                for h in held.history
            ],
        },
        "access_history": [
            {
                "time": e.time.isoformat(),
                "principal": e.principal,
                "role": e.role,
                "action": e.action,
                "purpose": e.purpose,
                "field_classes": list(e.field_classes),
                "outcome": e.outcome,
            }
            for e in access_log
        ],
    }
