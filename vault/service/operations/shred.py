"""The shred report: whether erased values can still be unwrapped from an older backup."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from vault.keys import FieldKeyInfo
from vault.storage import Database, keys_repo


@dataclass(frozen=True, slots=True)
class ShredStatus:
    """Whether copies of an erased record's data keys can still be unwrapped from a backup
    taken before its erasure: ``complete`` once, for every class of its tenant, the tenant key
    was rotated (its old versions destroyed) and then the field-key versions that existed at
    the erasure were trimmed from the key server."""

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
    """
    out: list[ShredStatus] = []
    with db.begin(write=False) as conn:
        erased = [(*e, "record") for e in keys_repo.erasures_since(conn, since)]
        erased += [(*e, "fields") for e in keys_repo.destroyed_keys_since(conn, since)]
        oldest = {t: keys_repo.oldest_tenant_keys(conn, t) for t in {e[1] for e in erased}}
    for record_id, tenant, erased_at, kind in sorted(erased, key=lambda e: e[2]):
        pending: list[str] = []
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
        out.append(ShredStatus(record_id, tenant, erased_at, tuple(pending), kind))
    return out
