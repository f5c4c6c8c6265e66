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
from vault.storage import NewRecord, tokens_repo

#: the tenant's current tenant and index keys by (class, kind), as ``Keyring.current`` gives
TenantKeys = Mapping[tuple[str, str], TenantKey]
#: what sealing a record's values writes: value rows, blind-index rows, and tokens by field
Sealed = tuple[list[dict[str, object]], list[dict[str, object]], dict[str, str]]


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
        classes = [sorted({self._core.class_of(n) for n in values}) for _, values in inputs]
        makers = self._makers(tenant, tkeys, Counter(c for cs in classes for c in cs))
        out: list[tuple[NewRecord, StoredRecord]] = []
        for (idempotency_key, values), record_classes in zip(inputs, classes, strict=True):
            record_id = str(uuid7())
            deks, dek_rows = self._made(record_id, record_classes, makers)
            value_rows, index_rows, tokens = self.seal_values(
                tenant, record_id, values, deks, tkeys, tokens={}
            )
            new = NewRecord(
                id=record_id,
                tenant=tenant,
                schema_version=self._core.schema.version,
                idempotency_key=idempotency_key,
                data_keys=dek_rows,
                values=value_rows,
                index_rows=index_rows,
            )
            out.append((new, StoredRecord(record_id, 1, tokens)))
        return out

    def new_data_keys(
        self, tenant: str, record_id: str, classes: set[str], tkeys: TenantKeys
    ) -> tuple[dict[str, DataKey], list[dict[str, object]]]:
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
    ) -> tuple[dict[str, DataKey], list[dict[str, object]]]:
        deks: dict[str, DataKey] = {}
        rows: list[dict[str, object]] = []
        for field_class in classes:
            dek, row = makers[field_class].make(owner, field_class)
            deks[field_class] = dek
            self._core.data_keys.made(dek)
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
        value_rows: list[dict[str, object]] = []
        index_rows: list[dict[str, object]] = []
        out_tokens: dict[str, str] = {}
        for name, value in values.items():
            spec = self._core.schema.spec(name)
            field_class = spec.field_class.value
            dek = deks[field_class]
            token = tokens.get(name) or crypto.random_token(field_class)
            out_tokens[name] = token
            value_rows.append(
                {
                    "record_id": record_id,
                    "field_name": name,
                    "field_class": field_class,
                    "data_key_id": str(dek.id),
                    "ciphertext": crypto.seal_value(dek, tenant, record_id, name, value),
                    "token": token,
                }
            )
            if spec.searchable:
                ik = tkeys[(field_class, INDEX)]
                index_rows.append(self.index_row(tenant, record_id, name, value, ik))
        return value_rows, index_rows, out_tokens

    def index_row(
        self, tenant: str, record_id: str, name: str, value: str, ik: TenantKey
    ) -> dict[str, object]:
        """The blind-index row of one field's (canonical) value under index key ``ik``."""
        form = self._core.schema.index_form(name, value, trusted=True)
        return {
            "record_id": record_id,
            "field_name": name,
            "index_key_id": ik.id,
            "digest": crypto.blind_index(ik.key, name, form),
        }
