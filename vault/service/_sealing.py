"""Sealing a record's values: new data keys, ciphertexts, blind-index rows and linked tokens.

CPU work done before the write transaction opens (create, update, rekey), under the tenant's
current keys; no key-server call once the tenant keys are known.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from vault import crypto
from vault.crypto import DataKey, uuid7
from vault.service._core import Core
from vault.service._keyring import DATA, INDEX, DataKeyMaker, TenantKey
from vault.service._types import StoredRecord
from vault.storage import NewDataKey, NewIndex, NewRecord, NewValue, tokens_repo

#: the tenant's current tenant and index keys by (class, kind), as ``Keyring.current`` gives
TenantKeys = Mapping[tuple[str, str], TenantKey]
#: what sealing a record's values writes: value rows, blind-index rows, and tokens by field
Sealed = tuple[list[NewValue], list[NewIndex], dict[str, str]]


def seal_linked(
    dek: DataKey, tenant: str, record_id: str, token: tokens_repo.LinkedToken, value: str
) -> bytes:
    """A linked token's value sealed under its record's ``dek`` (AAD bound to the token)."""
    return crypto.seal_value(dek, tenant, record_id, f"token:{token.token}", value)


class RecordSealer:
    """Seals values of records for storage."""

    def __init__(self, core: Core) -> None:
        self._core = core

    def seal_new(
        self,
        tenant: str,
        inputs: Sequence[tuple[str | None, Mapping[str, str]]],
        tkeys: TenantKeys,
    ) -> list[tuple[NewRecord, StoredRecord]]:
        """New records' rows from (idempotency key, values) pairs, and what CreateRecord
        answers for each. The tenant-key ciphers are set up once for the whole batch, and
        the wraps counted once per class."""
        fields = self._fields()
        classes = [sorted({self._field(fields, n)[0] for n in values}) for _, values in inputs]
        makers = self._makers(tenant, tkeys, Counter(c for cs in classes for c in cs))
        version = self._core.schema.version
        out: list[tuple[NewRecord, StoredRecord]] = []
        for (idempotency_key, values), record_classes in zip(inputs, classes, strict=True):
            record_id = str(uuid7())
            deks, dek_rows = self._made(record_id, record_classes, makers)
            ids = {row.field_class: row.id for row in dek_rows}
            value_rows, index_rows, tokens = self._seal(
                tenant, record_id, values, deks, tkeys, {}, fields, ids
            )
            new = NewRecord(
                record_id, tenant, version, idempotency_key, dek_rows, value_rows, index_rows
            )
            out.append((new, StoredRecord(record_id, 1, tokens)))
        return out

    def new_data_keys(
        self, tenant: str, record_id: str, classes: set[str], tkeys: TenantKeys
    ) -> tuple[dict[str, DataKey], list[NewDataKey]]:
        """A new data key per class of one record, and their rows."""
        makers = self._makers(tenant, tkeys, Counter(classes))
        return self._made(record_id, sorted(classes), makers)

    def _makers(
        self, tenant: str, tkeys: TenantKeys, wraps: Mapping[str, int]
    ) -> dict[str, DataKeyMaker]:
        """A data-key maker per class, its wraps counted against the tenant key's bound."""
        makers: dict[str, DataKeyMaker] = {}
        for field_class, n in wraps.items():
            tk = tkeys[(field_class, DATA)]
            self._core.keyring.count_wraps(tenant, tk, n)
            makers[field_class] = DataKeyMaker(tenant, tk)
        return makers

    def _made(
        self, owner: str, classes: Sequence[str], makers: Mapping[str, DataKeyMaker]
    ) -> tuple[dict[str, DataKey], list[NewDataKey]]:
        deks: dict[str, DataKey] = {}
        rows: list[NewDataKey] = []
        made = self._core.data_keys.made
        owner_lp = crypto.lp(owner)
        for field_class in classes:
            dek, row = makers[field_class].make(owner, field_class, owner_lp)
            deks[field_class] = dek
            made(dek)
            rows.append(row)
        return deks, rows

    def seal_values(
        self,
        tenant: str,
        record_id: str,
        values: Mapping[str, str],
        deks: Mapping[str, DataKey],
        tkeys: TenantKeys,
        *,
        tokens: Mapping[str, str],
    ) -> Sealed:
        """Value rows (each under its class's data key), blind-index rows of the searchable
        fields, and each field's token (kept from ``tokens``, else a new one)."""
        return self._seal(tenant, record_id, values, deks, tkeys, tokens, self._fields())

    def _fields(self) -> dict[str, tuple[str, bool]]:
        """(class, searchable) of every field of the schema, looked up once per call."""
        return {n: (s.field_class.value, s.searchable) for n, s in self._core.schema.fields.items()}

    def _field(self, fields: Mapping[str, tuple[str, bool]], name: str) -> tuple[str, bool]:
        """``fields[name]``; an unknown name raises the schema's InvalidInput."""
        found = fields.get(name)
        if found is None:
            spec = self._core.schema.spec(name)
            found = (spec.field_class.value, spec.searchable)
        return found

    def _seal(
        self,
        tenant: str,
        record_id: str,
        values: Mapping[str, str],
        deks: Mapping[str, DataKey],
        tkeys: TenantKeys,
        tokens: Mapping[str, str],
        fields: Mapping[str, tuple[str, bool]],
        dek_ids: Mapping[str, str] | None = None,
    ) -> Sealed:
        """:meth:`seal_values`, with the schema's ``fields`` and the data keys' ids as text
        (``dek_ids``, by class) when the caller has them."""
        value_rows: list[NewValue] = []
        index_rows: list[NewIndex] = []
        out_tokens: dict[str, str] = {}
        sealers: dict[str, tuple[crypto.OwnerSealer, str]] = {}
        aad = crypto.owner_aad_of(tenant, record_id)
        for name, value in values.items():
            field_class, searchable = self._field(fields, name)
            found = sealers.get(field_class)
            if found is None:
                dek = deks[field_class]
                dek_id = dek_ids[field_class] if dek_ids else str(dek.id)
                sealer = crypto.OwnerSealer(dek, tenant, record_id, owner_aad=aad)
                found = sealers[field_class] = (sealer, dek_id)
            sealer, dek_id = found
            token = tokens.get(name) or crypto.random_token(field_class)
            out_tokens[name] = token
            ciphertext = sealer.seal(name, value)
            value_rows.append(NewValue(record_id, name, field_class, dek_id, ciphertext, token))
            if searchable:
                ik = tkeys[(field_class, INDEX)]
                index_rows.append(self.index_row(record_id, name, value, ik))
        return value_rows, index_rows, out_tokens

    def index_row(self, record_id: str, name: str, value: str, ik: TenantKey) -> NewIndex:
        """The blind-index row of one field's (canonical) value under index key ``ik``."""
        form = self._core.schema.index_form(name, value, trusted=True)
        return NewIndex(record_id, name, ik.id, crypto.blind_index(ik.key, name, form))
