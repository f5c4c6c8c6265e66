"""Key administration use cases (operator commands): what exists, and what depends on what.

``key_status`` joins what the key server says of each transit field key (versions, decryption
floor) with what the database holds: every wrapped tenant, index and audit key, the field-key
version it is wrapped under (read from its ``vault:vN:`` prefix, so no key-server call per key),
and how many data keys each tenant-key version wraps. It is what an operator checks before
``retire`` / ``trim`` and after a rotation: "nothing below the newest versions".
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from vault import crypto
from vault.audit._log import key_aad as audit_key_aad
from vault.deadline import Deadline
from vault.errors import DecryptionFailed
from vault.keys import FieldKeyAdmin, FieldKeyInfo, wrapped_version
from vault.keys._manager import BOUND_PREFIX, transit_ciphertext
from vault.service._keyring import DATA, INDEX, Keyring
from vault.service._keyring import key_aad as tenant_key_aad
from vault.service.records import RecordsService
from vault.storage import Database
from vault.storage import _keys_repo as keys_repo


@dataclass(frozen=True, slots=True)
class FieldKeyStatus:
    """One transit field key and the wrapped keys that depend on it."""

    field_class: str
    key_name: str
    latest_version: int
    min_decryption_version: int
    available_versions: tuple[int, ...]
    #: field-key version -> how many tenant, index and audit keys are wrapped under it
    wrapped_by_version: Mapping[int, int]

    @property
    def oldest_in_use(self) -> int | None:
        return min(self.wrapped_by_version) if self.wrapped_by_version else None

    @property
    def below_latest(self) -> int:
        """Wrapped keys still under an older field-key version than the newest."""
        return sum(n for v, n in self.wrapped_by_version.items() if v < self.latest_version)


@dataclass(frozen=True, slots=True)
class TenantKeyStatus:
    """The tenant and index keys of one (tenant, class)."""

    tenant: str
    field_class: str
    #: tenant-key version -> data keys it wraps (a version with none is still listed)
    data_keys_by_version: Mapping[int, int]
    index_versions: tuple[int, ...]

    @property
    def current_version(self) -> int:
        return max(self.data_keys_by_version, default=0)

    @property
    def oldest_in_use(self) -> int | None:
        used = [v for v, n in self.data_keys_by_version.items() if n]
        return min(used) if used else None


@dataclass(frozen=True, slots=True)
class KeyStatus:
    field_keys: tuple[FieldKeyStatus, ...]
    tenants: tuple[TenantKeyStatus, ...]
    #: wrapped keys whose class has no field key on the key server, or whose blob is unreadable
    orphans: int = 0
    notes: tuple[str, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        return {
            "field_keys": [
                {
                    "class": f.field_class,
                    "key": f.key_name,
                    "latest_version": f.latest_version,
                    "min_decryption_version": f.min_decryption_version,
                    "available_versions": list(f.available_versions),
                    "wrapped_keys_by_version": {
                        str(v): n for v, n in sorted(f.wrapped_by_version.items())
                    },
                    "oldest_version_in_use": f.oldest_in_use,
                    "wrapped_keys_below_latest": f.below_latest,
                }
                for f in self.field_keys
            ],
            "tenants": [
                {
                    "tenant": t.tenant,
                    "class": t.field_class,
                    "tenant_key_versions": {
                        str(v): n for v, n in sorted(t.data_keys_by_version.items())
                    },
                    "current_tenant_key_version": t.current_version,
                    "oldest_tenant_key_version_in_use": t.oldest_in_use,
                    "index_key_versions": list(t.index_versions),
                }
                for t in self.tenants
            ],
            "orphans": self.orphans,
        }


def key_status(db: Database, field_keys: Mapping[str, FieldKeyInfo]) -> KeyStatus:
    """The status of every field key in ``field_keys`` (class -> key-server info) and of every
    tenant and index key in the database. Reads only."""
    with db.begin(write=False) as conn:
        rows = keys_repo.wrapped_keys(conn)
        deks = keys_repo.data_keys_per_tenant_key(conn)
    by_class: dict[str, dict[int, int]] = {c: {} for c in field_keys}
    orphans = 0
    tenants: dict[tuple[str, str], tuple[dict[int, int], set[int]]] = {}
    for r in rows:
        version = wrapped_version(r.wrapped)
        if version is None or r.field_class not in by_class:
            orphans += 1
        else:
            counts = by_class[r.field_class]
            counts[version] = counts.get(version, 0) + 1
        if r.kind == "audit":
            continue
        data, index = tenants.setdefault((r.tenant, r.field_class), ({}, set()))
        if r.kind == "data":
            data[r.version] = data.get(r.version, 0) + deks.get(r.id, 0)
        else:
            index.add(r.version)
    return KeyStatus(
        field_keys=tuple(
            FieldKeyStatus(
                field_class=c,
                key_name=info.name,
                latest_version=info.latest_version,
                min_decryption_version=info.min_decryption_version,
                available_versions=info.versions,
                wrapped_by_version=dict(sorted(by_class[c].items())),
            )
            for c, info in sorted(field_keys.items())
        ),
        tenants=tuple(
            TenantKeyStatus(t, c, dict(sorted(data.items())), tuple(sorted(index)))
            for (t, c), (data, index) in sorted(tenants.items())
        ),
        orphans=orphans,
    )


def format_status(status: KeyStatus) -> str:
    """A plain-text report for a terminal."""
    lines = ["field keys (transit):"]
    lines.append(
        f"  {'class':<14} {'latest':>6} {'min dec':>7} {'held':<12} {'wrapped keys by version':<28}"
        " oldest in use"
    )
    for f in status.field_keys:
        held = ",".join(str(v) for v in f.available_versions)
        wrapped = " ".join(f"v{v}:{n}" for v, n in f.wrapped_by_version.items()) or "-"
        oldest = "-" if f.oldest_in_use is None else f"v{f.oldest_in_use}"
        lines.append(
            f"  {f.field_class:<14} {f.latest_version:>6} {f.min_decryption_version:>7}"
            f" {held:<12} {wrapped:<28} {oldest}"
        )
    lines.append("tenant keys (data keys wrapped per tenant-key version) and index keys:")
    for t in status.tenants:
        data = " ".join(f"v{v}:{n}" for v, n in t.data_keys_by_version.items()) or "-"
        index = ",".join(f"v{v}" for v in t.index_versions) or "-"
        lines.append(f"  {t.tenant:<20} {t.field_class:<14} tenant {data:<20} index {index}")
    in_use = [f.oldest_in_use for f in status.field_keys if f.oldest_in_use is not None]
    below = sum(f.below_latest for f in status.field_keys)
    lines.append(
        f"oldest field-key version in use: {min(in_use) if in_use else '-'};"
        f" wrapped keys below their key's newest version: {below}"
    )
    if status.orphans:
        lines.append(f"WARNING: {status.orphans} wrapped keys name no known field key")
    return "\n".join(lines)


# --- rotation ----------------------------------------------------------------------------------


class KeyOpRefused(Exception):
    """An operator command that would leave data unreadable: says how many keys are in the way."""

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.count = count


@dataclass(frozen=True, slots=True)
class RotationReport:
    field_class: str
    version: int  # the field-key version everything is now wrapped under
    rotated: bool  # False: a previous run was resumed (rows were below the newest version)
    rewrapped: int
    converted: int  # of which were in the earlier associated-data format


def _binding(row: keys_repo.WrappedKeyRow) -> bytes:
    if row.kind == "audit":
        return audit_key_aad(row.id, row.version)
    return tenant_key_aad(row.tenant, row.field_class, row.kind, row.version, row.id)


def _below(db: Database, field_class: str, version: int) -> list[keys_repo.WrappedKeyRow]:
    with db.begin(write=False) as conn:
        rows = keys_repo.wrapped_keys(conn)
    return [
        r
        for r in rows
        if r.field_class == field_class
        and (v := wrapped_version(r.wrapped)) is not None
        and v < version
    ]


def rotate_field(
    db: Database,
    admin: FieldKeyAdmin,
    field_class: str,
    *,
    batch: int = 200,
    max_per_second: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    campaign: str = "",
) -> RotationReport:
    """A new field-key version, then every tenant, index and audit key of the class rewrapped
    to it by the key server (``rewrap``: their plaintext never leaves it), ``batch`` keys per
    short transaction, at most ``max_per_second``.

    Resumable and idempotent: when keys are already below the newest version (a run that was
    stopped, or a version made outside this command), no new version is made and the run
    carries on. Each row is replaced only if it still holds what was read (compare-and-set),
    so a concurrent writer or a second run cannot lose a key. ``progress(done, total)``.
    """
    if batch < 1:
        raise ValueError("batch must be positive")
    info = admin.info(field_class)
    scope = f"field:{field_class}"
    with db.begin(write=False) as conn:
        run = keys_repo.last_run(conn, scope)
    todo = _below(db, field_class, info.latest_version)
    # resume when a run is unfinished (stopped, even after its last batch) or keys are below
    rotated = not todo and (run is None or run[1] or run[0] != info.latest_version)
    version = admin.rotate(field_class) if rotated else info.latest_version
    with db.begin() as conn:
        if rotated:
            keys_repo.start_run(conn, scope, version, datetime.now(UTC), campaign)
        # From this commit on, the service stores no key wrapped under an older version (it
        # wraps again); a store that read the old floor has committed by now (share lock).
        keys_repo.raise_field_key_floor(conn, field_class, version)
    if rotated:
        todo = _below(db, field_class, version)
    done = converted = 0
    started = clock()
    # Keys the service wrapped under the old version just before the rotation can reach the
    # database after a pass began: passes repeat until one finds nothing left.
    for _pass in range(_PASSES):
        if _pass:
            todo = _below(db, field_class, version)
            if not todo:
                break
        done, converted = _rewrap_pass(
            db,
            admin,
            field_class,
            todo,
            batch,
            done,
            converted,
            progress,
            max_per_second,
            started,
            clock,
            sleep,
        )
    with db.begin() as conn:
        if keys_repo.last_run(conn, scope) == (version, False):
            keys_repo.finish_run(conn, scope, version, datetime.now(UTC))
    return RotationReport(field_class, version, rotated, done, converted)


#: passes of rotate-field over keys still below the new version (see there)
_PASSES = 5


def _rewrap_pass(
    db: Database,
    admin: FieldKeyAdmin,
    field_class: str,
    todo: list[keys_repo.WrappedKeyRow],
    batch: int,
    done: int,
    converted: int,
    progress: Callable[[int, int], None] | None,
    max_per_second: float | None,
    started: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> tuple[int, int]:
    for i in range(0, len(todo), batch):
        chunk = todo[i : i + batch]
        bound = [r for r in chunk if r.wrapped.startswith(BOUND_PREFIX)]
        legacy = [r for r in chunk if not r.wrapped.startswith(BOUND_PREFIX)]
        new: dict[str, str] = {}
        if bound:
            out = admin.rewrap(field_class, [transit_ciphertext(r.wrapped) for r in bound])
            new.update({r.id: BOUND_PREFIX + c for r, c in zip(bound, out, strict=True)})
        if legacy:
            out = admin.rebind_legacy(field_class, [(r.wrapped, _binding(r)) for r in legacy])
            new.update({r.id: c for r, c in zip(legacy, out, strict=True)})
            converted += len(legacy)
        with db.begin() as conn:
            done += keys_repo.replace_wrapped(conn, [(r, new[r.id]) for r in chunk])
        if progress is not None:
            progress(done, len(todo))
        if max_per_second:
            ahead = done / max_per_second - (clock() - started)
            if ahead > 0:
                sleep(ahead)
    return done, converted


def retire(db: Database, admin: FieldKeyAdmin, field_class: str, to: int | None = None) -> int:
    """Raise the field key's ``min_decryption_version`` to ``to`` (default: the newest version),
    so older versions can no longer decrypt anything.

    Raises:
        KeyOpRefused: keys are still wrapped under an older version (with how many).
    """
    info = admin.info(field_class)
    target = info.latest_version if to is None else to
    if not info.min_decryption_version <= target <= info.latest_version:
        raise KeyOpRefused(
            f"{field_class}: version {target} is outside"
            f" {info.min_decryption_version}..{info.latest_version}",
            0,
        )
    left = len(_below(db, field_class, target))
    if left:
        raise KeyOpRefused(
            f"{field_class}: {left} wrapped keys are below version {target}; rotate-field first",
            left,
        )
    admin.set_min_decryption_version(field_class, target)
    return target


def trim(db: Database, admin: FieldKeyAdmin, field_class: str) -> int:
    """Delete the versions below ``min_decryption_version`` from the key server, so a backup
    holding keys wrapped under them can never be unwrapped.

    Raises:
        KeyOpRefused: keys are still wrapped under an older version than the newest (with how
            many).
    """
    info = admin.info(field_class)
    target = info.min_decryption_version
    # stricter than needed (only versions below the floor go): any key not yet at the newest
    # version means a rotation is under way, and trimming mid-way is not what anyone wants
    left = len(_below(db, field_class, info.latest_version))
    if left:
        raise KeyOpRefused(
            f"{field_class}: {left} wrapped keys are below version {info.latest_version};"
            " rotate-field and retire first",
            left,
        )
    admin.trim(field_class, target)
    return target


@dataclass(frozen=True, slots=True)
class TenantRotationReport:
    tenant: str
    field_class: str
    version: int  # the tenant-key version every data key is now wrapped under
    started: bool  # False: a previous run was resumed
    rewrapped: int
    destroyed: int  # older tenant-key rows deleted


def rotate_tenant(
    db: Database,
    keyring: Keyring,
    tenant: str,
    field_class: str,
    *,
    deadline_seconds: float = 60.0,
    batch: int = 500,
    max_per_second: float | None = None,
    progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    campaign: str = "",
) -> TenantRotationReport:
    """A new tenant-key version for (tenant, class), every data key of it re-wrapped under
    the new version locally (AES-GCM: no key-server call per data key; one to unwrap each old
    version), ``batch`` per short compare-and-set transaction, then the old versions' rows
    destroyed, so that their wrapped copies in backups protect nothing that is still needed.

    Resumable and idempotent like :func:`rotate_field`: when data keys are still under an
    older version, no new version is started. Data keys written by the service meanwhile
    under an old version (it read the key list just before) are picked up by the loop, and an
    old version's row is only destroyed once nothing references it.
    """
    if batch < 1:
        raise ValueError("batch must be positive")

    def deadline() -> Deadline:
        return Deadline.after(deadline_seconds)

    current = keyring.current(tenant, [field_class], deadline=deadline())[(field_class, DATA)]

    def older() -> list[str]:
        with db.begin(write=False) as conn:
            return keys_repo.older_tenant_keys(conn, tenant, field_class, DATA, current.version)

    scope = f"tenant:{tenant}/{field_class}"
    old_ids = older()
    with db.begin(write=False) as conn:
        run = keys_repo.last_run(conn, scope)
    # resume when old versions are left (not all re-wrapped, or not yet destroyed) or the last
    # run is unfinished
    started = not old_ids and (run is None or run[1] or run[0] != current.version)
    if started:
        current = keyring.new_version(tenant, field_class, DATA, deadline=deadline())
        with db.begin() as conn:
            keys_repo.start_run(conn, scope, current.version, datetime.now(UTC), campaign)
        old_ids = older()
    done = 0
    began = clock()
    while True:
        with db.begin(write=False) as conn:
            todo = keys_repo.data_keys_under(conn, old_ids, batch)
        if not todo:
            break
        old = keyring.by_ids(tenant, {r.tenant_key_id for r in todo}, deadline=deadline())
        rewrapped: list[tuple[keys_repo.DataKeyToRewrap, str, bytes]] = []
        for r in todo:
            tk = old.get(r.tenant_key_id)
            if tk is None:
                raise DecryptionFailed()
            dek = crypto.unwrap_data_key(
                uuid.UUID(tk.id),
                tk.key,
                uuid.UUID(r.id),
                r.wrapped,
                tenant=tenant,
                record_id=r.record_id,
                field_class=field_class,
            )
            wrapped = crypto.wrap_data_key(
                uuid.UUID(current.id),
                current.key,
                dek,
                tenant=tenant,
                record_id=r.record_id,
                field_class=field_class,
            )
            rewrapped.append((r, current.id, wrapped))
        with db.begin() as conn:
            done += keys_repo.replace_data_keys(conn, rewrapped)
        if progress is not None:
            progress(done)
        if max_per_second:
            ahead = done / max_per_second - (clock() - began)
            if ahead > 0:
                sleep(ahead)
    try:
        with db.begin() as conn:
            old_ids = keys_repo.older_tenant_keys(conn, tenant, field_class, DATA, current.version)
            destroyed = keys_repo.delete_unused_tenant_keys(conn, old_ids)
    except IntegrityError:
        # a service write referenced an old version at that very moment (PostgreSQL checks
        # the foreign key at the delete): nothing destroyed; running again finishes the job
        destroyed = 0
    else:
        with db.begin() as conn:
            if keys_repo.last_run(conn, scope) == (current.version, False):
                keys_repo.finish_run(conn, scope, current.version, datetime.now(UTC))
    return TenantRotationReport(tenant, field_class, current.version, started, done, destroyed)


# --- shred report ------------------------------------------------------------------------------


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


# --- schedule ----------------------------------------------------------------------------------


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


# --- index keys --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexRotationReport:
    tenant: str
    field_class: str
    version: int
    started: bool
    indexed: int  # blind-index rows made under the new version
    dropped: int  # rows of the old versions deleted


def rotate_index(
    records: RecordsService,
    tenant: str,
    field_class: str,
    *,
    deadline_seconds: float = 60.0,
    batch: int = 200,
    progress: Callable[[int], None] | None = None,
    between_batches: Callable[[], None] | None = None,
) -> IndexRotationReport:
    """A new index-key version for (tenant, class): every searchable value of the class gets a
    blind-index row under it (computed from the decrypted value, in the service process), then
    the old versions' rows and keys are dropped.

    Meanwhile both versions answer: ``FindRecords`` looks under every index-key version, and
    deterministic ``Tokenize`` returns a token already issued under an older version rather
    than a new one. After the drop, deterministic tokens of values first tokenized before the
    rotation come out new (the old tokens keep revealing). Resumable like the other rotations.
    """
    db = records.db

    def deadline() -> Deadline:
        return Deadline.after(deadline_seconds)

    names = [
        n
        for n, spec in records.schema.fields.items()
        if spec.searchable and spec.field_class.value == field_class
    ]
    versions = records.keyring.index_keys(tenant, field_class, deadline=deadline())
    started = len(versions) <= 1
    current = (
        records.keyring.new_version(tenant, field_class, INDEX, deadline=deadline())
        if started
        else max(versions, key=lambda k: k.version)
    )
    done = dropped = 0
    old = [
        k.id
        for k in records.keyring.index_keys(tenant, field_class, deadline=deadline())
        if k.version < current.version
    ]
    for _round in range(_PASSES):
        while names:
            with db.begin(write=False) as conn:
                todo = keys_repo.unindexed_values(conn, tenant, names, current.id, batch)
            if not todo:
                break
            by_record: dict[str, list[str]] = {}
            for rid, name in todo:
                by_record.setdefault(rid, []).append(name)
            rows: list[dict[str, object]] = []
            for rid, fields in by_record.items():
                rows += records.index_rows(tenant, rid, fields, current, deadline=deadline())
            with db.begin() as conn:
                done += keys_repo.add_index_rows(conn, rows)
            if len(rows) < len(todo):
                break  # values gone meanwhile (erased): the check below looks again
            if progress is not None:
                progress(done)
            if between_batches is not None:
                between_batches()
        with db.begin() as conn:
            # A write that still used the old key may have landed after the last batch: drop
            # only when every value has its row under the new key, in this same transaction
            # (a later write naming the old key fails its foreign key, and the service retries).
            if names and keys_repo.unindexed_values(conn, tenant, names, current.id, 1):
                continue
            dropped = keys_repo.drop_index_keys(conn, old)
            break
    return IndexRotationReport(tenant, field_class, current.version, started, done, dropped)
