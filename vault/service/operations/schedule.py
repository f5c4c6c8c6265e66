"""The rotation schedule: which tenant and field keys are older than their period."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from vault.keys import FieldKeyInfo
from vault.storage import Database, keys_repo


@dataclass(frozen=True, slots=True)
class Due:
    """What a rotation schedule says is due now."""

    tenant_keys: tuple[tuple[str, str], ...]  # (tenant, class) whose newest key is too old
    field_keys: tuple[str, ...]  # classes (and "audit") whose newest version is too old


def due_rotations(
    db: Database,
    field_keys: Mapping[str, FieldKeyInfo],
    *,
    field_key_days: float,
    tenant_key_days: float,
    now: datetime,
) -> Due:
    """Levels whose newest key is older than their period (0: never due)."""
    tenants: list[tuple[str, str]] = []
    if tenant_key_days > 0:
        with db.begin(write=False) as conn:
            newest = keys_repo.newest_tenant_keys(conn)
        limit = now.timestamp() - tenant_key_days * 86_400
        tenants = [k for k, made in sorted(newest.items()) if made.timestamp() <= limit]
    fields: list[str] = []
    if field_key_days > 0:
        limit = now.timestamp() - field_key_days * 86_400
        for c, info in sorted(field_keys.items()):
            made = info.created.get(info.latest_version)
            if made is not None and made <= limit:
                fields.append(c)
    return Due(tuple(tenants), tuple(fields))
