"""Tenant keys: a new version for (tenant, class), every data key re-wrapped under it locally,
then the old versions destroyed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from vault import crypto
from vault.deadline import Deadline
from vault.service._core import Core
from vault.service._datakeys import DataKeyRef
from vault.service._keyring import DATA, TenantKey
from vault.service.operations._pace import Pace
from vault.storage import keys_repo, restored


@dataclass(frozen=True, slots=True)
class TenantRotationReport:
    tenant: str
    field_class: str
    version: int  # the tenant-key version every data key is now wrapped under
    started: bool  # False: a previous run was resumed
    rewrapped: int
    destroyed: int  # older tenant-key rows deleted
    #: data-key rows of erased records under the old versions (a restored backup): left out
    #: of the re-wrap (their old version then stays), or deleted when ``purged``
    erased: int = 0
    purged: bool = False


def rotate_tenant(
    core: Core,
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
    purge_erased: bool = False,
) -> TenantRotationReport:
    """A new tenant-key version for (tenant, class), every data key of it re-wrapped under
    the new version locally (AES-GCM: no key-server call per data key; one to unwrap each old
    version), ``batch`` per short compare-and-set transaction, then the old versions' rows
    destroyed, so that their wrapped copies in backups protect nothing that is still needed.

    Resumable and idempotent like :func:`~vault.service.operations.rotate_field`: when data
    keys are still under an older version, no new version is started. Data keys written by the
    service meanwhile under an old version (it read the key list just before) are picked up by
    the loop, and an old version's row is only destroyed once nothing references it.

    Rows of erased records that a restored backup brought back (see
    :mod:`vault.storage._restored`) are never re-wrapped (the service refuses to write them):
    they are counted in the report and skipped, so their old version stays (``shred-report``
    says so), or with ``purge_erased`` deleted first, as the erasure did.
    """
    if batch < 1:
        raise ValueError("batch must be positive")
    run = _TenantRun(core, tenant, field_class, deadline_seconds)
    current, started = run.start(campaign)
    erased = run.erased_rows(purge=purge_erased)
    pace = Pace(max_per_second, clock=clock, sleep=sleep)
    done = 0
    while (rewrapped := run.rewrap_batch(current, batch)) is not None:
        done += rewrapped
        if progress is not None:
            progress(done)
        pace.wait(done)
    destroyed = run.finish(current)
    return TenantRotationReport(
        tenant, field_class, current.version, started, done, destroyed, erased, purge_erased
    )


class _TenantRun:
    """One rotate-tenant run over (tenant, class)."""

    def __init__(self, core: Core, tenant: str, field_class: str, deadline_seconds: float):
        self._core = core
        self._tenant = tenant
        self._field_class = field_class
        self._seconds = deadline_seconds
        self.scope = f"tenant:{tenant}/{field_class}"
        self._old_ids: list[str] = []
        #: data-key rows of erased records left out of the re-wrap (see erased_rows)
        self._skip: list[str] = []

    def _deadline(self) -> Deadline:
        return Deadline.after(self._seconds)

    def _older(self, version: int) -> list[str]:
        with self._core.db.begin(write=False) as conn:
            return keys_repo.older_tenant_keys(conn, self._tenant, self._field_class, DATA, version)

    def start(self, campaign: str) -> tuple[TenantKey, bool]:
        """The tenant key to re-wrap under, and whether it is a new version (not a resumed
        run's)."""
        keyring = self._core.keyring
        current = keyring.current(self._tenant, [self._field_class], deadline=self._deadline())[
            (self._field_class, DATA)
        ]
        self._old_ids = self._older(current.version)
        with self._core.db.begin(write=False) as conn:
            run = keys_repo.last_run(conn, self.scope)
        # resume when old versions are left (not all re-wrapped, or not yet destroyed) or the
        # last run is unfinished
        started = not self._old_ids and (run is None or run[1] or run[0] != current.version)
        if started:
            current = keyring.new_version(
                self._tenant, self._field_class, DATA, deadline=self._deadline()
            )
            with self._core.db.begin() as conn:
                keys_repo.start_run(conn, self.scope, current.version, datetime.now(UTC), campaign)
            self._old_ids = self._older(current.version)
        return current, started

    def erased_rows(self, *, purge: bool) -> int:
        """How many data-key rows of erased records the old versions wrap; deleted if
        ``purge``."""
        with self._core.db.begin(write=purge) as conn:
            rows = restored.erased_rows_under(conn, self._old_ids)
            if purge:
                restored.purge_erased(conn, rows, datetime.now(UTC))
        self._skip = [] if purge else [r.data_key_id for r in rows]
        return len(rows)

    def rewrap_batch(self, current: TenantKey, batch: int) -> int | None:
        """Re-wrap up to ``batch`` data keys still under an old version: how many rows were
        replaced (a row changed meanwhile is read again next time); None when none is left."""
        with self._core.db.begin(write=False) as conn:
            todo = keys_repo.data_keys_under(conn, self._old_ids, batch, self._skip)
        if not todo:
            return None
        rewrapped = self._rewrapped(todo, current)
        self._core.keyring.count_wraps(self._tenant, current, len(rewrapped))
        with self._core.db.begin() as conn:
            return keys_repo.replace_data_keys(conn, rewrapped)

    def _rewrapped(
        self, todo: Sequence[keys_repo.DataKeyToRewrap], current: TenantKey
    ) -> list[tuple[keys_repo.DataKeyToRewrap, str, bytes]]:
        """Each data key opened through the one data-key path (not cached: bulk work) and
        wrapped under ``current``."""
        tenant, field_class = self._tenant, self._field_class
        old = self._core.keyring.by_ids(
            tenant, {r.tenant_key_id for r in todo}, deadline=self._deadline()
        )
        refs = [
            DataKeyRef(r.id, r.record_id, field_class, r.tenant_key_id, r.wrapped) for r in todo
        ]
        deks = self._core.data_keys.unwrap_under(tenant, refs, old, cache=False)
        return [
            (
                r,
                current.id,
                crypto.wrap_data_key(
                    uuid.UUID(current.id),
                    current.key,
                    deks[r.id],
                    tenant=tenant,
                    record_id=r.record_id,
                    field_class=field_class,
                ),
            )
            for r in todo
        ]

    def finish(self, current: TenantKey) -> int:
        """Destroy the old versions' rows once nothing references them, and close the run;
        how many were destroyed."""
        try:
            with self._core.db.begin() as conn:
                old_ids = keys_repo.older_tenant_keys(
                    conn, self._tenant, self._field_class, DATA, current.version
                )
                destroyed = keys_repo.delete_unused_tenant_keys(conn, old_ids, datetime.now(UTC))
        except IntegrityError:
            # a service write referenced an old version at that very moment (PostgreSQL checks
            # the foreign key at the delete): nothing destroyed; running again finishes the job
            return 0
        with self._core.db.begin() as conn:
            if keys_repo.last_run(conn, self.scope) == (current.version, False):
                keys_repo.finish_run(conn, self.scope, current.version, datetime.now(UTC))
        return destroyed
