"""Use cases (the recipe layer): records now; tokens, text and admin as they land."""

from vault.service._keyring import Keyring, TenantKey
from vault.service._types import (
    ConsentView,
    ErasureReceipt,
    Export,
    FieldOutput,
    Output,
    RecordInput,
    RecordView,
    StoredRecord,
)
from vault.service.access import Access, Caller
from vault.service.records import RecordsService

__all__ = [
    "Access",
    "Caller",
    "ConsentView",
    "ErasureReceipt",
    "Export",
    "FieldOutput",
    "Keyring",
    "Output",
    "RecordInput",
    "RecordView",
    "RecordsService",
    "StoredRecord",
    "TenantKey",
]
