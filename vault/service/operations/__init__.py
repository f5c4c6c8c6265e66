"""Operator operations: key rotation (field, tenant, index keys), retire and trim, rekey,
token-pool shreds, retention purges, key status, shred reports, the rotation schedule, and the
bookkeeping of their runs (:mod:`~vault.service.operations.runs`).

Each takes what it works on: the database (field keys, status, reports, schedule, runs) or the
service layer's :class:`~vault.service._core.Core` (whatever opens or makes data and index keys,
through the one data-key path, or writes audited).
"""

from vault.service.operations import runs
from vault.service.operations.field import KeyOpRefused, RotationReport, retire, rotate_field, trim
from vault.service.operations.fingerprints import (
    FingerprintReport,
    fingerprint_all,
    fingerprint_tokens,
)
from vault.service.operations.index import IndexRotationReport, index_rows, rotate_index
from vault.service.operations.pools import PoolShred, pools_to_shred, shred_pool
from vault.service.operations.rekey import rekey
from vault.service.operations.retention import PurgeReport, purge_expired
from vault.service.operations.schedule import Due, due_rotations
from vault.service.operations.shred import ShredStatus, shred_report
from vault.service.operations.status import (
    FieldKeyStatus,
    KeyStatus,
    TenantKeyStatus,
    format_status,
    key_status,
)
from vault.service.operations.tenant import TenantRotationReport, rotate_tenant

__all__ = [
    "Due",
    "FieldKeyStatus",
    "FingerprintReport",
    "IndexRotationReport",
    "KeyOpRefused",
    "KeyStatus",
    "PoolShred",
    "PurgeReport",
    "RotationReport",
    "ShredStatus",
    "TenantKeyStatus",
    "TenantRotationReport",
    "due_rotations",
    "fingerprint_all",
    "fingerprint_tokens",
    "format_status",
    "index_rows",
    "key_status",
    "pools_to_shred",
    "purge_expired",
    "rekey",
    "retire",
    "rotate_field",
    "rotate_index",
    "rotate_tenant",
    "runs",
    "shred_pool",
    "shred_report",
    "trim",
]
