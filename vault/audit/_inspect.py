"""Reading the audit log without writing it: who touched a record (``query``), and one
chain verified against its checkpoints (``verify``). Used by :class:`AuditLog`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from vault.audit import _store as store
from vault.audit._chains import valid_chain
from vault.audit._checkpoint import CheckpointStore, parse_checkpoint
from vault.audit._event import AuditEntry
from vault.audit._keys import AUDIT_KEY_CLASS, KeyLookup, cache_id, key_aad
from vault.audit._mac import derive, pseudonym
from vault.audit._readback import Found, read_all
from vault.audit._restore import verify_rows
from vault.audit._verify import VerifyReport
from vault.deadline import Deadline
from vault.keys import KeyManager, WrappedRef
from vault.storage import Database

log = logging.getLogger("vault.audit")


def query_events(
    db: Database, keys: KeyManager, tenant: str, record_id: str, *, deadline: Deadline, limit: int
) -> list[AuditEntry]:
    """A record's events in every chain, newest first, found by its pseudonym under every
    audit key version (see :meth:`AuditLog.query`)."""
    if not 1 <= limit <= 10_000:
        raise ValueError("limit must be between 1 and 10000")
    with db.begin(write=False) as conn:
        key_rows = list(store.all_keys(conn).values())
    if not key_rows:
        return []
    plain = keys.unwrap(
        AUDIT_KEY_CLASS,
        [WrappedRef(cache_id(r.id), r.wrapped, key_aad(r.id, r.version)) for r in key_rows],
        deadline=deadline,
    )
    refs = sorted(
        {
            pseudonym(derive(r.id, plain[cache_id(r.id)]).pseudonym_key, tenant, record_id)
            for r in key_rows
        }
    )
    with db.begin(write=False) as conn:
        rows = store.rows_for_refs(conn, tenant, refs, limit)
    return [store.entry_of(r) for r in rows]


def verify_one(
    db: Database,
    checkpoints: CheckpointStore | None,
    lookup: KeyLookup,
    chain: str,
    legacy: Mapping[str, str] | None,
    *,
    deadline: Deadline,
) -> VerifyReport:
    """One chain's rows recomputed and compared with its head row and every checkpoint of it
    in ``checkpoints`` (see :meth:`AuditLog.verify_chain`)."""
    found = (
        Found(())
        if checkpoints is None
        else read_all(checkpoints, chain, legacy, deadline=deadline)
    )
    with db.begin(write=False) as conn:
        report = verify_rows(
            conn,
            chain,
            lambda key_id: lookup(conn, key_id),
            found,
            with_store=checkpoints is not None,
        )
    if report.ok and found.problem is not None:
        report = replace(
            report,
            ok=False,
            first_bad_seq=found.problem.seq,
            problem=found.problem.kind,
            detail=found.problem.detail,
        )
    if not report.ok:
        log.warning(
            "audit chain %s failed verification at seq %s: %s",
            chain,
            report.first_bad_seq,
            report.problem,
        )
    return report


def chain_names(
    db: Database, checkpoints: CheckpointStore | None, own: str, *, deadline: Deadline
) -> tuple[list[str], Mapping[str, str] | None]:
    """Every chain to verify, in name order: ``own``, each with rows or a head row in the
    database, and each with checkpoints (a chain whose rows were all deleted still has those);
    and the legacy single checkpoint, if any (read once for every chain)."""
    with db.begin(write=False) as conn:
        names = set(store.chains(conn))
    names.add(own)
    legacy = None
    if checkpoints is not None:
        legacy = checkpoints.legacy(deadline=deadline)
        names.update(checkpoints.chains(deadline=deadline))
        named = None if legacy is None else parse_checkpoint(legacy)
        if named is not None:
            names.add(named.chain)
    for name in sorted(n for n in names if not valid_chain(n)):
        log.warning("ignoring a checkpoint folder that is no chain name (%.40r)", name)
    return sorted(filter(valid_chain, names)), legacy
