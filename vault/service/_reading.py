"""Opening a record's stored values and rendering them as the policy decided.

Shared by GetRecord, ExportCustomerData, updates (what a changed class keeps) and the operator
operations that re-seal or re-index values; every data key comes through ``core.data_keys``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vault import crypto
from vault.crypto import DataKey
from vault.deadline import Deadline
from vault.errors import DecryptionFailed, Erased
from vault.policy import FieldDecision, Output, mask
from vault.schema import FieldClass
from vault.service._core import Core
from vault.service._datakeys import DataKeyRef
from vault.service._types import FieldOutput
from vault.storage import StoredValue, repo

#: the outputs that let a value (or a mask of it) leave: what a reveal commit is for
REVEALING = (Output.PLAIN, Output.MASKED)

#: field class -> (data key id, wrapped key, tenant key id), as ``repo.record_data_keys`` reads
RecordKeys = Mapping[str, tuple[str, bytes, str]]


def value_refs(record_id: str, stored: Sequence[StoredValue]) -> list[DataKeyRef]:
    """The data keys the stored values of a record are sealed under."""
    return [
        DataKeyRef(s.data_key_id, record_id, s.field_class, s.tenant_key_id, s.wrapped_dek)
        for s in stored
    ]


def record_key_refs(record_id: str, keys: RecordKeys) -> dict[str, DataKeyRef]:
    """A record's live data keys by class, as refs."""
    return {c: DataKeyRef(i, record_id, c, tk, w) for c, (i, w, tk) in keys.items()}


class RecordReader:
    """Decrypts a record's values through the one data-key path."""

    def __init__(self, core: Core) -> None:
        self._core = core

    def open(
        self, tenant: str, record_id: str, stored: Sequence[StoredValue], *, deadline: Deadline
    ) -> dict[str, str]:
        """Plain values by field name (may unwrap a tenant key through the key server).

        Raises:
            Erased: a data key was crypto-shredded.
            DecryptionFailed: a key row is missing without a tombstone, or does not
                authenticate (tampering).
        """
        _check_keys(stored)
        deks = self._core.data_keys.open(
            tenant,
            value_refs(record_id, stored),
            deadline=deadline,
            reread=lambda cold: self._reread(tenant, record_id, cold),
        )
        return _opened(deks, tenant, record_id, stored)

    def open_local(
        self, tenant: str, record_id: str, stored: Sequence[StoredValue]
    ) -> dict[str, str] | None:
        """As :meth:`open` without leaving the process (no key server, no database); None when
        a tenant key is not cached, or anything is unusual (the general path will say what)."""
        if any(s.dek_erased or s.wrapped_dek is None or s.tenant_key_id is None for s in stored):
            return None
        deks = self._core.data_keys.open_local(tenant, value_refs(record_id, stored))
        return None if deks is None else _opened(deks, tenant, record_id, stored)

    def keys_of(
        self,
        tenant: str,
        record_id: str,
        keys: RecordKeys,
        classes: set[str],
        *,
        deadline: Deadline,
    ) -> dict[str, DataKey]:
        """The record's live data keys of these classes, by class."""
        refs = {c: r for c, r in record_key_refs(record_id, keys).items() if c in classes}
        if not refs:
            return {}
        deks = self._core.data_keys.open(tenant, refs.values(), deadline=deadline)
        return {c: deks[r.id] for c, r in refs.items()}

    def _reread(self, tenant: str, record_id: str, cold: Sequence[DataKeyRef]) -> list[DataKeyRef]:
        """``cold`` as the data-key rows are now (re-wrapped by a tenant-key rotation)."""
        with self._core.db.begin(write=False) as conn:
            now = record_key_refs(record_id, repo.record_data_keys(conn, tenant, record_id))
        by_id = {r.id: r for r in now.values()}
        return [by_id.get(r.id, r) for r in cold]


def _check_keys(stored: Sequence[StoredValue]) -> None:
    if any(s.dek_erased for s in stored):
        raise Erased("record erased")
    if any(s.wrapped_dek is None or s.tenant_key_id is None for s in stored):
        # the data key a value names is missing or belongs elsewhere: tampering, not erasure
        raise DecryptionFailed()


def _opened(
    deks: Mapping[str, DataKey], tenant: str, record_id: str, stored: Sequence[StoredValue]
) -> dict[str, str]:
    return {
        s.field_name: crypto.open_value(
            deks[s.data_key_id], tenant, record_id, s.field_name, s.ciphertext
        )
        for s in stored
    }


def render(
    stored: Sequence[StoredValue],
    decisions: Mapping[str, FieldDecision],
    plain: Mapping[str, str],
    scoped: Mapping[str, str] | None = None,
) -> dict[str, FieldOutput]:
    """Each field as decided: the plain value, its mask, its token (or a scoped view token),
    or nothing."""
    out: dict[str, FieldOutput] = {}
    scoped = scoped or {}
    for s in stored:
        d = decisions[s.field_name]
        if d.output is Output.PLAIN:
            out[s.field_name] = FieldOutput(Output.PLAIN, plain[s.field_name], d.reason)
        elif d.output is Output.MASKED:
            masked = mask(FieldClass(s.field_class), plain[s.field_name])
            out[s.field_name] = FieldOutput(Output.MASKED, masked, d.reason)
        elif d.output is Output.TOKEN:
            token = scoped.get(s.field_name, s.token)
            out[s.field_name] = FieldOutput(Output.TOKEN, token, d.reason)
        else:
            out[s.field_name] = FieldOutput(Output.OMIT, "", d.reason)
    return out
