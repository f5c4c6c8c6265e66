"""Field keys (transit): rotate a field key and rewrap what it wraps; retire and trim old versions.

Every tenant, index and audit key of a class is stored wrapped by the class's field key on the
key server. Rotating it makes a new version there, then has the key server rewrap each stored
key to it (their plaintext never reaches this process); ``retire`` and ``trim`` then make the
old versions useless, refusing while any key is still wrapped under them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from vault.audit import audit_key_aad
from vault.keys import FieldKeyAdmin, wrapped_version
from vault.service._keyring import key_aad as tenant_key_aad
from vault.service.operations._pace import Pace
from vault.storage import Database, keys_repo

#: passes of rotate-field over keys still below the new version (see there)
_PASSES = 5


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
    """What a stored key is bound to (its associated data), as it was wrapped."""
    if row.kind == "audit":
        return audit_key_aad(row.id, row.version)
    return tenant_key_aad(row.tenant, row.field_class, row.kind, row.version, row.id)


def _below(db: Database, field_class: str, version: int) -> list[keys_repo.WrappedKeyRow]:
    """The stored keys of the class wrapped under a field-key version below ``version``."""
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
    scope = f"field:{field_class}"
    version, rotated, todo = _start(db, admin, field_class, scope, campaign)
    pass_ = _RewrapPass(
        db, admin, field_class, batch, progress, Pace(max_per_second, clock=clock, sleep=sleep)
    )
    # Keys the service wrapped under the old version just before the rotation can reach the
    # database after a pass began: passes repeat until one finds nothing left.
    for n in range(_PASSES):
        if n:
            todo = _below(db, field_class, version)
            if not todo:
                break
        pass_.run(todo)
    with db.begin() as conn:
        if keys_repo.last_run(conn, scope) == (version, False):
            keys_repo.finish_run(conn, scope, version, datetime.now(UTC))
    return RotationReport(field_class, version, rotated, pass_.done, pass_.converted)


def _start(
    db: Database, admin: FieldKeyAdmin, field_class: str, scope: str, campaign: str
) -> tuple[int, bool, list[keys_repo.WrappedKeyRow]]:
    """The version to rewrap to (new, or the newest when a run is resumed), whether it is new,
    and the keys below it; the field-key floor raised to it."""
    info = admin.info(field_class)
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
    return version, rotated, todo


class _RewrapPass:
    """Rewraps stored keys in batches, counting across passes."""

    def __init__(
        self,
        db: Database,
        admin: FieldKeyAdmin,
        field_class: str,
        batch: int,
        progress: Callable[[int, int], None] | None,
        pace: Pace,
    ) -> None:
        self._db = db
        self._admin = admin
        self._field_class = field_class
        self._batch = batch
        self._progress = progress
        self._pace = pace
        self.done = 0
        self.converted = 0

    def run(self, todo: Sequence[keys_repo.WrappedKeyRow]) -> None:
        for i in range(0, len(todo), self._batch):
            chunk = todo[i : i + self._batch]
            new, legacy = self._admin.rewrap_stored(
                self._field_class, [(r.wrapped, _binding(r)) for r in chunk]
            )
            self.converted += legacy
            with self._db.begin() as conn:
                self.done += keys_repo.replace_wrapped(conn, list(zip(chunk, new, strict=True)))
            if self._progress is not None:
                self._progress(self.done, len(todo))
            self._pace.wait(self.done)


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
