"""Rekey: a record's values (and the values of tokens linked to it) re-encrypted under new data
keys, the old ones destroyed; for a suspected data-key exposure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from vault import crypto
from vault.audit import AuditEvent
from vault.crypto import DataKey
from vault.deadline import Deadline
from vault.errors import Conflict, Erased, NotFound
from vault.service._core import Core
from vault.service._reading import RecordReader
from vault.service._sealing import RecordSealer, seal_linked
from vault.service._updates import Change, write_change
from vault.service.validators import check_record_id, check_tenant
from vault.storage import StoredValue, repo, tokens_repo


def rekey(
    core: Core,
    tenant: str,
    record_id: str,
    *,
    events: Sequence[AuditEvent] = (),
    deadline: Deadline,
) -> list[str]:
    """Re-encrypt a record's values, and the values of tokens linked to it, under new data
    keys, then destroy the old ones (tombstoned: a restored copy of an old key row is
    refused). ``events`` (the operator's audit rows) are appended in the same transaction.
    Returns the new data-key ids.

    Raises:
        NotFound, Erased: no such live record.
        Conflict: the record changed meanwhile (run again).
    """
    check_tenant(tenant)
    check_record_id(record_id)
    with core.db.begin(write=False) as conn:
        row, stored = repo.read_record(conn, tenant, record_id)
        existing = repo.record_data_keys(conn, tenant, record_id)
        linked = tokens_repo.tokens_of_record(conn, tenant, record_id)
        erased = row is None and repo.is_erased(conn, tenant, record_id)
    if row is None:
        raise Erased("record erased") if erased else NotFound("record not found")
    reader = RecordReader(core)
    plain = reader.open(tenant, record_id, stored, deadline=deadline)
    old = reader.keys_of(tenant, record_id, existing, set(existing), deadline=deadline)
    change, new = _resealed(core, tenant, record_id, stored, plain, old, linked, deadline)
    now = datetime.now(UTC)
    with core.audited_write(list(events), deadline=deadline) as conn:
        if not repo.bump_version(conn, tenant, record_id, row.version, now):
            raise Conflict("record changed while it was re-keyed; run again")
        write_change(conn, tenant, record_id, change, [], now)
    core.data_keys.forget(change.destroyed)
    return sorted(str(d.id) for d in new.values())


def _resealed(
    core: Core,
    tenant: str,
    record_id: str,
    stored: Sequence[StoredValue],
    plain: Mapping[str, str],
    old: Mapping[str, DataKey],
    linked: Sequence[tokens_repo.LinkedToken],
    deadline: Deadline,
) -> tuple[Change, dict[str, DataKey]]:
    """Everything a rekey writes (sealed before its transaction), and the new data keys by
    class."""
    old_by_id = {str(d.id): d for d in old.values()}
    tkeys = core.keyring.current(tenant, set(old), deadline=deadline)
    sealer = RecordSealer(core)
    new, dek_rows = sealer.new_data_keys(tenant, record_id, set(old), tkeys)
    tokens = {s.field_name: s.token for s in stored}
    value_rows, index_rows, tokens = sealer.seal_values(
        tenant, record_id, plain, new, tkeys, tokens=tokens
    )
    resealed: list[tuple[tokens_repo.LinkedToken, str, bytes]] = []
    for t in linked:
        dek = old_by_id.get(t.data_key_id)
        if dek is None:
            continue  # sealed under a key this record no longer has: nothing to re-seal
        value = crypto.open_value(dek, tenant, record_id, f"token:{t.token}", t.ciphertext)
        target = new[t.field_class]
        resealed.append((t, str(target.id), seal_linked(target, tenant, record_id, t, value)))
    destroyed = tuple(sorted(old_by_id))
    return Change(dek_rows, value_rows, index_rows, resealed, destroyed, tokens), new
