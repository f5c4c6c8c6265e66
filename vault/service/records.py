"""Records use cases: create, read, update, erase and find customer records.

Order of work in every write: validate everything, get keys (the only step that may call the key
server), seal every value and wrap every data key, and only then open one short transaction that
writes ciphertexts, wrapped data keys and blind indexes together. A failure at any step leaves
the database unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nacl.exceptions import CryptoError
from nacl.public import PublicKey, SealedBox
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from vault import crypto
from vault.audit import AuditEntry, AuditEvent
from vault.crypto import DataKey
from vault.crypto._encoding import uuid7
from vault.deadline import Deadline
from vault.errors import (
    Conflict,
    ConsentRequired,
    DecryptionFailed,
    Erased,
    InvalidInput,
    NotFound,
    ResourceExhausted,
)
from vault.keys import KeyManager
from vault.policy import Action, FieldDecision, Policy, Purpose, Role, mask
from vault.schema import FieldClass, RecordSchema
from vault.service._keyring import DATA, INDEX, Keyring, TenantKey, new_data_key
from vault.service._normal import deterministic_form
from vault.service._types import (
    ConsentView,
    ErasureReceipt,
    Export,
    FieldOutput,
    Output,
    RecordInput,
    RecordView,
    StoredRecord,
)
from vault.service.access import Access, Caller
from vault.service.validators import (
    IDEMPOTENCY_RE,
    SOURCE_RE,
    check_record_id,
    check_scope,
    check_tenant,
    matches,
)
from vault.storage import Database, NewRecord, StoredValue, repo
from vault.storage import _access_repo as access_repo
from vault.storage import _tokens_repo as token_repo

log = logging.getLogger("vault.service.records")

_REVEALING = (Output.PLAIN, Output.MASKED)


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What a retention purge erased (or, in a dry run, would erase): whole records, and data
    keys of a class (in a dry run) or values (otherwise) past their class's period."""

    records: int
    values: int


@dataclass(frozen=True, slots=True)
class _Change:
    """What one UpdateRecord writes, made before its transaction."""

    new_dek_rows: list[dict[str, object]]
    value_rows: list[dict[str, object]]
    index_rows: list[dict[str, object]]
    #: linked tokens moved to a new data key: (token, new data key id, new ciphertext)
    resealed: list[tuple[token_repo.LinkedToken, str, bytes]]
    #: data keys destroyed (tombstoned) with the values they held
    destroyed: tuple[str, ...]
    tokens: dict[str, str]


def _seal_linked(
    dek: DataKey, tenant: str, record_id: str, token: token_repo.LinkedToken, value: str
) -> bytes:
    """A linked token's value sealed under its record's ``dek`` (AAD bound to the token)."""
    return crypto.seal_value(dek, tenant, record_id, f"token:{token.token}", value)


def _check_recipient(public_key: bytes) -> None:
    """An export's recipient key must be one a sealed box can be made to: 32 bytes, and not a
    low-order point (libsodium refuses those, as their shared secret is known to anyone).
    Checked by sealing nothing to it, before anything is read, counted or audited.

    Raises:
        InvalidInput: naming ``recipient_public_key``.
    """
    problem = "must be a 32-byte X25519 public key of full order"
    if len(public_key) != PublicKey.SIZE:
        raise InvalidInput("recipient_public_key", problem)
    try:
        SealedBox(PublicKey(public_key)).encrypt(b"")
    except (RuntimeError, CryptoError):
        raise InvalidInput("recipient_public_key", problem) from None


class _TakeGeneralPath(Exception):
    """The one-transaction read cannot serve this call; roll back and take the general path."""


MAX_BATCH = 1000
MAX_FIND = 1000
DEFAULT_FIND = 100


class RecordsService:
    """Records over envelope encryption. Thread-safe; one instance serves every request."""

    def __init__(
        self,
        db: Database,
        keys: KeyManager,
        schema: RecordSchema,
        access: Access,
        *,
        keyring: Keyring | None = None,
    ) -> None:
        self.db = db
        self.keys = keys
        self.schema = schema
        self.access = access
        self.audit = access.audit
        self.keyring = keyring or Keyring(db, keys)

    # --- create ------------------------------------------------------------------------------

    def create(
        self,
        caller: Caller,
        tenant: str,
        records: Sequence[RecordInput],
        *,
        deadline: Deadline,
        batch: bool = False,
    ) -> list[StoredRecord]:
        """Create records (all or nothing), one audit row per record written. Retried
        idempotency keys return the first result.

        Raises:
            PermissionDenied: the caller may not write records (audited).
            InvalidInput: a tenant, field, value or idempotency key is invalid (names it).
            KeyServerUnavailable, DatabaseUnavailable, AuditUnavailable: retryable; nothing
                was written.
        """
        check_tenant(tenant)
        _, role = self.access.authorize(
            caller, Action.RECORD_WRITE, tenant=tenant, deadline=deadline
        )
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
                if not matches(IDEMPOTENCY_RE, key):
                    raise InvalidInput(
                        f"{where}idempotency_key", "must be 1-128 printable ASCII characters"
                    )
                if key in seen_keys:
                    raise InvalidInput(f"{where}idempotency_key", "repeated within the batch")
                seen_keys.add(key)
        for _attempt in range(2):
            try:
                return self._create(
                    caller, role.name, tenant, records, canonical, deadline=deadline
                )
            except IntegrityError:
                # Another call with the same idempotency key committed first: the next pass
                # finds it and returns its result.
                log.info("idempotency race on create; re-reading")
        raise Conflict("concurrent create with the same idempotency key")

    def _create(
        self,
        caller: Caller,
        role: str,
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
            events: list[AuditEvent] = []
            for i, values in todo:
                new, stored = self._seal_new(tenant, records[i].idempotency_key, values, tkeys)
                new_records.append(new)
                results[i] = stored
                events.append(
                    self.access.event(
                        caller,
                        role,
                        Action.RECORD_WRITE,
                        tenant=tenant,
                        record_id=new.id,
                        field_classes=self._classes(values),
                    )
                )
            self.audit.prepare(deadline=deadline)
            with self.db.begin() as conn:
                repo.insert_records(conn, new_records, datetime.now(UTC))
                entries = self.audit.append(conn, events, deadline=deadline)
            self.audit.after_commit(entries)
        out = []
        for i, rec in enumerate(records):
            if i in results:
                out.append(results[i])
            else:
                assert rec.idempotency_key is not None
                out.append(existing[rec.idempotency_key])
        return out

    def _classes(self, names: Mapping[str, object] | Sequence[str]) -> list[str]:
        return sorted({self.schema.spec(n).field_class.value for n in names})

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
            dek, row = new_data_key(tenant, record_id, field_class, tkeys[(field_class, DATA)])
            deks[field_class] = dek
            self.keys.data_keys.put(str(dek.id), dek.key)
            rows.append(row)
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
        caller: Caller,
        tenant: str,
        record_id: str,
        *,
        fields: Sequence[str] = (),
        token_scope: str = "",
        deadline: Deadline,
    ) -> RecordView:
        """Read a record, field by field exactly as the policy gives this caller's role for the
        stated purpose: plain, masked, token or omitted (with a reason). Plaintext leaves only
        after its audit row and the rate-limit count have committed.

        With ``token_scope``, token outputs are deterministic tokens of that scope (computed
        inside the service from the values, which do not leave it), so tokenized views of many
        records join on tokens.

        Raises:
            PermissionDenied: action or purpose not allowed (audited).
            InvalidInput: bad ids or field names; a purpose missing (when the role could see
                plaintext or masked values) or unknown.
            NotFound: no such record in this tenant. Erased: it was crypto-shredded.
            ConsentRequired: a consent-bound purpose the customer did not consent to (audited).
            ResourceExhausted: the role's plaintext limit is reached (audited).
            DecryptionFailed: a stored value or key did not authenticate (tampering).
            Unavailable: key server, database or audit log unreachable; nothing revealed.
        """
        check_tenant(tenant)
        check_record_id(record_id)
        for name in fields:
            try:
                self.schema.spec(name)
            except InvalidInput as exc:
                raise InvalidInput(f"fields.{exc.field}", exc.problem) from None
        check_scope(token_scope, "token_scope")
        policy, role = self.access.authorize(
            caller, Action.RECORD_READ, tenant=tenant, record_id=record_id, deadline=deadline
        )
        purpose = self.access.check_purpose(
            policy,
            caller,
            role,
            Action.RECORD_READ,
            required=role.may_reveal,
            tenant=tenant,
            record_id=record_id,
            deadline=deadline,
        )
        if role.may_reveal and not token_scope:
            fast = self._get_in_one_transaction(
                caller, policy, role, purpose, tenant, record_id, fields, deadline=deadline
            )
            if fast is not None:
                return fast
        with self.db.begin(write=False) as conn:
            row, stored = repo.read_record(conn, tenant, record_id, list(fields) or None)
            erased = row is None and repo.is_erased(conn, tenant, record_id)
            consented = (
                row is None
                or purpose is None
                or self.access.has_consent(conn, tenant, record_id, purpose)
            )
        if row is None:
            if erased:
                raise Erased("record erased")
            raise NotFound("record not found")
        if any(s.dek_erased for s in stored):
            raise Erased("record erased")
        if not consented:
            # refused whatever the outputs: even stable tokens of a customer who did not
            # consent must not flow into, say, a training set
            assert purpose is not None
            raise self.access.deny_consent(
                caller,
                role.name,
                Action.RECORD_READ,
                purpose,
                tenant=tenant,
                record_id=record_id,
                deadline=deadline,
            )
        decisions = policy.outputs(
            role,
            purpose.name if purpose else None,
            {s.field_name: FieldClass(s.field_class) for s in stored},
        )
        revealed = [s for s in stored if decisions[s.field_name].output in _REVEALING]
        scoped: dict[str, str] = {}
        if token_scope:
            scoped = self._scoped_tokens(
                tenant,
                record_id,
                [s for s in stored if decisions[s.field_name].output is Output.TOKEN],
                token_scope,
                deadline=deadline,
            )
        if not revealed:
            return RecordView(record_id, row.version, self._render(stored, decisions, {}, scoped))
        plain = self._open(tenant, record_id, revealed, deadline=deadline)
        self._commit_reveal(
            caller,
            role,
            Action.RECORD_READ,
            purpose,
            tenant,
            record_id,
            revealed,
            decisions,
            deadline=deadline,
        )
        return RecordView(record_id, row.version, self._render(stored, decisions, plain, scoped))

    def _scoped_tokens(
        self,
        tenant: str,
        record_id: str,
        stored: Sequence[StoredValue],
        scope: str,
        *,
        deadline: Deadline,
    ) -> dict[str, str]:
        """Deterministic view tokens of ``scope`` for these fields: computed from the values,
        which stay inside the service, under a label Tokenize never uses (so no caller can
        test a guessed value against them)."""
        if not stored:
            return {}
        values = self._open(tenant, record_id, stored, deadline=deadline)
        ikeys = self.keyring.current(tenant, {s.field_class for s in stored}, deadline=deadline)
        out: dict[str, str] = {}
        for s in stored:
            spec = self.schema.spec(s.field_name)
            out[s.field_name] = crypto.deterministic_token(
                ikeys[(s.field_class, INDEX)].key,
                s.field_class,
                scope,
                deterministic_form(spec.field_class, values[s.field_name]),
                view=True,
            )
        return out

    def _commit_reveal(
        self,
        caller: Caller,
        role: Role,
        action: Action,
        purpose: Purpose | None,
        tenant: str,
        record_id: str,
        revealed: Sequence[StoredValue],
        decisions: Mapping[str, FieldDecision],
        *,
        deadline: Deadline,
    ) -> None:
        """Commit what must precede a reveal: consent (re-checked for a consent-bound purpose),
        the rate-limit count and the audit row, in one transaction. A refusal is audited.

        Raises:
            ConsentRequired, ResourceExhausted: refused (audited); nothing was counted.
            Unavailable: the audit row or the count could not be written; reveal nothing.
        """
        classes = sorted({s.field_class for s in revealed})
        n_plain = sum(1 for s in revealed if decisions[s.field_name].output is Output.PLAIN)
        event = self.access.event(
            caller, role.name, action, tenant=tenant, record_id=record_id, field_classes=classes
        )
        self.audit.prepare(deadline=deadline)
        try:
            with self.db.begin() as conn:
                if purpose is not None and not self.access.has_consent(
                    conn, tenant, record_id, purpose
                ):
                    raise ConsentRequired(f"no consent for purpose {purpose.name}")
                self.access.charge(conn, caller, role, n_plain)
                entries = self.audit.append(conn, [event], deadline=deadline)
        except ConsentRequired as exc:
            raise self.access.deny(
                caller,
                role.name,
                action,
                exc,
                tenant=tenant,
                record_id=record_id,
                field_classes=classes,
                deadline=deadline,
            ) from None
        except ResourceExhausted as exc:
            raise self.access.deny(
                caller,
                role.name,
                "limit.exceeded",
                exc,
                tenant=tenant,
                record_id=record_id,
                field_classes=classes,
                deadline=deadline,
            ) from None
        self.audit.after_commit(entries)

    def _get_in_one_transaction(
        self,
        caller: Caller,
        policy: Policy,
        role: Role,
        purpose: Purpose | None,
        tenant: str,
        record_id: str,
        fields: Sequence[str],
        *,
        deadline: Deadline,
    ) -> RecordView | None:
        """The common case of a reveal in ONE write transaction: read, consent, limit, audit.

        Taken only when every data key needed is already cached (so no key-server call runs
        while the transaction holds the write lock) and nothing needs refusing; anything else
        returns None and :meth:`get` takes its general path, which also audits refusals. Saves
        a whole read transaction on the hottest path.
        """
        self.audit.prepare(deadline=deadline)
        try:
            with self.db.begin() as conn:
                row, stored = repo.read_record(conn, tenant, record_id, list(fields) or None)
                if row is None or any(s.dek_erased for s in stored):
                    raise _TakeGeneralPath
                if purpose is not None and not self.access.has_consent(
                    conn, tenant, record_id, purpose
                ):
                    raise _TakeGeneralPath
                decisions = policy.outputs(
                    role,
                    purpose.name if purpose else None,
                    {s.field_name: FieldClass(s.field_class) for s in stored},
                )
                revealed = [s for s in stored if decisions[s.field_name].output in _REVEALING]
                plain = self._open_cached(tenant, record_id, revealed)
                if plain is None:
                    raise _TakeGeneralPath
                entries: list[AuditEntry] = []
                if revealed:
                    n_plain = sum(
                        1 for s in revealed if decisions[s.field_name].output is Output.PLAIN
                    )
                    self.access.charge(conn, caller, role, n_plain)
                    event = self.access.event(
                        caller,
                        role.name,
                        Action.RECORD_READ,
                        tenant=tenant,
                        record_id=record_id,
                        field_classes=sorted({s.field_class for s in revealed}),
                    )
                    entries = self.audit.append(conn, [event], deadline=deadline)
        except (_TakeGeneralPath, ResourceExhausted):
            return None
        self.audit.after_commit(entries)
        return RecordView(record_id, row.version, self._render(stored, decisions, plain))

    def _open_cached(
        self, tenant: str, record_id: str, stored: Sequence[StoredValue]
    ) -> dict[str, str] | None:
        """Decrypt with cached data keys only; None when any key is not in the cache."""
        out: dict[str, str] = {}
        for s in stored:
            if s.wrapped_dek is None or s.tenant_key_id is None:
                return None
            key = self.keys.data_keys.get(s.data_key_id)
            if key is None:
                return None
            dek = DataKey(uuid.UUID(s.data_key_id), key)
            out[s.field_name] = crypto.open_value(
                dek, tenant, record_id, s.field_name, s.ciphertext
            )
        return out

    def _render(
        self,
        stored: Sequence[StoredValue],
        decisions: Mapping[str, FieldDecision],
        plain: Mapping[str, str],
        scoped: Mapping[str, str] | None = None,
    ) -> dict[str, FieldOutput]:
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
            if need_tk - set(tks):
                # `cvault keys rotate-tenant` re-wrapped these data keys under a new tenant-key
                # version and destroyed the old one after they were read: read them again
                stored = self._rewrapped(tenant, record_id, stored)
                tks = self.keyring.by_ids(
                    tenant, {s.tenant_key_id or "" for s in stored}, deadline=deadline
                )
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

    def _rewrapped(
        self, tenant: str, record_id: str, stored: Sequence[StoredValue]
    ) -> list[StoredValue]:
        """``stored`` with each data key's wrapped form and tenant key as they are now."""
        with self.db.begin(write=False) as conn:
            now = {
                dek: (w, tk)
                for dek, w, tk in repo.record_data_keys(conn, tenant, record_id).values()
            }
        return [
            dataclasses.replace(
                s, wrapped_dek=now[s.data_key_id][0], tenant_key_id=now[s.data_key_id][1]
            )
            if s.data_key_id in now
            else s
            for s in stored
        ]

    # --- update ------------------------------------------------------------------------------

    def update(
        self,
        caller: Caller,
        tenant: str,
        record_id: str,
        *,
        expected_version: int,
        set_fields: Mapping[str, str],
        clear_fields: Sequence[str] = (),
        deadline: Deadline,
    ) -> StoredRecord:
        """Set and clear fields if the record is still at ``expected_version``.

        A value that is cleared or replaced is crypto-shredded, like an erased record: the data
        key of its class is destroyed (tombstoned) in the same transaction, and what remains of
        that class (the record's other fields of the class, linked tokens whose value was not
        one of those removed) is re-sealed under a new data key. So a backup taken before the
        update cannot be opened with a live key. The ids destroyed are returned and audited.

        Raises:
            Conflict: the record changed since ``expected_version`` (the caller re-reads).
            NotFound, Erased, InvalidInput: as for :meth:`get` and :meth:`create`.
        """
        check_tenant(tenant)
        check_record_id(record_id)
        _, role = self.access.authorize(
            caller, Action.RECORD_WRITE, tenant=tenant, record_id=record_id, deadline=deadline
        )
        values = self._update_input(expected_version, set_fields, clear_fields)
        change = self._read_for_update(
            tenant, record_id, expected_version, values, clear_fields, deadline=deadline
        )
        event = self.access.event(
            caller,
            role.name,
            Action.RECORD_WRITE,
            tenant=tenant,
            record_id=record_id,
            field_classes=self._classes([*values, *clear_fields]),
            reason="data_keys_destroyed" if change.destroyed else "",
        )
        now = datetime.now(UTC)
        self.audit.prepare(deadline=deadline)
        try:
            with self.db.begin() as conn:
                if not repo.bump_version(conn, tenant, record_id, expected_version, now):
                    if repo.is_erased(conn, tenant, record_id):
                        raise Erased("record erased")
                    raise Conflict("record version is not expected_version")
                # the old keys go first: a record holds one data key per class
                repo.destroy_data_keys(conn, tenant, record_id, change.destroyed, now)
                repo.replace_values(
                    conn,
                    record_id,
                    new_data_keys=change.new_dek_rows,
                    values=change.value_rows,
                    index_rows=change.index_rows,
                    cleared=list(clear_fields),
                    now=now,
                )
                for t, dek_id, ct in change.resealed:
                    token_repo.reseal_token(conn, tenant, t, dek_id, ct)
                entries = self.audit.append(conn, [event], deadline=deadline)
        except IntegrityError:
            raise Conflict("record changed concurrently") from None
        self.audit.after_commit(entries)
        for d in change.destroyed:
            self.keys.data_keys.discard(d)
        return StoredRecord(record_id, expected_version + 1, change.tokens, change.destroyed)

    def _update_input(
        self,
        expected_version: int,
        set_fields: Mapping[str, str],
        clear_fields: Sequence[str],
    ) -> dict[str, str]:
        """The canonical values to set, once the request is known to be well formed."""
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
            return self.schema.validate(set_fields) if set_fields else {}
        except InvalidInput as exc:
            raise InvalidInput(f"set_fields.{exc.field}", exc.problem) from None

    def _read_for_update(
        self,
        tenant: str,
        record_id: str,
        expected_version: int,
        values: Mapping[str, str],
        clear_fields: Sequence[str],
        *,
        deadline: Deadline,
    ) -> _Change:
        """Everything an update writes, sealed before its transaction (CPU work outside it).

        A class with a value cleared or replaced (``touched``) loses its data key; what is left
        of it (other fields, linked tokens holding none of the removed values) moves to a new
        one. Adding a field to a class no value left keeps the class's key.
        """
        cls = self._class_of
        with self.db.begin(write=False) as conn:
            row = repo.get_record(conn, tenant, record_id)
            if row is None:
                if repo.is_erased(conn, tenant, record_id):
                    raise Erased("record erased")
                raise NotFound("record not found")
            if row.version != expected_version:
                raise Conflict("record version is not expected_version")
            existing = repo.record_data_keys(conn, tenant, record_id)
            tokens = repo.record_tokens(conn, tenant, record_id)
            removed = [n for n in [*values, *clear_fields] if n in tokens]
            touched = {cls(n) for n in removed}
            _, stored = repo.read_record(
                conn, tenant, record_id, [n for n in tokens if cls(n) in touched]
            )
            linked = token_repo.tokens_of_record(conn, tenant, record_id) if touched else []
        if not (set(tokens) - set(clear_fields)) | set(values):
            raise InvalidInput("clear_fields", "a record must keep at least one field")
        old = self._open(tenant, record_id, stored, deadline=deadline) if stored else {}
        kept = {n: v for n, v in old.items() if n not in removed}
        old_deks = self._existing_deks(
            tenant, record_id, existing, touched & set(existing), deadline=deadline
        )
        keep_tokens = self._linked_to_keep(
            tenant, record_id, linked, old_deks, [(cls(n), old[n]) for n in removed if n in old]
        )
        classes = {cls(n) for n in values}
        left = classes | {cls(n) for n in kept} | {t.field_class for t, _ in keep_tokens}
        fresh = (classes - set(existing)) | (touched & left)
        tkeys = self.keyring.current(tenant, left, deadline=deadline) if left else {}
        deks = self._existing_deks(tenant, record_id, existing, classes - fresh, deadline=deadline)
        new_deks, new_dek_rows = self._new_data_keys(tenant, record_id, fresh, tkeys)
        deks.update(new_deks)
        value_rows, index_rows, new_tokens = self._seal_values(
            tenant, record_id, {**kept, **values}, deks, tkeys, tokens=tokens
        )
        resealed = [
            (
                t,
                str(deks[t.field_class].id),
                _seal_linked(deks[t.field_class], tenant, record_id, t, v),
            )
            for t, v in keep_tokens
        ]
        out_tokens = {n: t for n, t in tokens.items() if n not in clear_fields} | new_tokens
        destroyed = tuple(sorted(existing[c][0] for c in touched if c in existing))
        return _Change(new_dek_rows, value_rows, index_rows, resealed, destroyed, out_tokens)

    def _class_of(self, name: str) -> str:
        return self.schema.spec(name).field_class.value

    @staticmethod
    def _linked_to_keep(
        tenant: str,
        record_id: str,
        linked: Sequence[token_repo.LinkedToken],
        old_deks: Mapping[str, DataKey],
        removed: Sequence[tuple[str, str]],
    ) -> list[tuple[token_repo.LinkedToken, str]]:
        """Linked tokens sealed under a data key about to be destroyed, with their values,
        except those holding a value the update removes, compared as deterministic tokens
        compare them (an email case-insensitively): they go with it and reveal as erased.
        ``removed``: (field class, value) of each value removed."""
        by_id = {str(d.id): d for d in old_deks.values()}
        gone = {(c, deterministic_form(FieldClass(c), v)) for c, v in removed}
        out: list[tuple[token_repo.LinkedToken, str]] = []
        for t in linked:
            dek = by_id.get(t.data_key_id)
            if dek is None:
                continue  # not under a key this update destroys
            value = crypto.open_value(dek, tenant, record_id, f"token:{t.token}", t.ciphertext)
            if (t.field_class, deterministic_form(FieldClass(t.field_class), value)) not in gone:
                out.append((t, value))
        return out

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

    # --- rekey (operator) ---------------------------------------------------------------------

    def rekey(
        self,
        tenant: str,
        record_id: str,
        *,
        events: Sequence[AuditEvent] = (),
        deadline: Deadline,
    ) -> list[str]:
        """Re-encrypt a record's values, and the values of tokens linked to it, under new data
        keys, then destroy the old ones (tombstoned: a restored copy of an old key row is
        refused). For a suspected data-key exposure. ``events`` (the operator's audit rows)
        are appended in the same transaction. Returns the new data-key ids.

        Raises:
            NotFound, Erased: no such live record.
            Conflict: the record changed meanwhile (run again).
        """
        check_tenant(tenant)
        check_record_id(record_id)
        with self.db.begin(write=False) as conn:
            row, stored = repo.read_record(conn, tenant, record_id)
            existing = repo.record_data_keys(conn, tenant, record_id)
            linked = token_repo.tokens_of_record(conn, tenant, record_id)
            erased = row is None and repo.is_erased(conn, tenant, record_id)
        if row is None:
            raise Erased("record erased") if erased else NotFound("record not found")
        plain = self._open(tenant, record_id, stored, deadline=deadline)
        classes = set(existing)
        old = self._existing_deks(tenant, record_id, existing, classes, deadline=deadline)
        old_by_id = {str(d.id): d for d in old.values()}
        tkeys = self.keyring.current(tenant, classes, deadline=deadline)
        new, dek_rows = self._new_data_keys(tenant, record_id, classes, tkeys)
        value_rows, index_rows, _ = self._seal_values(
            tenant,
            record_id,
            plain,
            new,
            tkeys,
            tokens={s.field_name: s.token for s in stored},
        )
        resealed: list[tuple[token_repo.LinkedToken, str, bytes]] = []
        for t in linked:
            dek = old_by_id.get(t.data_key_id)
            if dek is None:
                continue  # sealed under a key this record no longer has: nothing to re-seal
            field = f"token:{t.token}"
            value = crypto.open_value(dek, tenant, record_id, field, t.ciphertext)
            target = new[t.field_class]
            resealed.append(
                (t, str(target.id), crypto.seal_value(target, tenant, record_id, field, value))
            )
        now = datetime.now(UTC)
        self.audit.prepare(deadline=deadline)
        with self.db.begin() as conn:
            if not repo.bump_version(conn, tenant, record_id, row.version, now):
                raise Conflict("record changed while it was re-keyed; run again")
            repo.destroy_data_keys(conn, tenant, record_id, sorted(old_by_id), now)
            repo.replace_values(
                conn,
                record_id,
                new_data_keys=dek_rows,
                values=value_rows,
                index_rows=index_rows,
                cleared=[],
                now=now,
            )
            for t, dek_id, ct in resealed:
                token_repo.reseal_token(conn, tenant, t, dek_id, ct)
            entries = self.audit.append(conn, list(events), deadline=deadline)
        self.audit.after_commit(entries)
        for d in old_by_id:
            self.keys.data_keys.discard(d)
        return sorted(str(d.id) for d in new.values())

    # --- index-key rotation (operator) --------------------------------------------------------

    def index_rows(
        self,
        tenant: str,
        record_id: str,
        names: Sequence[str],
        ik: TenantKey,
        *,
        deadline: Deadline,
    ) -> list[dict[str, object]]:
        """Blind-index rows of these fields of a record under index key ``ik`` (computed from
        the decrypted values, which stay here); none when the record is gone."""
        with self.db.begin(write=False) as conn:
            row, stored = repo.read_record(conn, tenant, record_id, list(names))
        if row is None or not stored or any(s.dek_erased for s in stored):
            return []
        plain = self._open(tenant, record_id, stored, deadline=deadline)
        return [
            {
                "tenant": tenant,
                "record_id": record_id,
                "field_name": name,
                "index_key_id": ik.id,
                "digest": crypto.blind_index(
                    ik.key, name, self.schema.index_form(name, value, trusted=True)
                ),
            }
            for name, value in plain.items()
        ]

    # --- retention (operator) ----------------------------------------------------------------

    def purge_expired(
        self,
        *,
        now: datetime,
        event: Callable[[str, str, str], AuditEvent],
        batch: int = 100,
        dry_run: bool = False,
    ) -> PurgeReport:
        """Crypto-shred what the schema's retention says is past it: whole records not written
        for ``record_retention_days`` (the same erasure as DeleteRecord, with its tombstones),
        and, per class with a period, that class's values (its data key destroyed and
        tombstoned, the fields dropped; the record lives on with a new version). ``batch`` per
        transaction; each erasure is audited with ``event(action, tenant, record_id)``.
        ``dry_run`` only counts."""
        records = values = 0
        if self.schema.record_retention_days is not None:
            before = now - timedelta(days=self.schema.record_retention_days)
            while True:
                with self.db.begin(write=False) as conn:
                    due = repo.records_not_updated_since(
                        conn, before, batch if not dry_run else 10**9
                    )
                if dry_run:
                    records = len(due)
                    break
                if not due:
                    break
                self.audit.prepare(deadline=Deadline.after(60))
                with self.db.begin() as conn:
                    shredded: list[str] = []
                    for tenant, rid in due:
                        shredded += repo.erase_record(conn, tenant, rid, now)
                        access_repo.erase_consents(conn, rid)
                    entries = self.audit.append(
                        conn,
                        [event("retention.erase", t, r) for t, r in due],
                        deadline=Deadline.after(60),
                    )
                self.audit.after_commit(entries)
                for d in shredded:
                    self.keys.data_keys.discard(d)
                records += len(due)
        for field_class, days in sorted(self.schema.class_retention_days.items()):
            before = now - timedelta(days=days)
            while True:
                with self.db.begin(write=False) as conn:
                    keys = repo.class_keys_not_updated_since(
                        conn, field_class.value, before, batch if not dry_run else 10**9
                    )
                if dry_run:
                    values += len(keys)
                    break
                if not keys:
                    break
                self.audit.prepare(deadline=Deadline.after(60))
                with self.db.begin() as conn:
                    for tenant, rid, dek in keys:
                        values += repo.shred_class_values(conn, tenant, rid, dek, now)
                        repo.touch_record(conn, tenant, rid, now)
                    entries = self.audit.append(
                        conn,
                        [event(f"retention.shred.{field_class.value}", t, r) for t, r, _ in keys],
                        deadline=Deadline.after(60),
                    )
                self.audit.after_commit(entries)
                for _, _, dek in keys:
                    self.keys.data_keys.discard(dek)
        return PurgeReport(records, values)

    # --- erase -------------------------------------------------------------------------------

    def delete(
        self, caller: Caller, tenant: str, record_id: str, *, deadline: Deadline
    ) -> ErasureReceipt:
        """Crypto-shred a record (audited). Repeating it returns the first receipt.

        Raises:
            PermissionDenied: the caller may not erase records (audited).
            NotFound: no such record (and none erased) in this tenant.
        """
        check_tenant(tenant)
        check_record_id(record_id)
        _, role = self.access.authorize(
            caller, Action.RECORD_ERASE, tenant=tenant, record_id=record_id, deadline=deadline
        )
        now = datetime.now(UTC)
        event = self.access.event(
            caller, role.name, Action.RECORD_ERASE, tenant=tenant, record_id=record_id
        )
        self.audit.prepare(deadline=deadline)
        entries: list[AuditEntry] = []
        with self.db.begin() as conn:
            row = repo.get_record(conn, tenant, record_id)
            if row is None:
                receipt = repo.erasure(conn, tenant, record_id)
                if receipt is None:
                    raise NotFound("record not found")
                erased_at, ids_json = receipt
                return ErasureReceipt(tenant, record_id, erased_at, tuple(json.loads(ids_json)))
            dek_ids = repo.erase_record(conn, tenant, record_id, now)
            access_repo.erase_consents(conn, record_id)
            entries = self.audit.append(conn, [event], deadline=deadline)
        self.audit.after_commit(entries)
        for d in dek_ids:
            self.keys.data_keys.discard(d)
        return ErasureReceipt(tenant, record_id, now, tuple(dek_ids))

    # --- find --------------------------------------------------------------------------------

    def find(
        self,
        caller: Caller,
        tenant: str,
        match: Mapping[str, str],
        *,
        limit: int = 0,
        deadline: Deadline,
    ) -> list[str]:
        """Record ids whose searchable fields equal every given value (through blind indexes).

        Raises:
            InvalidInput: no condition, a field that is unknown or not searchable, a bad value.
        """
        check_tenant(tenant)
        self.access.authorize(caller, Action.RECORD_FIND, tenant=tenant, deadline=deadline)
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

    # --- consent ---------------------------------------------------------------------------

    def get_consent(
        self, caller: Caller, tenant: str, record_id: str, *, deadline: Deadline
    ) -> ConsentView:
        """The purposes the customer consents to (no customer values: purpose names only)."""
        check_tenant(tenant)
        check_record_id(record_id)
        self.access.authorize(
            caller, Action.RECORD_READ, tenant=tenant, record_id=record_id, deadline=deadline
        )
        with self.db.begin(write=False) as conn:
            self._live_record(conn, tenant, record_id)
            state = access_repo.get_consent(conn, tenant, record_id)
        return ConsentView(
            tenant,
            record_id,
            state.version,
            tuple(sorted(state.purposes)),
            state.source,
            state.updated_at,
        )

    def update_consent(
        self,
        caller: Caller,
        tenant: str,
        record_id: str,
        purposes: Sequence[str],
        *,
        expected_version: int,
        source: str,
        deadline: Deadline,
    ) -> ConsentView:
        """Replace the consented purposes (versioned like records; audited).

        Raises:
            InvalidInput: an unknown purpose, a bad source or version.
            Conflict: the consent changed since ``expected_version``.
        """
        check_tenant(tenant)
        check_record_id(record_id)
        policy, role = self.access.authorize(
            caller, Action.CONSENT_WRITE, tenant=tenant, record_id=record_id, deadline=deadline
        )
        if expected_version < 0:
            raise InvalidInput("expected_version", "must be 0 or more")
        if not matches(SOURCE_RE, source):
            raise InvalidInput("source", "must be 1-128 printable ASCII characters")
        for i, name in enumerate(purposes):
            if policy.purpose(name) is None:
                raise InvalidInput(f"purposes[{i}]", "not a purpose of the policy")
        event = self.access.event(
            caller,
            role.name,
            Action.CONSENT_WRITE,
            tenant=tenant,
            record_id=record_id,
            purpose="",
        )
        self.audit.prepare(deadline=deadline)
        with self.db.begin() as conn:
            self._live_record(conn, tenant, record_id)
            state = access_repo.set_consent(
                conn,
                tenant,
                record_id,
                purposes,
                expected_version=expected_version,
                source=source,
                now=datetime.now(UTC),
            )
            if state is None:
                raise Conflict("consent version is not expected_version")
            entries = self.audit.append(conn, [event], deadline=deadline)
        self.audit.after_commit(entries)
        return ConsentView(
            tenant,
            record_id,
            state.version,
            tuple(sorted(state.purposes)),
            state.source,
            state.updated_at,
        )

    @staticmethod
    def _live_record(conn: Connection, tenant: str, record_id: str) -> None:
        if repo.get_record(conn, tenant, record_id) is None:
            if repo.is_erased(conn, tenant, record_id):
                raise Erased("record erased")
            raise NotFound("record not found")

    # --- data subject access --------------------------------------------------------------

    def export(
        self,
        caller: Caller,
        tenant: str,
        record_id: str,
        *,
        recipient_public_key: bytes = b"",
        deadline: Deadline,
    ) -> Export:
        """Everything held about one customer: fields (as the policy gives them), consents and
        access history, as JSON; sealed to ``recipient_public_key`` (X25519) when given.

        Raises:
            InvalidInput: a public key that is not 32 bytes; a missing or unknown purpose.
            PermissionDenied, NotFound, Erased, ResourceExhausted, Unavailable: as for get.
        """
        check_tenant(tenant)
        check_record_id(record_id)
        if recipient_public_key:
            _check_recipient(recipient_public_key)
        policy, role = self.access.authorize(
            caller, Action.EXPORT, tenant=tenant, record_id=record_id, deadline=deadline
        )
        purpose = self.access.check_purpose(
            policy,
            caller,
            role,
            Action.EXPORT,
            required=True,
            tenant=tenant,
            record_id=record_id,
            deadline=deadline,
        )
        assert purpose is not None
        with self.db.begin(write=False) as conn:
            row, stored = repo.read_record(conn, tenant, record_id)
            self._live_record(conn, tenant, record_id)
            consent = access_repo.get_consent(conn, tenant, record_id)
            history = access_repo.consent_history(conn, tenant, record_id)
        assert row is not None
        if any(s.dek_erased for s in stored):
            raise Erased("record erased")
        if purpose.consent_required and purpose.name not in consent.purposes:
            raise self.access.deny_consent(
                caller,
                role.name,
                Action.EXPORT,
                purpose,
                tenant=tenant,
                record_id=record_id,
                deadline=deadline,
            )
        decisions = policy.outputs(
            role, purpose.name, {s.field_name: FieldClass(s.field_class) for s in stored}
        )
        revealed = [s for s in stored if decisions[s.field_name].output in _REVEALING]
        plain = self._open(tenant, record_id, revealed, deadline=deadline) if revealed else {}
        rendered = self._render(stored, decisions, plain)
        access_log = self.audit.query(tenant, record_id, deadline=deadline)
        document = {
            "format": "cvault-dsar-export/1",
            "tenant": tenant,
            "record_id": record_id,
            "version": row.version,
            "fields": {
                name: {
                    "class": next(s.field_class for s in stored if s.field_name == name),
                    "output": f.output.value,
                    "value": f.value,
                }
                for name, f in rendered.items()
            },
            "consent": {
                "version": consent.version,
                "purposes": sorted(consent.purposes),
                "source": consent.source,
                "updated_at": consent.updated_at.isoformat() if consent.updated_at else None,
                "history": [
                    {
                        "version": h.version,
                        "purposes": sorted(h.purposes),
                        "source": h.source,
                        "changed_at": h.updated_at.isoformat() if h.updated_at else None,
                    }
                    for h in history
                ],
            },
            "access_history": [
                {
                    "time": e.time.isoformat(),
                    "principal": e.principal,
                    "role": e.role,
                    "action": e.action,
                    "purpose": e.purpose,
                    "field_classes": list(e.field_classes),
                    "outcome": e.outcome,
                }
                for e in access_log
            ],
        }
        raw = json.dumps(document, sort_keys=True).encode("utf-8")
        # consent was checked above, before anything was decrypted
        self._commit_reveal(
            caller,
            role,
            Action.EXPORT,
            None,
            tenant,
            record_id,
            revealed,
            decisions,
            deadline=deadline,
        )
        if recipient_public_key:
            sealed = SealedBox(PublicKey(recipient_public_key)).encrypt(raw)
            return Export("application/json+nacl-sealedbox", bytes(sealed))
        return Export("application/json", raw)

    # --- audit ---------------------------------------------------------------------------

    def query_access(
        self, caller: Caller, tenant: str, record_id: str, *, limit: int = 0, deadline: Deadline
    ) -> list[AuditEntry]:
        """Who saw this customer's data, when and why (newest first). The query is audited."""
        check_tenant(tenant)
        check_record_id(record_id)
        if limit < 0 or limit > MAX_FIND:
            raise InvalidInput("limit", f"must be between 0 and {MAX_FIND}")
        policy, role = self.access.authorize(
            caller, Action.AUDIT_READ, tenant=tenant, record_id=record_id, deadline=deadline
        )
        self.access.check_purpose(
            policy,
            caller,
            role,
            Action.AUDIT_READ,
            required=False,
            tenant=tenant,
            record_id=record_id,
            deadline=deadline,
        )
        entries = self.audit.query(
            tenant, record_id, deadline=deadline, limit=limit or DEFAULT_FIND
        )
        self.audit.after_commit(
            self.audit.record(
                [
                    self.access.event(
                        caller, role.name, Action.AUDIT_READ, tenant=tenant, record_id=record_id
                    )
                ],
                deadline=deadline,
            )
        )
        return entries

    # --- health ------------------------------------------------------------------------------

    def dependencies_healthy(self) -> dict[str, bool]:
        return {"database": self.db.ping(), "key_server": self.keys.healthy()}
