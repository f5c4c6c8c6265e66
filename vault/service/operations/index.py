"""Index keys: a new version for (tenant, class), every searchable value indexed under it, then
the old versions' blind-index rows and keys dropped."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vault.deadline import Deadline
from vault.service._core import Core
from vault.service._keyring import INDEX, TenantKey
from vault.service._reading import RecordReader
from vault.service._sealing import RecordSealer
from vault.service.operations.fingerprints import fingerprint_tokens
from vault.storage import NewIndex, keys_repo, repo

#: rounds of indexing and the drop check (see rotate_index)
_PASSES = 5


@dataclass(frozen=True, slots=True)
class IndexRotationReport:
    tenant: str
    field_class: str
    version: int
    started: bool
    indexed: int  # blind-index rows made under the new version
    dropped: int  # rows of the old versions deleted


def index_rows(
    core: Core,
    tenant: str,
    record_id: str,
    names: Sequence[str],
    ik: TenantKey,
    *,
    deadline: Deadline,
) -> list[NewIndex]:
    """Blind-index rows of these fields of a record under index key ``ik`` (computed from the
    decrypted values, which stay here); none when the record is gone."""
    with core.db.begin(write=False) as conn:
        row, stored = repo.read_record(conn, tenant, record_id, list(names))
    if row is None or not stored or any(s.dek_erased for s in stored):
        return []
    plain = RecordReader(core).open(tenant, record_id, stored, deadline=deadline)
    sealer = RecordSealer(core)
    return [sealer.index_row(record_id, n, v, ik) for n, v in plain.items()]


def rotate_index(
    core: Core,
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
    rotation come out new (the old tokens keep revealing). Every token of the class is given
    its fingerprint under the new version before the drop (so an erasure still finds it; a
    token a call still in flight writes under the old version after that pass is the one
    left behind). Resumable like the other rotations.
    """

    def deadline() -> Deadline:
        return Deadline.after(deadline_seconds)

    names = [
        n
        for n, spec in core.schema.fields.items()
        if spec.searchable and spec.field_class.value == field_class
    ]
    versions = core.keyring.index_keys(tenant, field_class, deadline=deadline())
    started = len(versions) <= 1
    current = (
        core.keyring.new_version(tenant, field_class, INDEX, deadline=deadline())
        if started
        else max(versions, key=lambda k: k.version)
    )
    old = [
        k.id
        for k in core.keyring.index_keys(tenant, field_class, deadline=deadline())
        if k.version < current.version
    ]
    indexer = _Indexer(core, tenant, names, current, batch, deadline)
    dropped = 0
    for _round in range(_PASSES):
        indexer.run(progress, between_batches)
        # tokens fingerprinted under an older version: an erasure after the drop fingerprints
        # values under the versions left, so these get the new version's fingerprint first
        fingerprint_tokens(
            core, tenant, field_class, index_key=current, deadline_seconds=deadline_seconds
        )
        with core.db.begin() as conn:
            # A write that still used the old key may have landed after the last batch: drop
            # only when every value has its row under the new key, in this same transaction
            # (a later write naming the old key fails its foreign key, and the service retries).
            if names and keys_repo.unindexed_values(conn, tenant, names, current.id, 1):
                continue
            dropped = keys_repo.drop_index_keys(conn, old)
            break
    return IndexRotationReport(tenant, field_class, current.version, started, indexer.done, dropped)


class _Indexer:
    """Indexes the values not yet indexed under one index key, in batches."""

    def __init__(
        self,
        core: Core,
        tenant: str,
        names: Sequence[str],
        ik: TenantKey,
        batch: int,
        deadline: Callable[[], Deadline],
    ) -> None:
        self._core = core
        self._tenant = tenant
        self._names = list(names)
        self._ik = ik
        self._batch = batch
        self._deadline = deadline
        self.done = 0

    def run(
        self,
        progress: Callable[[int], None] | None,
        between_batches: Callable[[], None] | None,
    ) -> None:
        """Batches until nothing is left to index (or values went away meanwhile)."""
        while self._names:
            with self._core.db.begin(write=False) as conn:
                todo = keys_repo.unindexed_values(
                    conn, self._tenant, self._names, self._ik.id, self._batch
                )
            if not todo:
                return
            rows = self._rows(todo)
            with self._core.db.begin() as conn:
                self.done += keys_repo.add_index_rows(conn, rows)
            if len(rows) < len(todo):
                return  # values gone meanwhile (erased): the caller's check looks again
            if progress is not None:
                progress(self.done)
            if between_batches is not None:
                between_batches()

    def _rows(self, todo: Sequence[tuple[str, str]]) -> list[NewIndex]:
        by_record: dict[str, list[str]] = {}
        for rid, name in todo:
            by_record.setdefault(rid, []).append(name)
        rows: list[NewIndex] = []
        for rid, fields in by_record.items():
            rows += index_rows(
                self._core, self._tenant, rid, fields, self._ik, deadline=self._deadline()
            )
        return rows
