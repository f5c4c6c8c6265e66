"""Use cases (the recipe layer), split by domain and built together by :class:`Services`.

- :mod:`~vault.service.records`: create, read, update, erase and find records;
- :mod:`~vault.service.consent`, :mod:`~vault.service.export`,
  :mod:`~vault.service.audit_queries`: consent, data-subject export, access history;
- :mod:`~vault.service.tokens`, :mod:`~vault.service.grants`, :mod:`~vault.service.text`:
  tokens for AI pipelines, reveal grants, free text;
- :mod:`~vault.service.operations`: the operator's key and retention operations;
- underneath: one data-key path (``_datakeys``), one reveal commit (``_reveal``), the shared
  :class:`~vault.service._core.Core`, and the request validators (``validators``).
"""

from vault.service._core import DEGRADED, Core
from vault.service._keyring import Keyring, TenantKey
from vault.service._sync import EVICT_WITHIN_SECONDS, KeySync
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
from vault.service.services import Services

__all__ = [
    "DEGRADED",
    "EVICT_WITHIN_SECONDS",
    "Access",
    "Caller",
    "ConsentView",
    "Core",
    "ErasureReceipt",
    "Export",
    "FieldOutput",
    "KeySync",
    "Keyring",
    "Output",
    "RecordInput",
    "RecordView",
    "RecordsService",
    "Services",
    "StoredRecord",
    "TenantKey",
]
