"""Token fingerprints under the current index key: for tokens made before fingerprints existed
(migration 0007: ``cvault tokens fingerprint``) and, in ``rotate-index``, for tokens
fingerprinted under an older index-key version before that version is dropped (an erasure
fingerprints values under the versions that exist, so a token under a dropped one would not be
found). Each value is opened in the service process and never leaves it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from vault import crypto
from vault.deadline import Deadline
from vault.schema import FieldClass
from vault.service._core import Core
from vault.service._datakeys import DataKeyRef
from vault.service._keyring import INDEX, TenantKey
from vault.service._normal import fingerprint
from vault.service._token_types import token_field
from vault.storage import tokens_repo

Row = tokens_repo.StoredToken


@dataclass(frozen=True, slots=True)
class FingerprintReport:
    tenant: str
    field_class: str
    fingerprinted: int  # tokens given a fingerprint under the current index key
    skipped: int  # tokens whose value is erased (nothing left to find)


def fingerprint_tokens(
    core: Core,
    tenant: str,
    field_class: str,
    *,
    index_key: TenantKey | None = None,
    batch: int = 500,
    deadline_seconds: float = 60.0,
) -> FingerprintReport:
    """Fingerprint every live token of (tenant, class) not yet fingerprinted under
    ``index_key`` (default: the current one), ``batch`` per short transaction. Safe while the
    service runs, and resumable (it picks up what is still to do)."""

    def deadline() -> Deadline:
        return Deadline.after(deadline_seconds)

    ik = (
        index_key
        or core.keyring.current(tenant, [field_class], deadline=deadline())[(field_class, INDEX)]
    )
    cls = FieldClass(field_class)
    after, done, skipped = "", 0, 0
    while True:
        with core.db.begin(write=False) as conn:
            names = tokens_repo.tokens_to_fingerprint(
                conn, tenant, field_class, ik.id, after, batch
            )
            rows = tokens_repo.read_tokens(conn, tenant, names)
        if not names:
            return FingerprintReport(tenant, field_class, done, skipped)
        after = names[-1]
        live = {t: r for t, r in rows.items() if _openable(r)}
        skipped += len(rows) - len(live)
        plain = _open(core, tenant, live, deadline())
        with core.db.begin() as conn:
            for t, value in plain.items():
                tokens_repo.set_fingerprint(conn, tenant, t, fingerprint(ik.key, cls, value), ik.id)
        done += len(plain)


def fingerprint_all(
    core: Core, *, batch: int = 500, progress: Callable[[FingerprintReport], None] | None = None
) -> list[FingerprintReport]:
    """:func:`fingerprint_tokens` for every (tenant, class) that has tokens."""
    with core.db.begin(write=False) as conn:
        pairs = tokens_repo.token_classes(conn)
    out: list[FingerprintReport] = []
    for tenant, field_class in pairs:
        report = fingerprint_tokens(core, tenant, field_class, batch=batch)
        out.append(report)
        if progress is not None:
            progress(report)
    return out


def _openable(r: Row) -> bool:
    return not (r.dek_erased or r.record_erased or r.value_erased) and r.wrapped_dek is not None


def _open(core: Core, tenant: str, rows: Mapping[str, Row], deadline: Deadline) -> dict[str, str]:
    """The values of these token rows (data keys through the one data-key path, uncached)."""
    current = dict(rows)

    def reread(cold: Sequence[DataKeyRef]) -> list[DataKeyRef]:
        ids = {ref.id for ref in cold}
        affected = [t for t, r in current.items() if r.data_key_id in ids]
        with core.db.begin(write=False) as conn:
            current.update(tokens_repo.read_tokens(conn, tenant, affected))
        return list({current[t].data_key_id: _ref(current[t]) for t in affected}.values())

    deks = core.data_keys.open(
        tenant, [_ref(r) for r in current.values()], deadline=deadline, reread=reread, cache=False
    )
    return {
        t: crypto.open_value(
            deks[r.data_key_id],
            tenant,
            r.record_id or r.key_owner or "",
            token_field(t),
            r.ciphertext,
        )
        for t, r in current.items()
    }


def _ref(r: Row) -> DataKeyRef:
    return DataKeyRef(
        r.data_key_id, r.key_owner or "", r.field_class, r.tenant_key_id, r.wrapped_dek
    )
