"""Index keys: a new version for (tenant, class), every searchable value indexed under it, then
the old versions' blind-index rows and keys dropped."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from vault import crypto
from vault.deadline import Deadline
from vault.errors import DecryptionFailed
from vault.service._core import Core
from vault.service._datakeys import DataKeyRef
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
    decrypted values, which stay here); none when the record is gone. One record, its own read
    and key opening: ``rotate_index`` works in batches instead, and the benchmark
    (benchmarks/rotate_index.py) keeps this as the per-record baseline."""
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
    batch: int = 500,
    progress: Callable[[int, int], None] | None = None,
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
    left behind). Resumable like the other rotations: a stopped run carries on with the values
    not yet indexed under the newest version.

    Values go ``batch`` at a time (see ``_Indexer``); erased records are skipped, and the drop
    happens only when a check in its own transaction finds every value indexed under the new
    version. ``progress(done, total)`` after each batch: rows made, and rows to make (counted
    at the start of each pass); ``between_batches`` is called after each batch too.
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
            dropped = keys_repo.drop_index_keys(conn, old, datetime.now(UTC))
            break
    return IndexRotationReport(tenant, field_class, current.version, started, indexer.done, dropped)


class _Indexer:
    """Indexes the values not yet indexed under one index key, in batches: per batch one read
    (the values with their data-key rows), one ``data_keys.open`` for all their keys (tenant
    keys from the keyring's cache), the digests in memory, and one bulk insert."""

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
        self._sealer = RecordSealer(core)
        self.done = 0

    def run(
        self,
        progress: Callable[[int, int], None] | None,
        between_batches: Callable[[], None] | None,
    ) -> None:
        """One pass over the values in primary-key order, each batch after the last one's
        final value (a value written behind the pass under the old key is found by the
        caller's check, which runs another pass)."""
        if not self._names:
            return
        total = self.done + self._left() if progress is not None else 0
        after: tuple[str, str] | None = None
        while True:
            with self._core.db.begin(write=False) as conn:
                todo = keys_repo.values_to_index(
                    conn, self._tenant, self._names, self._ik.id, after, self._batch
                )
            if not todo:
                return
            after = (todo[-1].record_id, todo[-1].field_name)
            rows = self._rows(todo)
            with self._core.db.begin() as conn:
                self.done += keys_repo.add_index_rows(conn, rows)
            if progress is not None:
                progress(self.done, max(total, self.done))
            if between_batches is not None:
                between_batches()
            if len(todo) < self._batch:
                return

    def _left(self) -> int:
        with self._core.db.begin(write=False) as conn:
            return keys_repo.count_unindexed_values(conn, self._tenant, self._names, self._ik.id)

    def _rows(self, todo: Sequence[keys_repo.ValueToIndex]) -> list[NewIndex]:
        """The rows of the values of records none of whose values here was erased (an erasure
        in progress: nothing of that record is indexed), from the decrypted values."""
        erased = {v.record_id for v in todo if v.erased}
        live = [v for v in todo if v.record_id not in erased]
        if any(v.wrapped_dek is None or v.tenant_key_id is None for v in live):
            # the data key a value names is missing or belongs elsewhere: tampering
            raise DecryptionFailed()
        deks = self._core.data_keys.open(
            self._tenant,
            [
                DataKeyRef(
                    v.data_key_id, v.record_id, v.field_class, v.tenant_key_id, v.wrapped_dek
                )
                for v in live
            ],
            deadline=self._deadline(),
            reread=self._reread,
            cache=False,
        )
        return [
            self._sealer.index_row(
                v.record_id,
                v.field_name,
                crypto.open_value(
                    deks[v.data_key_id], self._tenant, v.record_id, v.field_name, v.ciphertext
                ),
                self._ik,
            )
            for v in live
        ]

    def _reread(self, cold: Sequence[DataKeyRef]) -> list[DataKeyRef]:
        """``cold`` as the data-key rows are now (re-wrapped by a tenant-key rotation)."""
        with self._core.db.begin(write=False) as conn:
            now = keys_repo.live_data_keys(conn, self._tenant, [r.id for r in cold])
        return [
            DataKeyRef(r.id, r.owner, r.field_class, *now[r.id]) if r.id in now else r for r in cold
        ]
