"""Tenant and index keys per (tenant, field class): found, created or unwrapped on demand.

Creating keys for a new tenant costs one key-server call per field class (tenant key and index
key wrapped together); after that, keys come from the cache. Two processes creating the same
tenant's keys at once is resolved by the unique constraint: the loser reads the winner's rows.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.engine import Connection

from vault import crypto
from vault.crypto import DataKey, lp
from vault.deadline import Deadline
from vault.errors import Conflict, DecryptionFailed
from vault.keys import KeyManager, WrappedRef, wrapped_version
from vault.storage import Database, NewDataKey, TenantKeyRow, keys_repo, repo

DATA = "data"
INDEX = "index"

#: data keys wrapped under one tenant key before the next version is started. AES-GCM with
#: random 96-bit nonces must stay under 2^32 encryptions per key (NIST SP 800-38D); this keeps
#: a factor of four below it, whatever a crash loses of the counts.
WRAP_LIMIT = 2**30
#: wraps a process reserves at a time (one UPDATE of the key's counter per block)
WRAP_BLOCK = 2**16

log = logging.getLogger("vault.service.keyring")


@dataclass(frozen=True, slots=True)
class TenantKey:
    """An unwrapped tenant or index key with the row id that names it."""

    id: str
    field_class: str
    kind: str
    version: int
    key: bytes = field(repr=False)


#: (tenant, class) entries of the current-keys cache (:meth:`Keyring.cached_current`)
CURRENT_CACHE_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class CurrentKeys:
    """The newest tenant (``data``) and index key of each class of one tenant, as
    :meth:`Keyring.cached_current` gives them, with the older index-key versions still stored
    (an index-key rotation under way) and ``stamp``: the ids of every key row of those classes
    that they were read with, which :meth:`Keyring.still_current` compares."""

    tenant: str
    newest: dict[tuple[str, str], TenantKey]
    older_index: dict[str, list[TenantKey]]
    stamp: frozenset[str] = field(repr=False)


def key_aad(tenant: str, field_class: str, kind: str, version: int, key_id: str) -> bytes:
    """AAD given to the key server with each tenant/index key: a wrapped key moved to another
    tenant, class, kind, version or row does not unwrap."""
    return (
        b"cvault/tenant-key/v1"
        + lp(tenant)
        + lp(field_class)
        + lp(kind)
        + lp(str(version))
        + lp(key_id)
    )


def new_data_key(
    tenant: str, owner: str, field_class: str, tk: TenantKey
) -> tuple[DataKey, NewDataKey]:
    """A data key made locally for ``owner`` (a record, or a token pool) and its
    ``data_keys`` row, wrapped under tenant key ``tk`` (no key-server call)."""
    return DataKeyMaker(tenant, tk).make(owner, field_class)


class DataKeyMaker:
    """:func:`new_data_key` for many owners of one tenant under one tenant key (a batch sets
    the cipher up once). Holds the tenant key: never log or keep it."""

    __slots__ = ("_tenant", "_tk_id", "_wrapper")

    def __init__(self, tenant: str, tk: TenantKey) -> None:
        self._tenant = tenant
        self._tk_id = tk.id
        self._wrapper = crypto.DataKeyWrapper(uuid.UUID(tk.id), tk.key, tenant)

    def __repr__(self) -> str:
        return "DataKeyMaker(...)"

    def make(
        self, owner: str, field_class: str, owner_lp: bytes | None = None
    ) -> tuple[DataKey, NewDataKey]:
        """A new data key of ``owner``'s ``field_class`` and its row (``owner_lp``:
        ``lp(owner)`` when the caller has it already)."""
        dek, dek_id, wrapped = self._wrapper.new_key(owner_lp or crypto.lp(owner), field_class)
        return dek, NewDataKey(dek_id, self._tenant, owner, field_class, self._tk_id, wrapped)


def _below_floor(conn: Connection, rows: Sequence[Mapping[str, object]]) -> bool:
    """Whether any new row is wrapped under a field-key version below its class's floor (a
    rotation started since it was wrapped: storing it would leave a key behind the rotation)."""
    floors = keys_repo.field_key_floors(conn, sorted({str(r["field_class"]) for r in rows}))
    for r in rows:
        floor = floors.get(str(r["field_class"]), 0)
        version = wrapped_version(str(r["wrapped"]))
        if floor and (version is None or version < floor):
            return True
    return False


class Keyring:
    def __init__(
        self,
        db: Database,
        keys: KeyManager,
        *,
        wrap_limit: int = WRAP_LIMIT,
        wrap_block: int = WRAP_BLOCK,
    ) -> None:
        self._db = db
        self._keys = keys
        self._wrap_limit = wrap_limit
        self._wrap_block = wrap_block
        self._reserved: dict[str, int] = {}  # tenant key id -> wraps left in this process
        self._due: set[tuple[str, str]] = set()  # (tenant, class) past the limit
        self._lock = threading.Lock()
        #: (tenant, class) -> its key rows, every version (see cached_current; their
        #: ``wrapped`` is never used from here); least recently used first, bounded because
        #: tenants are named by callers
        self._rows: OrderedDict[tuple[str, str], tuple[TenantKeyRow, ...]] = OrderedDict()

    def new_data_key(
        self, tenant: str, owner: str, field_class: str, tk: TenantKey
    ) -> tuple[DataKey, NewDataKey]:
        """:func:`new_data_key`, counted against ``tk``'s bound (:meth:`count_wraps`)."""
        self.count_wraps(tenant, tk, 1)
        return new_data_key(tenant, owner, field_class, tk)

    def count_wraps(self, tenant: str, tk: TenantKey, n: int) -> None:
        """Count ``n`` data keys wrapped under ``tk``. The count lives in the database (shared
        by every process), reserved ``wrap_block`` at a time; once past ``wrap_limit`` the
        next :meth:`current` starts a new version of the key, so no key ever nears the
        AES-GCM bound."""
        with self._lock:
            left = self._reserved.get(tk.id, 0)
            if left >= n:
                self._reserved[tk.id] = left - n
                return
        block = max(self._wrap_block, n - left)  # what is left of the last block is used too
        with self._db.begin() as conn:
            total = keys_repo.add_key_uses(conn, tk.id, block)
        with self._lock:
            self._reserved[tk.id] = self._reserved.get(tk.id, 0) + block - n
            if total >= self._wrap_limit:
                self._due.add((tenant, tk.field_class))

    def _rotate_due(self, tenant: str, classes: Sequence[str], *, deadline: Deadline) -> None:
        """Start the next version of the tenant keys past their bound (see count_wraps)."""
        for c in classes:
            if (tenant, c) not in self._due:
                continue
            log.info("a tenant key reached its use bound: starting its next version")
            # Conflict: another process started it; the newest is what current() reads
            with contextlib.suppress(Conflict):
                self.new_version(tenant, c, DATA, deadline=deadline)
            with self._lock:
                self._due.discard((tenant, c))

    def current(
        self, tenant: str, classes: Iterable[str], *, deadline: Deadline
    ) -> dict[tuple[str, str], TenantKey]:
        """Newest tenant and index key for each class, creating what does not exist yet."""
        wanted = sorted(set(classes))
        if not wanted:
            return {}
        if self._due:
            self._rotate_due(tenant, wanted, deadline=deadline)
        created: dict[tuple[str, str], TenantKey] = {}
        # Another process may create some of the same keys at the same time: the unique
        # constraint makes one insert win; the loser reads the winner's rows and creates only
        # what is still missing (its set of classes may differ from the winner's).
        for _attempt in range(3):
            with self._db.begin(write=False) as conn:
                rows = repo.current_tenant_keys(conn, tenant, wanted)
            missing = [c for c in wanted if (c, DATA) not in rows or (c, INDEX) not in rows]
            if not missing:
                break
            created = self._create(tenant, missing, rows, deadline=deadline)
            if created:
                break
        else:
            raise Conflict("tenant keys are being created concurrently; retry")
        out = self._unwrap_rows(tenant, [r for r in rows.values()], deadline=deadline)
        result = {(k.field_class, k.kind): k for k in out.values()}
        result.update(created)
        return result

    def by_ids(
        self, tenant: str, ids: Iterable[str], *, deadline: Deadline
    ) -> dict[str, TenantKey]:
        """Keys by row id (for reading data keys wrapped under older versions)."""
        wanted = set(ids)
        rows = []
        with self._db.begin(write=False) as conn:
            rows = list(repo.tenant_keys_by_id(conn, wanted).values())
        for r in rows:
            if r.tenant != tenant:
                raise DecryptionFailed()
        return self._unwrap_rows(tenant, rows, deadline=deadline)

    def index_keys(self, tenant: str, field_class: str, *, deadline: Deadline) -> list[TenantKey]:
        """Every index-key version of a class (empty when the tenant never wrote this class)."""
        with self._db.begin(write=False) as conn:
            rows = repo.index_keys(conn, tenant, field_class)
        return list(self._unwrap_rows(tenant, rows, deadline=deadline).values())

    def cached_index_keys(
        self, conn: Connection, tenant: str, field_class: str
    ) -> list[TenantKey] | None:
        """:meth:`index_keys` read in the caller's transaction and opened from the cache only
        (no key-server call inside a transaction); None when one is not cached."""
        out: list[TenantKey] = []
        for r in repo.index_keys(conn, tenant, field_class):
            key = self._keys.tenant_keys.get(r.id)
            if key is None:
                return None
            out.append(TenantKey(r.id, r.field_class, r.kind, r.version, key))
        return out

    def cached_current(
        self, tenant: str, classes: Iterable[str], *, deadline: Deadline
    ) -> CurrentKeys:
        """:meth:`current` with no read transaction in steady state, for a writer that checks
        the keys with :meth:`still_current` inside its own write transaction (Tokenize).

        The rule that keeps it correct when a rotation runs (``cvault keys rotate-tenant``,
        ``rotate-index``, ``rotate-field``; in this process or, usually, another): each
        (tenant, class)'s key rows are cached (all versions; bounded, least recently used out;
        the plaintext keys stay in the key manager's cache, under its age and use limits), and
        before anything sealed, wrapped or keyed under them is written, the writer asks
        :meth:`still_current` in its write transaction, one query of the ids of those rows.
        Any change of that set (a new version started, an old one destroyed or dropped)
        evicts the entry and fails the check: the writer rolls back and starts again with
        fresh keys. :meth:`new_version` evicts in this process at once. A rotation that
        commits after the check (only on PostgreSQL: on SQLite the write transaction holds the
        write lock from its start) finds the writer's rows as it finds those of any write in
        flight: data keys are re-wrapped before an old tenant key is destroyed, and the
        foreign key refuses a row naming a destroyed one.
        Rotating a field key (``rotate-field``) changes no row id and needs no eviction: it
        re-wraps the stored tenant and index keys in place, whose plaintext stays the same; a
        key that ages out of the key manager's cache is unwrapped from its row as it is then.
        """
        wanted = sorted(set(classes))
        due = [c for c in wanted if (tenant, c) in self._due]
        if due:
            self.current(tenant, due, deadline=deadline)  # starts the next versions, evicts
        rows: list[TenantKeyRow] = []
        missing: list[str] = []
        with self._lock:
            for c in wanted:
                cached = self._rows.get((tenant, c))
                if cached is None:
                    missing.append(c)
                else:
                    self._rows.move_to_end((tenant, c))
                    rows += cached
        if missing:
            rows += self._read_rows(tenant, missing, deadline=deadline)
        keys = self._current_keys(tenant, rows, deadline=deadline)
        if keys is None:  # a cached row is gone (a rotation dropped it): read them afresh
            self.forget(tenant, wanted)
            keys = self._current_keys(
                tenant, self._read_rows(tenant, wanted, deadline=deadline), deadline=deadline
            )
        if keys is None:
            raise Conflict("tenant keys are being rotated concurrently; retry")
        return keys

    def still_current(self, conn: Connection, keys: CurrentKeys) -> bool:
        """Whether ``keys`` are still the tenant's current keys, read in the caller's write
        transaction (see :meth:`cached_current`); when not, they are evicted."""
        classes = sorted({c for c, _ in keys.newest})
        if repo.tenant_key_ids(conn, keys.tenant, classes) == keys.stamp:
            return True
        self.forget(keys.tenant, classes)
        return False

    def forget(self, tenant: str, classes: Iterable[str]) -> None:
        """Evict (tenant, class) entries of the current-keys cache."""
        with self._lock:
            for c in classes:
                self._rows.pop((tenant, c), None)

    def _read_rows(
        self, tenant: str, classes: list[str], *, deadline: Deadline
    ) -> list[TenantKeyRow]:
        """The key rows of ``classes``, created where missing, and cached."""
        for _attempt in range(3):
            with self._db.begin(write=False) as conn:
                rows = repo.tenant_key_rows(conn, tenant, classes)
            kinds = {(r.field_class, r.kind) for r in rows}
            if all((c, k) in kinds for c in classes for k in (DATA, INDEX)):
                with self._lock:
                    for c in classes:
                        self._rows[(tenant, c)] = tuple(r for r in rows if r.field_class == c)
                    while len(self._rows) > CURRENT_CACHE_ENTRIES:
                        self._rows.popitem(last=False)
                return rows
            self.current(tenant, classes, deadline=deadline)  # creates what is missing
        raise Conflict("tenant keys are being created concurrently; retry")

    def _current_keys(
        self, tenant: str, rows: list[TenantKeyRow], *, deadline: Deadline
    ) -> CurrentKeys | None:
        """The newest data and index key of each class and the older index keys (older data
        keys are left alone); None when one of their rows is gone.

        Plaintext from the key manager's cache; a key not in it (aged out) is unwrapped from
        its row as it is now, not from the cached copy: ``rotate-field`` re-wraps rows in
        place (same id) and may then retire the version the copy is wrapped under.
        """
        newest: dict[tuple[str, str], TenantKeyRow] = {}
        for r in rows:
            now = newest.get((r.field_class, r.kind))
            if now is None or now.version < r.version:
                newest[(r.field_class, r.kind)] = r
        older = [
            r
            for r in rows
            if r.kind == INDEX and r.version < newest[(r.field_class, INDEX)].version
        ]
        keys: dict[str, TenantKey] = {}
        cold: list[str] = []
        for r in (*newest.values(), *older):
            plain = self._keys.tenant_keys.get(r.id)
            if plain is None:
                cold.append(r.id)
            else:
                keys[r.id] = TenantKey(r.id, r.field_class, r.kind, r.version, plain)
        if cold:
            keys |= self.by_ids(tenant, cold, deadline=deadline)
            if any(i not in keys for i in cold):
                return None
        older_index: dict[str, list[TenantKey]] = {}
        for r in older:
            older_index.setdefault(r.field_class, []).append(keys[r.id])
        return CurrentKeys(
            tenant,
            {ck: keys[r.id] for ck, r in newest.items()},
            older_index,
            frozenset(r.id for r in rows),
        )

    def new_version(
        self, tenant: str, field_class: str, kind: str, *, deadline: Deadline
    ) -> TenantKey:
        """Start the next version of a tenant (``data``) or index key: made locally, wrapped
        in one transit call. New writes use it from then on (``current`` picks the newest).

        Raises:
            Conflict: another process started the same version at the same moment (retry).
        """
        with self._db.begin(write=False) as conn:
            rows = repo.current_tenant_keys(conn, tenant, [field_class])
        old = rows.get((field_class, kind))
        version = (old.version if old else 0) + 1
        key_id = str(uuid.uuid4())
        [nk] = self._keys.new_keys(
            field_class,
            [key_aad(tenant, field_class, kind, version, key_id)],
            deadline=deadline,
        )
        row = {
            "id": key_id,
            "tenant": tenant,
            "field_class": field_class,
            "kind": kind,
            "version": version,
            "wrapped": nk.wrapped,
            "created_at": datetime.now(UTC),
            "wraps": self._wrap_block,  # its first block, reserved by this process
        }
        with self._db.begin() as conn:
            if not repo.insert_tenant_keys(conn, [row]):
                raise Conflict("a tenant key version was started concurrently; retry")
        self._keys.remember(key_id, nk.key)
        self._reserve_first_blocks([key_id])
        self.forget(tenant, [field_class])
        return TenantKey(key_id, field_class, kind, version, nk.key)

    def _reserve_first_blocks(self, key_ids: Iterable[str]) -> None:
        """Keys this process just made carry their first block of wraps in their rows (no
        extra write before their first data keys)."""
        with self._lock:
            for key_id in key_ids:
                self._reserved[key_id] = self._reserved.get(key_id, 0) + self._wrap_block

    def _unwrap_rows(
        self, tenant: str, rows: Iterable[TenantKeyRow], *, deadline: Deadline
    ) -> dict[str, TenantKey]:
        by_class: dict[str, list[TenantKeyRow]] = defaultdict(list)
        for r in rows:
            by_class[r.field_class].append(r)
        out: dict[str, TenantKey] = {}
        for field_class, class_rows in by_class.items():
            plain = self._keys.unwrap(
                field_class,
                [
                    WrappedRef(
                        r.id, r.wrapped, key_aad(tenant, r.field_class, r.kind, r.version, r.id)
                    )
                    for r in class_rows
                ],
                deadline=deadline,
            )
            for r in class_rows:
                out[r.id] = TenantKey(r.id, r.field_class, r.kind, r.version, plain[r.id])
        return out

    def _create(
        self,
        tenant: str,
        classes: list[str],
        existing: dict[tuple[str, str], TenantKeyRow],
        *,
        deadline: Deadline,
    ) -> dict[tuple[str, str], TenantKey]:
        now = datetime.now(UTC)
        made: dict[tuple[str, str], TenantKey] = {}
        row_dicts: list[dict[str, object]] = []
        for field_class in classes:
            kinds = [k for k in (DATA, INDEX) if (field_class, k) not in existing]
            ids = [str(uuid.uuid4()) for _ in kinds]
            versions = [1 for _ in kinds]
            new = self._keys.new_keys(
                field_class,
                [
                    key_aad(tenant, field_class, k, v, i)
                    for k, v, i in zip(kinds, versions, ids, strict=True)
                ],
                deadline=deadline,
            )
            for kind, version, key_id, nk in zip(kinds, versions, ids, new, strict=True):
                made[(field_class, kind)] = TenantKey(key_id, field_class, kind, version, nk.key)
                row_dicts.append(
                    {
                        "id": key_id,
                        "tenant": tenant,
                        "field_class": field_class,
                        "kind": kind,
                        "version": version,
                        "wrapped": nk.wrapped,
                        "created_at": now,
                        "wraps": self._wrap_block,  # its first block, reserved here
                    }
                )
        with self._db.begin() as conn:
            if _below_floor(conn, row_dicts):
                # wrapped just before a field-key rotation raised the floor: wrap again
                return {}
            inserted = repo.insert_tenant_keys(conn, row_dicts)
        if not inserted:
            return {}
        for k in made.values():
            self._keys.remember(k.id, k.key)
        self._reserve_first_blocks(k.id for k in made.values())
        return made
