"""Shred a token-pool data key: the pool's live standalone tokens re-sealed under a new pool
key, the old key destroyed (tombstoned). What makes a backup's copy of an erased value's
standalone tokens dead: erasure empties those rows in the live database, but a copy restored
from before opens with the pool key, which rotations re-wrap without changing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from vault import crypto
from vault.audit import AuditEvent
from vault.crypto import DataKey, uuid7
from vault.deadline import Deadline
from vault.errors import Conflict, NotFound
from vault.service._core import Core
from vault.service._datakeys import DataKeyRef
from vault.service._keyring import DATA
from vault.service._token_pools import PoolLimits
from vault.service._token_types import token_field
from vault.service.operations.field import KeyOpRefused
from vault.storage import Database, NewDataKey, keys_repo, repo, tokens_repo

#: how long after a pool's age limit a running server may still commit a Tokenize that chose
#: the pool just before it aged out (a call's longest deadline, with room)
SEALING_MARGIN = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class PoolShred:
    """One pool key destroyed: how many live tokens moved to which new key."""

    tenant: str
    field_class: str
    destroyed_key_id: str
    new_key_id: str | None  # None: the pool held no live token, nothing was re-sealed
    tokens_resealed: int


def shred_pool(
    core: Core,
    tenant: str,
    data_key_id: str,
    *,
    events: list[AuditEvent],
    deadline: Deadline,
    limits: PoolLimits | None = None,
    now: datetime | None = None,
) -> PoolShred:
    """Re-seal a pool's live tokens under a new pool key, then destroy the old one, in one
    audited transaction (``events``, the operator's rows, are appended to it). Tokens keep
    their strings; only their ciphertext and key change.

    Raises:
        NotFound: no such live pool key in ``tenant``.
        KeyOpRefused: a running server may still seal new tokens under the key (it is younger
            than the pools' age limit plus :data:`SEALING_MARGIN`).
        Conflict: a token of the pool changed meanwhile (run again).
    """
    now = now or datetime.now(UTC)
    max_age = timedelta(seconds=(limits or PoolLimits()).max_age)
    with core.db.begin(write=False) as conn:
        key = keys_repo.pool_key(conn, tenant, data_key_id)
        if key is None:
            raise NotFound("no such live token-pool data key in this tenant")
        names = tokens_repo.pool_tokens(conn, tenant, data_key_id)
        rows = tokens_repo.read_tokens(conn, tenant, names)
    if key.created_at + max_age + SEALING_MARGIN > now:
        raise KeyOpRefused(
            f"token-pool key {data_key_id} may still be current in a running server; it can be"
            f" destroyed from {(key.created_at + max_age + SEALING_MARGIN).isoformat()}",
            1,
        )
    live = [r for r in rows.values() if not r.value_erased]  # erased ones die with the key
    ref = DataKeyRef(data_key_id, key.pool_id, key.field_class, key.tenant_key_id, key.wrapped)
    old = core.data_keys.open(tenant, [ref], deadline=deadline, cache=False)[data_key_id]
    resealed: list[tuple[tokens_repo.LinkedToken, bytes]] = []
    new_row: list[NewDataKey] = []
    if live:
        new, row = _new_pool_key(core, tenant, key.field_class, deadline)
        new_row.append(row)
        for r in live:
            field = token_field(r.token)
            value = crypto.open_value(old, tenant, key.pool_id, field, r.ciphertext)
            sealed = crypto.seal_value(new, tenant, row.record_id, field, value)
            resealed.append(
                (tokens_repo.LinkedToken(r.token, r.field_class, data_key_id, r.ciphertext), sealed)
            )
    with core.audited_write(events, deadline=deadline) as conn:
        repo.insert_data_keys(conn, new_row, now)
        for linked, sealed in resealed:
            if not tokens_repo.reseal_token(conn, tenant, linked, new_row[0].id, sealed):
                raise Conflict("a token of the pool changed while it was re-sealed; run again")
        repo.destroy_data_keys(conn, tenant, key.pool_id, [data_key_id], now)
    core.data_keys.forget([data_key_id])
    new_id = new_row[0].id if new_row else None
    return PoolShred(tenant, key.field_class, data_key_id, new_id, len(resealed))


def pools_to_shred(db: Database, since: datetime) -> list[tuple[str, str]]:
    """(tenant, pool key id) of the live pool keys that held standalone tokens of a record
    erased at or after ``since``: those the shred report still lists."""
    with db.begin(write=False) as conn:
        tenants = {rid: t for rid, t, _ in keys_repo.erasures_since(conn, since)}
        pools = keys_repo.erased_token_keys_since(conn, since)
    return sorted({(tenants[rid], k) for rid, keys in pools.items() for k in keys})


def _new_pool_key(
    core: Core, tenant: str, field_class: str, deadline: Deadline
) -> tuple[DataKey, NewDataKey]:
    """A new pool of its own (never a server's current one) for the re-sealed tokens."""
    tkeys = core.keyring.current(tenant, {field_class}, deadline=deadline)
    return core.keyring.new_data_key(tenant, str(uuid7()), field_class, tkeys[(field_class, DATA)])
