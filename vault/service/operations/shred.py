"""The shred report: whether erased values can still be unwrapped from an older backup."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Connection

from vault.keys import FieldKeyInfo
from vault.service._sync import EVICT_WITHIN_SECONDS
from vault.storage import Database, keys_repo, sync


@dataclass(frozen=True, slots=True)
class ShredStatus:
    """Whether copies of an erased record's data keys can still be unwrapped from a backup
    taken before its erasure: ``complete`` once, for every class of its tenant, the tenant key
    was rotated (its old versions destroyed) and then the field-key versions that existed at
    the erasure were trimmed from the key server, and every running server has dropped the
    destroyed keys from its caches (so a copy written back into the database opens nowhere)."""

    record_id: str
    tenant: str
    erased_at: datetime
    pending: tuple[str, ...]  # what is still to do, one line per class and step
    #: "record" (erased), or "fields" (a live record's values cleared or replaced, a class
    #: past its retention, or a rekey: some of its data keys destroyed)
    kind: str = "record"

    @property
    def complete(self) -> bool:
        return not self.pending


def shred_report(
    db: Database, field_keys: Mapping[str, FieldKeyInfo], since: datetime
) -> list[ShredStatus]:
    """One status per record erased at or after ``since``, and per live record (and time)
    whose cleared or replaced values had their data keys destroyed since then.

    A backup from before the erasure holds the record's data keys wrapped by a tenant-key
    version that existed then, itself wrapped by a field-key version that existed then. The
    copy is dead once no such tenant-key version is left (``rotate-tenant``) and no such
    field-key version is left on the key server (``rotate-field``, ``retire``, ``trim``).
    Classes are those of the tenant's keys (erased data keys' classes are not kept).

    An erased record whose values also had standalone tokens (Tokenize, TokenizeText) lists
    the token-pool data keys those were sealed under while each is still live.
    """
    out: list[ShredStatus] = []
    with db.begin(write=False) as conn:
        erased = [(*e, "record") for e in keys_repo.erasures_since(conn, since)]
        erased += [(*e, "fields") for e in keys_repo.destroyed_keys_since(conn, since)]
        oldest = {t: keys_repo.oldest_tenant_keys(conn, t) for t in {e[1] for e in erased}}
        pools = keys_repo.erased_token_keys_since(conn, since)
        memory = {t: _memory_line(conn, t) for t in oldest}
    for record_id, tenant, erased_at, kind in sorted(erased, key=lambda e: e[2]):
        pending: list[str] = [memory[tenant]] if memory[tenant] else []
        for c, made in sorted(oldest[tenant].items()):
            if made <= erased_at:
                pending.append(f"{c}: rotate-tenant (a tenant-key version from before is left)")
            info = field_keys.get(c)
            if info is None:
                pending.append(f"{c}: field key unknown to the key server")
                continue
            if any(info.created.get(v, 0.0) <= erased_at.timestamp() for v in info.versions):
                pending.append(
                    f"{c}: rotate-field, retire and trim (a field-key version from before is"
                    " still held)"
                )
        if kind == "record":
            pending += _pool_lines(pools.get(record_id, {}))
        out.append(ShredStatus(record_id, tenant, erased_at, tuple(pending), kind))
    return out


def _memory_line(conn: Connection, tenant: str) -> str:
    """What is left before every running server has dropped the tenant's destroyed keys from
    memory: "" once each live one (a heartbeat within ``EVICT_WITHIN_SECONDS``; one silent
    longer has cleared its caches, or is gone) has applied the tenant's newest key event."""
    last = sync.newest_seq(conn, tenant)
    now = datetime.now(UTC)
    behind = [
        r.replica
        for r in sync.replicas(conn)
        if r.applied_seq < last and (now - r.seen_at).total_seconds() < EVICT_WITHIN_SECONDS
    ]
    if not behind:
        return ""
    return (
        f"memory: {len(behind)} running server(s) have not yet dropped the destroyed keys from"
        f" their caches (each does within {EVICT_WITHIN_SECONDS:g} s): {', '.join(sorted(behind))}"
    )


def _pool_lines(live: Mapping[str, str]) -> list[str]:
    """What is left for the token-pool data keys that held standalone tokens of an erased
    record's values. The live database no longer holds those tokens' ciphertexts, but a
    backup's copy of their rows opens with the pool key, which tenant- and field-key rotations
    re-wrap without changing: the copy is dead only once the pool key is destroyed (its other
    tokens re-sealed under a new key: ``cvault keys shred-pools``), which the report sees as the
    key's tombstone."""
    return [
        f"{c}: shred-pools (token-pool data key {k} held standalone tokens of the erased"
        " values; a backup copy of them opens with it, rotations do not change it)"
        for k, c in sorted(live.items(), key=lambda kv: (kv[1], kv[0]))
    ]
