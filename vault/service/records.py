"""Records use cases: create, read, update, erase and find customer records.

Order of work in every write: validate everything, get keys (the only step that may call the key
server), seal every value and wrap every data key, and only then open one short transaction that
writes ciphertexts, wrapped data keys and blind indexes together. A failure at any step leaves
the database unchanged.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from vault import crypto
from vault.crypto import DataKey
from vault.crypto._encoding import uuid7
from vault.deadline import Deadline
from vault.errors import Conflict, DecryptionFailed, Erased, InvalidInput, NotFound
from vault.keys import KeyManager
from vault.schema import RecordSchema
from vault.service._keyring import DATA, INDEX, Keyring, TenantKey
from vault.service._types import (
    ErasureReceipt,
    FieldOutput,
    Output,
    RecordInput,
    RecordView,
    StoredRecord,
)
from vault.storage import Database, NewRecord, StoredValue, repo

log = logging.getLogger("vault.service.records")

TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
IDEMPOTENCY_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
MAX_BATCH = 1000
MAX_FIND = 1000
DEFAULT_FIND = 100


def check_tenant(tenant: str) -> str:
    if not tenant:
        raise InvalidInput("tenant", "is required")
    if not TENANT_RE.match(tenant):
        raise InvalidInput("tenant", "must be 1-64 characters of A-Z a-z 0-9 _ . - ")
    return tenant


def check_record_id(record_id: str) -> str:
    if not record_id:
        raise InvalidInput("record_id", "is required")
    try:
        parsed = uuid.UUID(record_id)
    except ValueError:
        raise InvalidInput("record_id", "is not a record id") from None
    if str(parsed) != record_id:
        raise InvalidInput("record_id", "is not a record id")
    return record_id


class RecordsService:
    """Records over envelope encryption. Thread-safe; one instance serves every request."""

    def __init__(
        self,
        db: Database,
        keys: KeyManager,
        schema: RecordSchema,
        *,
        keyring: Keyring | None = None,
    ) -> None:
        self.db = db
        self.keys = keys
        self.schema = schema
        self.keyring = keyring or Keyring(db, keys)

    # --- create ------------------------------------------------------------------------------

    def create(
        self,
        tenant: str,
        records: Sequence[RecordInput],
        *,
        deadline: Deadline,
        batch: bool = False,
    ) -> list[StoredRecord]:
        """Create records (all or nothing). Retried idempotency keys return the first result.

        Raises:
            InvalidInput: a tenant, field, value or idempotency key is invalid (names it).
            KeyServerUnavailable, DatabaseUnavailable: retryable; nothing was written.
        """
        check_tenant(tenant)
        if not records:
            raise InvalidInput("records", "at least one record is required")
        if len(records) > MAX_BATCH:
            raise InvalidInput("records", f"at most {MAX_BATCH} records per call")
        canonical: list[dict[str, str]] = []
        seen_keys: set[str] = set()
        for i, rec in enumerate(records):
            where = f"records[{i}]." if batch else ""
            if not rec.fields:
                raise InvalidInput(f"{where}fields", "at least one field is required")
            try:
                canonical.append(self.schema.validate(rec.fields))
            except InvalidInput as exc:
                raise InvalidInput(f"{where}fields.{exc.field}", exc.problem) from None
            key = rec.idempotency_key
            if key:
                if not IDEMPOTENCY_RE.match(key):
                    raise InvalidInput(
                        f"{where}idempotency_key", "must be 1-128 printable ASCII characters"
                    )
                if key in seen_keys:
                    raise InvalidInput(f"{where}idempotency_key", "repeated within the batch")
                seen_keys.add(key)
        for _attempt in range(2):
            try:
                return self._create(tenant, records, canonical, deadline=deadline)
            except IntegrityError:
                # Another call with the same idempotency key committed first: the next pass
                # finds it and returns its result.
                log.info("idempotency race on create; re-reading")
        raise Conflict("concurrent create with the same idempotency key")

    def _create(
        self,
        tenant: str,
        records: Sequence[RecordInput],
        canonical: list[dict[str, str]],
        *,
        deadline: Deadline,
    ) -> list[StoredRecord]:
        keys = [r.idempotency_key for r in records if r.idempotency_key]
        existing: dict[str, StoredRecord] = {}
        if keys:
            with self.db.begin(write=False) as conn:
                for key, rid in repo.records_by_idempotency_key(conn, tenant, keys).items():
                    row = repo.get_record(conn, tenant, rid)
                    if row is not None:
                        existing[key] = StoredRecord(
                            rid, row.version, repo.record_tokens(conn, tenant, rid)
                        )
        todo = [
            (i, values)
            for i, (rec, values) in enumerate(zip(records, canonical, strict=True))
            if not (rec.idempotency_key and rec.idempotency_key in existing)
        ]
        results: dict[int, StoredRecord] = {}
        if todo:
            classes = {self.schema.spec(name).field_class.value for _, v in todo for name in v}
            tkeys = self.keyring.current(tenant, classes, deadline=deadline)
            new_records: list[NewRecord] = []
            for i, values in todo:
                new, stored = self._seal_new(tenant, records[i].idempotency_key, values, tkeys)
                new_records.append(new)
                results[i] = stored
            with self.db.begin() as conn:
                repo.insert_records(conn, new_records, datetime.now(UTC))
        out = []
        for i, rec in enumerate(records):
            if i in results:
                out.append(results[i])
            else:
                assert rec.idempotency_key is not None
                out.append(existing[rec.idempotency_key])
        return out

    def _seal_new(
        self,
        tenant: str,
        idempotency_key: str | None,
        values: Mapping[str, str],
        tkeys: Mapping[tuple[str, str], TenantKey],
    ) -> tuple[NewRecord, StoredRecord]:
        record_id = str(uuid7())
        data_keys, dek_rows = self._new_data_keys(
            tenant, record_id, {self.schema.spec(n).field_class.value for n in values}, tkeys
        )
        value_rows, index_rows, tokens = self._seal_values(
            tenant, record_id, values, data_keys, tkeys, tokens={}
        )
        new = NewRecord(
            id=record_id,
            tenant=tenant,
            schema_version=self.schema.version,
            idempotency_key=idempotency_key,
            data_keys=dek_rows,
            values=value_rows,
            index_rows=index_rows,
        )
        return new, StoredRecord(record_id, 1, tokens)

    def _new_data_keys(
        self,
        tenant: str,
        record_id: str,
        classes: set[str],
        tkeys: Mapping[tuple[str, str], TenantKey],
    ) -> tuple[dict[str, DataKey], list[dict[str, object]]]:
        deks: dict[str, DataKey] = {}
        rows: list[dict[str, object]] = []
        for field_class in sorted(classes):
            tk = tkeys[(field_class, DATA)]
            dek = DataKey(uuid7(), crypto.new_key())
            wrapped = crypto.wrap_data_key(
                uuid.UUID(tk.id),
                tk.key,
                dek,
                tenant=tenant,
                record_id=record_id,
                field_class=field_class,
            )
            deks[field_class] = dek
            self.keys.data_keys.put(str(dek.id), dek.key)
            rows.append(
                {
                    "id": str(dek.id),
                    "tenant": tenant,
                    "record_id": record_id,
                    "field_class": field_class,
                    "tenant_key_id": tk.id,
                    "wrapped": wrapped,
                }
            )
        return deks, rows

    def _seal_values(
        self,
        tenant: str,
        record_id: str,
        values: Mapping[str, str],
        deks: Mapping[str, DataKey],
        tkeys: Mapping[tuple[str, str], TenantKey],
        *,
        tokens: Mapping[str, str],
    ) -> tuple[list[dict[str, object]], list[dict[str, object]], dict[str, str]]:
        value_rows: list[dict[str, object]] = []
        index_rows: list[dict[str, object]] = []
        out_tokens: dict[str, str] = {}
        for name, value in values.items():
            spec = self.schema.spec(name)
            field_class = spec.field_class.value
            dek = deks[field_class]
            token = tokens.get(name) or crypto.random_token(field_class)
            out_tokens[name] = token
            value_rows.append(
                {
                    "record_id": record_id,
                    "field_name": name,
                    "tenant": tenant,
                    "field_class": field_class,
                    "data_key_id": str(dek.id),
                    "ciphertext": crypto.seal_value(dek, tenant, record_id, name, value),
                    "token": token,
                }
            )
            if spec.searchable:
                ik = tkeys[(field_class, INDEX)]
                index_rows.append(
                    {
                        "tenant": tenant,
                        "record_id": record_id,
                        "field_name": name,
                        "index_key_id": ik.id,
                        "digest": crypto.blind_index(
                            ik.key, name, self.schema.index_form(name, value, trusted=True)
                        ),
                    }
                )
        return value_rows, index_rows, out_tokens

    # --- read --------------------------------------------------------------------------------

    def get(
        self,
        tenant: str,
        record_id: str,
        *,
        fields: Sequence[str] = (),
        reveal: bool,
        deadline: Deadline,
    ) -> RecordView:
        """Read a record: plaintext when ``reveal`` (the caller was authorized), tokens otherwise.

        Raises:
            NotFound: no such record in this tenant. Erased: it was crypto-shredded.
            DecryptionFailed: a stored value or key did not authenticate (tampering).
        """
        check_tenant(tenant)
        check_record_id(record_id)
        for name in fields:
            try:
                self.schema.spec(name)
            except InvalidInput as exc:
                raise InvalidInput(f"fields.{exc.field}", exc.problem) from None
        with self.db.begin(write=False) as conn:
            row, stored = repo.read_record(conn, tenant, record_id, list(fields) or None)
            erased = row is None and repo.is_erased(conn, tenant, record_id)
        if row is None:
            if erased:
                raise Erased("record erased")
            raise NotFound("record not found")
        if any(s.dek_erased for s in stored):
            raise Erased("record erased")
        if not reveal:
            return RecordView(
                record_id,
                row.version,
                {s.field_name: FieldOutput(Output.TOKEN, s.token) for s in stored},
            )
        plain = self._open(tenant, record_id, stored, deadline=deadline)
        return RecordView(
            record_id,
            row.version,
            {name: FieldOutput(Output.PLAIN, value) for name, value in plain.items()},
        )

    def _open(
        self, tenant: str, record_id: str, stored: Sequence[StoredValue], *, deadline: Deadline
    ) -> dict[str, str]:
        if any(s.dek_erased for s in stored):
            raise Erased("record erased")
        if any(s.wrapped_dek is None or s.tenant_key_id is None for s in stored):
            # the data key a value names is missing or belongs elsewhere: tampering, not erasure
            raise DecryptionFailed()
        deks: dict[str, DataKey] = {}
        need_tk: set[str] = set()
        for s in stored:
            if s.data_key_id not in deks:
                cached = self.keys.data_keys.get(s.data_key_id)
                if cached is not None:
                    deks[s.data_key_id] = DataKey(uuid.UUID(s.data_key_id), cached)
                else:
                    assert s.tenant_key_id is not None
                    need_tk.add(s.tenant_key_id)
        if need_tk:
            tks = self.keyring.by_ids(tenant, need_tk, deadline=deadline)
            for s in stored:
                if s.data_key_id in deks:
                    continue
                tk = tks.get(s.tenant_key_id or "")
                if tk is None or s.wrapped_dek is None:
                    raise DecryptionFailed()
                dek = crypto.unwrap_data_key(
                    uuid.UUID(tk.id),
                    tk.key,
                    uuid.UUID(s.data_key_id),
                    s.wrapped_dek,
                    tenant=tenant,
                    record_id=record_id,
                    field_class=s.field_class,
                )
                deks[s.data_key_id] = dek
                self.keys.data_keys.put(s.data_key_id, dek.key)
        return {
            s.field_name: crypto.open_value(
                deks[s.data_key_id], tenant, record_id, s.field_name, s.ciphertext
            )
            for s in stored
        }

    # --- update ------------------------------------------------------------------------------

    def update(
        self,
        tenant: str,
        record_id: str,
        *,
        expected_version: int,
        set_fields: Mapping[str, str],
        clear_fields: Sequence[str] = (),
        deadline: Deadline,
    ) -> StoredRecord:
        """Set and clear fields if the record is still at ``expected_version``.

        Raises:
            Conflict: the record changed since ``expected_version`` (the caller re-reads).
            NotFound, Erased, InvalidInput: as for :meth:`get` and :meth:`create`.
        """
        check_tenant(tenant)
        check_record_id(record_id)
        if expected_version < 1:
            raise InvalidInput("expected_version", "must be at least 1")
        if not set_fields and not clear_fields:
            raise InvalidInput("set_fields", "nothing to change")
        for name in clear_fields:
            try:
                self.schema.spec(name)
            except InvalidInput as exc:
                # exc.field is the name only when it looks like a field name (never a value)
                raise InvalidInput(f"clear_fields.{exc.field}", "unknown field") from None
            if name in set_fields:
                raise InvalidInput(f"clear_fields.{name}", "also in set_fields")
        try:
            values = self.schema.validate(set_fields) if set_fields else {}
        except InvalidInput as exc:
            raise InvalidInput(f"set_fields.{exc.field}", exc.problem) from None

        with self.db.begin(write=False) as conn:
            row = repo.get_record(conn, tenant, record_id)
            if row is None:
                if repo.is_erased(conn, tenant, record_id):
                    raise Erased("record erased")
                raise NotFound("record not found")
            if row.version != expected_version:
                raise Conflict("record version is not expected_version")
            existing_deks = repo.record_data_keys(conn, tenant, record_id)
            tokens = repo.record_tokens(conn, tenant, record_id)
        remaining = (set(tokens) - set(clear_fields)) | set(values)
        if not remaining:
            raise InvalidInput("clear_fields", "a record must keep at least one field")

        classes = {self.schema.spec(n).field_class.value for n in values}
        tkeys = self.keyring.current(tenant, classes, deadline=deadline) if classes else {}
        deks = self._existing_deks(tenant, record_id, existing_deks, classes, deadline=deadline)
        new_deks, new_dek_rows = self._new_data_keys(tenant, record_id, classes - set(deks), tkeys)
        deks.update(new_deks)
        value_rows, index_rows, new_tokens = self._seal_values(
            tenant, record_id, values, deks, tkeys, tokens=tokens
        )
        now = datetime.now(UTC)
        try:
            with self.db.begin() as conn:
                if not repo.bump_version(conn, tenant, record_id, expected_version, now):
                    if repo.is_erased(conn, tenant, record_id):
                        raise Erased("record erased")
                    raise Conflict("record version is not expected_version")
                repo.replace_values(
                    conn,
                    record_id,
                    new_data_keys=new_dek_rows,
                    values=value_rows,
                    index_rows=index_rows,
                    cleared=list(clear_fields),
                    now=now,
                )
        except IntegrityError:
            raise Conflict("record changed concurrently") from None
        kept = {n: t for n, t in tokens.items() if n not in clear_fields}
        kept.update(new_tokens)
        return StoredRecord(record_id, expected_version + 1, kept)

    def _existing_deks(
        self,
        tenant: str,
        record_id: str,
        existing: Mapping[str, tuple[str, bytes, str]],
        classes: set[str],
        *,
        deadline: Deadline,
    ) -> dict[str, DataKey]:
        out: dict[str, DataKey] = {}
        need = {}
        for field_class in classes & set(existing):
            dek_id, wrapped, tk_id = existing[field_class]
            cached = self.keys.data_keys.get(dek_id)
            if cached is not None:
                out[field_class] = DataKey(uuid.UUID(dek_id), cached)
            else:
                need[field_class] = (dek_id, wrapped, tk_id)
        if need:
            tks = self.keyring.by_ids(tenant, {v[2] for v in need.values()}, deadline=deadline)
            for field_class, (dek_id, wrapped, tk_id) in need.items():
                tk = tks.get(tk_id)
                if tk is None:
                    raise DecryptionFailed()
                dek = crypto.unwrap_data_key(
                    uuid.UUID(tk_id),
                    tk.key,
                    uuid.UUID(dek_id),
                    wrapped,
                    tenant=tenant,
                    record_id=record_id,
                    field_class=field_class,
                )
                self.keys.data_keys.put(dek_id, dek.key)
                out[field_class] = dek
        return out

    # --- erase -------------------------------------------------------------------------------

    def delete(self, tenant: str, record_id: str) -> ErasureReceipt:
        """Crypto-shred a record. Repeating it returns the first receipt.

        Raises:
            NotFound: no such record (and none erased) in this tenant.
        """
        check_tenant(tenant)
        check_record_id(record_id)
        now = datetime.now(UTC)
        with self.db.begin() as conn:
            row = repo.get_record(conn, tenant, record_id)
            if row is None:
                receipt = repo.erasure(conn, tenant, record_id)
                if receipt is None:
                    raise NotFound("record not found")
                erased_at, ids_json = receipt
                return ErasureReceipt(tenant, record_id, erased_at, tuple(json.loads(ids_json)))
            dek_ids = repo.erase_record(conn, tenant, record_id, now)
        for d in dek_ids:
            self.keys.data_keys.discard(d)
        return ErasureReceipt(tenant, record_id, now, tuple(dek_ids))

    # --- find --------------------------------------------------------------------------------

    def find(
        self, tenant: str, match: Mapping[str, str], *, limit: int = 0, deadline: Deadline
    ) -> list[str]:
        """Record ids whose searchable fields equal every given value (through blind indexes).

        Raises:
            InvalidInput: no condition, a field that is unknown or not searchable, a bad value.
        """
        check_tenant(tenant)
        if not match:
            raise InvalidInput("match", "at least one condition is required")
        if limit < 0 or limit > MAX_FIND:
            raise InvalidInput("limit", f"must be between 0 and {MAX_FIND}")
        for name in match:
            try:
                spec = self.schema.spec(name)
            except InvalidInput as exc:
                raise InvalidInput(f"match.{exc.field}", "unknown field") from None
            if not spec.searchable:
                raise InvalidInput(f"match.{name}", "field is not searchable")
        try:
            values = self.schema.validate(match)
        except InvalidInput as exc:
            raise InvalidInput(f"match.{exc.field}", exc.problem) from None
        conditions: dict[str, list[bytes]] = {}
        for name, value in values.items():
            field_class = self.schema.spec(name).field_class.value
            iks = self.keyring.index_keys(tenant, field_class, deadline=deadline)
            if not iks:
                return []
            form = self.schema.index_form(name, value)
            conditions[name] = [crypto.blind_index(ik.key, name, form) for ik in iks]
        with self.db.begin(write=False) as conn:
            return repo.find_records(conn, tenant, conditions, limit or DEFAULT_FIND)

    # --- health ------------------------------------------------------------------------------

    def dependencies_healthy(self) -> dict[str, bool]:
        return {"database": self.db.ping(), "key_server": self.keys.healthy()}
