"""The bookkeeping of operator runs: which run a command carries on, what it already did, and
what there is to go over (tenant classes, data keys, records)."""

from __future__ import annotations

import uuid

from vault.storage import Database, keys_repo, repo


def campaign(db: Database, scope_prefix: str) -> str:
    """The id of a command's run over its units (scopes starting with ``scope_prefix``): a run
    that was stopped is carried on (its finished units are skipped), else a new one."""
    with db.begin(write=False) as conn:
        return keys_repo.unfinished_campaign(conn, scope_prefix) or str(uuid.uuid4())


def finished_in_campaign(db: Database, scope: str, campaign: str) -> int | None:
    """The version the run ``campaign`` already rotated ``scope`` to, if it did."""
    with db.begin(write=False) as conn:
        return keys_repo.finished_in_campaign(conn, scope, campaign)


def tenant_classes(db: Database) -> list[tuple[str, str]]:
    """Every (tenant, field class) with tenant keys."""
    with db.begin(write=False) as conn:
        return keys_repo.tenant_classes(conn)


def count_data_keys(db: Database, tenant: str, field_class: str) -> int:
    """How many data keys (tenant, class) has."""
    with db.begin(write=False) as conn:
        return keys_repo.count_data_keys(conn, tenant, field_class)


def record_ids(db: Database, tenant: str) -> list[str]:
    """Every record id of ``tenant``."""
    with db.begin(write=False) as conn:
        return repo.record_ids_of_tenant(conn, tenant)
