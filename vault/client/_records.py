"""Results of the Records and Audit calls, and their conversion from the ``vault.v1`` messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from vault.v1 import audit_pb2 as audit_pb
from vault.v1 import records_pb2 as pb

_OUTPUT_NAMES = {
    pb.OUTPUT_PLAIN: "plain",
    pb.OUTPUT_MASKED: "masked",
    pb.OUTPUT_TOKEN: "token",
    pb.OUTPUT_OMIT: "omit",
}


@dataclass(frozen=True)
class CreatedRecord:
    record_id: str
    version: int
    tokens: Mapping[str, str]
    #: update only: the data keys destroyed with the values it cleared or replaced
    destroyed_data_key_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class FieldValue:
    output: str
    value: str = field(repr=False)
    reason: str = ""


@dataclass(frozen=True)
class Record:
    record_id: str
    version: int
    fields: Mapping[str, FieldValue]

    def values(self) -> dict[str, str]:
        """Field name -> value (plaintext or token, whatever the server gave)."""
        return {k: v.value for k, v in self.fields.items()}


@dataclass(frozen=True)
class Consent:
    tenant: str
    record_id: str
    version: int
    purposes: tuple[str, ...]
    source: str
    updated_at: datetime | None


@dataclass(frozen=True)
class AccessEvent:
    time: datetime
    principal: str
    role: str
    action: str
    purpose: str
    field_classes: tuple[str, ...]
    outcome: str
    reason: str
    request_id: str
    on_behalf_of: str = ""


@dataclass(frozen=True)
class ErasureReceipt:
    tenant: str
    record_id: str
    erased_at: datetime
    data_key_ids: tuple[str, ...]
    #: tokens of the record's values the erasure tombstoned (linked, standalone, text)
    tokens_erased: int = 0
    #: by when every running server has dropped the erased keys from memory (None from a
    #: server that does not say)
    effective_everywhere_by: datetime | None = None


def _record(r: pb.GetRecordResponse) -> Record:
    return Record(
        r.record_id,
        r.version,
        {
            k: FieldValue(_OUTPUT_NAMES.get(v.output, "unspecified"), v.value, v.reason)
            for k, v in r.fields.items()
        },
    )


def _consent(r: pb.Consent) -> Consent:
    return Consent(
        r.tenant,
        r.record_id,
        r.version,
        tuple(r.purposes),
        r.source,
        r.updated_at.ToDatetime(tzinfo=UTC) if r.HasField("updated_at") else None,
    )


def _receipt(r: pb.ErasureReceipt) -> ErasureReceipt:
    return ErasureReceipt(
        r.tenant,
        r.record_id,
        r.erased_at.ToDatetime(tzinfo=UTC),
        tuple(r.data_key_ids),
        r.tokens_erased,
        r.effective_everywhere_by.ToDatetime(tzinfo=UTC)
        if r.HasField("effective_everywhere_by")
        else None,
    )


def _access_event(e: audit_pb.AccessEvent) -> AccessEvent:
    return AccessEvent(
        e.time.ToDatetime(tzinfo=UTC),
        e.principal,
        e.role,
        e.action,
        e.purpose,
        tuple(e.field_classes),
        e.outcome,
        e.reason,
        e.request_id,
        e.on_behalf_of,
    )
