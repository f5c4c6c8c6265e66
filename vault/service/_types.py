"""Domain values the records service takes and returns (no protobuf here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from vault.policy import Output as Output
from vault.service._sync import EVICT_WITHIN_SECONDS


@dataclass(frozen=True, slots=True)
class RecordInput:
    fields: Mapping[str, str] = field(repr=False)
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """What a create or update returns: id, version and a token per stored field, and (update)
    the data keys destroyed with the values it cleared or replaced."""

    record_id: str
    version: int
    tokens: Mapping[str, str]
    destroyed_data_key_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FieldOutput:
    output: Output
    value: str = field(repr=False, default="")
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RecordView:
    record_id: str
    version: int
    fields: Mapping[str, FieldOutput]


@dataclass(frozen=True, slots=True)
class ErasureReceipt:
    tenant: str
    record_id: str
    erased_at: datetime
    data_key_ids: tuple[str, ...]
    #: tokens of the record's values the erasure tombstoned: linked to it, and standalone or
    #: text tokens found by their value fingerprint
    tokens_erased: int = 0

    @property
    def effective_everywhere_by(self) -> datetime:
        """By when every running server has dropped the erased keys from memory (they apply
        key events within ``EVICT_WITHIN_SECONDS``, see ``vault/service/_sync.py``)."""
        return self.erased_at + timedelta(seconds=EVICT_WITHIN_SECONDS)


@dataclass(frozen=True, slots=True)
class ConsentView:
    tenant: str
    record_id: str
    version: int
    purposes: tuple[str, ...]
    source: str
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class Export:
    """A data-subject access export: JSON, or a NaCl sealed box holding it."""

    media_type: str
    document: bytes = field(repr=False)
