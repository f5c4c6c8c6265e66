"""Records use cases: create, read, erase and find customer records (updates: ``_updates``).

Order of work in every write: validate everything, get keys (the only step that may call the key
server), seal every value and wrap every data key, and only then open one short transaction that
writes ciphertexts, wrapped data keys and blind indexes together. A failure at any step leaves
the database unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from vault import crypto
from vault.audit import AuditEvent
from vault.deadline import Deadline
from vault.errors import Conflict, Erased, InvalidInput, NotFound, PermissionDenied
from vault.policy import Action, FieldDecision, Output, Policy, Purpose, Role
from vault.schema import FieldClass
from vault.service._core import Core
from vault.service._erasure import erase_record
from vault.service._keyring import INDEX
from vault.service._normal import deterministic_form
from vault.service._reading import REVEALING, RecordReader, render
from vault.service._reveal import RevealTx, reveal_tx
from vault.service._sealing import RecordSealer
from vault.service._types import ErasureReceipt, RecordInput, RecordView, StoredRecord
from vault.service._updates import RecordUpdater
from vault.service.access import Caller
from vault.service.validators import (
    IDEMPOTENCY_RE,
    check_record_id,
    check_scope,
    check_tenant,
    matches,
)
from vault.storage import NewRecord, StoredValue, repo

log = logging.getLogger("vault.service.records")

MAX_BATCH = 1000
MAX_FIND = 1000
DEFAULT_FIND = 100


class _TakeGeneralPath(Exception):
    """The one-transaction read cannot serve this call; roll back and take the general path."""


class RecordsService:
    """Records over envelope encryption. Thread-safe; one instance serves every request."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._reader = RecordReader(core)
        self._sealer = RecordSealer(core)
        self._updater = RecordUpdater(core, self._reader, self._sealer)

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
        _, role = self.core.access.authorize(
            caller, Action.RECORD_WRITE, tenant=tenant, deadline=deadline
        )
        canonical = self._create_input(records, batch=batch)
        self.core.tenants.require(caller, role, Action.RECORD_WRITE, tenant, deadline=deadline)
        keys = [r.idempotency_key for r in records]
        for attempt in range(3):
            # Optimistic first pass: a key is rarely reused (only by a retry), so the write
            # goes first and the unique (tenant, idempotency key) index finds a reuse; the
            # next passes read what exists and write the rest.
            existing = self._existing(tenant, keys) if attempt else {}
            try:
                return self._create(
                    caller, role.name, tenant, records, canonical, existing, deadline
                )
            except IntegrityError:
                log.info("idempotency key already used on create; re-reading")
        raise Conflict("concurrent create with the same idempotency key")

    def _create_input(self, records: Sequence[RecordInput], *, batch: bool) -> list[dict[str, str]]:
        """The canonical values of each record, once every record is known to be valid."""
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
                canonical.append(self.core.schema.validate(rec.fields))
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
        return canonical

    def _create(
        self,
        caller: Caller,
        role: str,
        tenant: str,
        records: Sequence[RecordInput],
        canonical: list[dict[str, str]],
        existing: Mapping[str, StoredRecord],
        deadline: Deadline,
    ) -> list[StoredRecord]:
        todo = [
            (i, values)
            for i, (rec, values) in enumerate(zip(records, canonical, strict=True))
            if not (rec.idempotency_key and rec.idempotency_key in existing)
        ]
        results: dict[int, StoredRecord] = {}
        if todo:
            classes = {self.core.class_of(name) for _, v in todo for name in v}
            tkeys = self.core.keyring.current(tenant, classes, deadline=deadline)
            sealed = self._sealer.seal_new(
                tenant, [(records[i].idempotency_key, values) for i, values in todo], tkeys
            )
            new_records: list[NewRecord] = []
            events: list[AuditEvent] = []
            now = datetime.now(UTC)
            for (i, _), (new, stored) in zip(todo, sealed, strict=True):
                results[i] = stored
                new_records.append(new)
                events.append(
                    self.core.access.event(
                        caller,
                        role,
                        Action.RECORD_WRITE,
                        tenant=tenant,
                        record_id=new.id,
                        field_classes=[d.field_class for d in new.data_keys],  # sorted
                        at=now,
                    )
                )
            deadline.check()  # cancelled or late while sealing: nothing written
            with self.core.audited_write(events, deadline=deadline) as conn:
                repo.insert_records(conn, new_records, now)
        return [
            results[i] if i in results else existing[str(rec.idempotency_key)]
            for i, rec in enumerate(records)
        ]

    def _existing(self, tenant: str, keys: Sequence[str | None]) -> dict[str, StoredRecord]:
        """Records already created under these idempotency keys, by key."""
        wanted = [k for k in keys if k]
        existing: dict[str, StoredRecord] = {}
        if not wanted:
            return existing
        with self.core.db.begin(write=False) as conn:
            for key, rid in repo.records_by_idempotency_key(conn, tenant, wanted).items():
                row = repo.get_record(conn, tenant, rid)
                if row is not None:
                    existing[key] = StoredRecord(
                        rid, row.version, repo.record_tokens(conn, tenant, rid)
                    )
        return existing

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
                self.core.schema.spec(name)
            except InvalidInput as exc:
                raise InvalidInput(f"fields.{exc.field}", exc.problem) from None
        check_scope(token_scope, "token_scope")
        access = self.core.access
        policy, role = access.authorize(
            caller, Action.RECORD_READ, tenant=tenant, record_id=record_id, deadline=deadline
        )
        purpose = access.check_purpose(
            policy,
            caller,
            role,
            Action.RECORD_READ,
            required=role.may_reveal,
            tenant=tenant,
            record_id=record_id,
            deadline=deadline,
        )
        read = _Read(caller, policy, role, purpose, tenant, record_id, fields, deadline)
        if role.may_reveal and not token_scope:
            fast = self._get_in_one_transaction(read)
            if fast is not None:
                return fast
        return self._get(read, token_scope)

    def _get(self, read: _Read, token_scope: str) -> RecordView:
        """The general path: read, decide, open (through the key server if need be), commit."""
        tenant, record_id, purpose = read.tenant, read.record_id, read.purpose
        with self.core.db.begin(write=False) as conn:
            row, stored = repo.read_record(conn, tenant, record_id, list(read.fields) or None)
            erased = row is None and repo.is_erased(conn, tenant, record_id)
            consented = (
                row is None
                or purpose is None
                or self.core.access.has_consent(
                    conn, tenant, record_id, purpose, deadline=read.deadline
                )
            )
        if row is None:
            raise Erased("record erased") if erased else NotFound("record not found")
        if any(s.dek_erased for s in stored):
            raise Erased("record erased")
        if not consented:
            # refused whatever the outputs: even stable tokens of a customer who did not
            # consent must not flow into, say, a training set
            assert purpose is not None
            raise self.core.access.deny_consent(
                read.caller,
                read.role.name,
                Action.RECORD_READ,
                purpose,
                tenant=tenant,
                record_id=record_id,
                deadline=read.deadline,
            )
        decisions = read.decide(stored)
        revealed = [s for s in stored if decisions[s.field_name].output in REVEALING]
        scoped: dict[str, str] = {}
        if token_scope:
            tokenized = [s for s in stored if decisions[s.field_name].output is Output.TOKEN]
            scoped = self._scoped_tokens(tenant, record_id, tokenized, token_scope, read.deadline)
        if not revealed:
            return RecordView(record_id, row.version, render(stored, decisions, {}, scoped))
        plain = self._reader.open(tenant, record_id, revealed, deadline=read.deadline)
        with self._reveal_tx(read) as tx:
            tx.require_consent(tenant, record_id, purpose)
            self._commit(read, tx, revealed, decisions)
        return RecordView(record_id, row.version, render(stored, decisions, plain, scoped))

    def _reveal_tx(self, read: _Read) -> AbstractContextManager[RevealTx]:
        """The reveal commit of a read (see ``_reveal``)."""
        return reveal_tx(
            self.core,
            read.caller,
            read.role,
            Action.RECORD_READ,
            tenant=read.tenant,
            record_id=read.record_id,
            deadline=read.deadline,
        )

    def _commit(
        self,
        read: _Read,
        tx: RevealTx,
        revealed: Sequence[StoredValue],
        decisions: Mapping[str, FieldDecision],
    ) -> None:
        """Charge the plain values and append the read's audit row (in the reveal commit)."""
        tx.classes = sorted({s.field_class for s in revealed})
        outputs = [decisions[s.field_name].output for s in revealed]
        tx.charge(outputs.count(Output.PLAIN), outputs.count(Output.MASKED))
        tx.append(
            [
                self.core.access.event(
                    read.caller,
                    read.role.name,
                    Action.RECORD_READ,
                    tenant=read.tenant,
                    record_id=read.record_id,
                    field_classes=tx.classes,
                )
            ]
        )

    def _get_in_one_transaction(self, read: _Read) -> RecordView | None:
        """The common case of a reveal in ONE write transaction: read, consent, limit, audit.

        Taken when no data key needs the key server (each is cached, or its tenant key is) and
        nothing needs refusing but a limit; anything else returns None and :meth:`get` takes its
        general path, which also audits refusals. Saves a whole read transaction on the
        hottest path.
        """
        tenant, record_id = read.tenant, read.record_id
        try:
            with self._reveal_tx(read) as tx:
                row, stored = repo.read_record(
                    tx.conn, tenant, record_id, list(read.fields) or None
                )
                if row is None or any(s.dek_erased for s in stored):
                    raise _TakeGeneralPath
                if read.purpose is not None and not tx.consented(tenant, record_id, read.purpose):
                    raise _TakeGeneralPath
                decisions = read.decide(stored)
                revealed = [s for s in stored if decisions[s.field_name].output in REVEALING]
                plain = self._reader.open_local(tenant, record_id, revealed)
                if plain is None:
                    raise _TakeGeneralPath
                if revealed:
                    self._commit(read, tx, revealed, decisions)
        except _TakeGeneralPath:
            return None
        return RecordView(record_id, row.version, render(stored, decisions, plain))

    def _scoped_tokens(
        self,
        tenant: str,
        record_id: str,
        stored: Sequence[StoredValue],
        scope: str,
        deadline: Deadline,
    ) -> dict[str, str]:
        """Deterministic view tokens of ``scope`` for these fields: computed from the values,
        which stay inside the service, under a label Tokenize never uses (so no caller can
        test a guessed value against them)."""
        if not stored:
            return {}
        values = self._reader.open(tenant, record_id, stored, deadline=deadline)
        classes = {s.field_class for s in stored}
        ikeys = self.core.keyring.current(tenant, classes, deadline=deadline)
        out: dict[str, str] = {}
        for s in stored:
            spec = self.core.schema.spec(s.field_name)
            out[s.field_name] = crypto.deterministic_token(
                ikeys[(s.field_class, INDEX)].key,
                s.field_class,
                scope,
                deterministic_form(spec.field_class, values[s.field_name]),
                view=True,
            )
        return out

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
        """Set and clear fields if the record is still at ``expected_version``; a value cleared
        or replaced is crypto-shredded (see :meth:`RecordUpdater.update`)."""
        return self._updater.update(
            caller,
            tenant,
            record_id,
            expected_version=expected_version,
            set_fields=set_fields,
            clear_fields=clear_fields,
            deadline=deadline,
        )

    # --- erase -------------------------------------------------------------------------------

    def delete(
        self, caller: Caller, tenant: str, record_id: str, *, deadline: Deadline
    ) -> ErasureReceipt:
        """Crypto-shred a record (audited), and tombstone every token of its values: linked
        ones with its data keys, standalone and text tokens by their value fingerprints (see
        ``_erasure``). Repeating it returns the first receipt.

        Raises:
            PermissionDenied: the caller may not erase records (audited).
            NotFound: no such record (and none erased) in this tenant.
            Conflict: the record kept changing while it was erased (retry).
        """
        check_tenant(tenant)
        check_record_id(record_id)
        access = self.core.access
        _, role = access.authorize(
            caller, Action.RECORD_ERASE, tenant=tenant, record_id=record_id, deadline=deadline
        )
        events = [
            access.event(caller, role.name, Action.RECORD_ERASE, tenant=tenant, record_id=record_id)
        ]
        return erase_record(self.core, tenant, record_id, events, deadline=deadline)

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

        A search is an oracle on the values it matches (does a customer with this national id
        exist?), so it needs the role's ``search`` permission for every class it matches on, is
        counted against the role's search limits, and is audited (one row: the classes, the
        outcome, and ``results:<n>`` in ``reason``), refused or not.

        Raises:
            InvalidInput: no condition, a field that is unknown or not searchable, a bad value.
            PermissionDenied: ``search_not_allowed`` for a class (audited).
            ResourceExhausted: the role's search limit (audited); nothing searched.
            Unavailable: key server, database or audit log; nothing returned.
        """
        check_tenant(tenant)
        policy, role = self.core.access.authorize(
            caller, Action.RECORD_FIND, tenant=tenant, deadline=deadline
        )
        values = self._find_input(match, limit)
        classes = self.core.classes_of(list(values))
        try:
            policy.check_search(role, [FieldClass(c) for c in classes])
        except PermissionDenied as exc:
            raise self.core.access.deny(
                caller,
                role.name,
                Action.RECORD_FIND,
                exc,
                tenant=tenant,
                field_classes=classes,
                deadline=deadline,
            ) from None
        for _attempt in range(2):
            try:
                return self._find_in_one_transaction(
                    caller, role, tenant, values, classes, limit, deadline
                )
            except _TakeGeneralPath:
                # an index key is not cached: unwrap it (key server) outside any transaction
                for c in classes:
                    self.core.keyring.index_keys(tenant, c, deadline=deadline)
        raise Conflict("index keys are being rotated; retry")

    def _find_in_one_transaction(
        self,
        caller: Caller,
        role: Role,
        tenant: str,
        values: Mapping[str, str],
        classes: list[str],
        limit: int,
        deadline: Deadline,
    ) -> list[str]:
        """Charge, read the index keys, match and audit in ONE write transaction (index keys
        from the cache only: :class:`_TakeGeneralPath` when one is not cached)."""
        with reveal_tx(
            self.core, caller, role, Action.RECORD_FIND, tenant=tenant, deadline=deadline
        ) as tx:
            tx.classes = classes
            self.core.access.charge_search(tx.conn, caller, role)
            conditions = self._find_conditions(tx.conn, tenant, values)
            found = (
                repo.find_records(tx.conn, tenant, conditions, limit or DEFAULT_FIND)
                if conditions is not None
                else []
            )
            event = self.core.access.event(
                caller,
                role.name,
                Action.RECORD_FIND,
                tenant=tenant,
                field_classes=classes,
                reason=f"results:{len(found)}",
            )
            tx.append([event])
        return found

    def _find_conditions(
        self, conn: Connection, tenant: str, values: Mapping[str, str]
    ) -> dict[str, list[bytes]] | None:
        """The blind indexes to match per field, under every index-key version; ``None`` when
        a class has no index key yet (nothing can match)."""
        conditions: dict[str, list[bytes]] = {}
        for name, value in values.items():
            iks = self.core.keyring.cached_index_keys(conn, tenant, self.core.class_of(name))
            if iks is None:
                raise _TakeGeneralPath
            if not iks:
                return None
            form = self.core.schema.index_form(name, value)
            conditions[name] = [crypto.blind_index(ik.key, name, form) for ik in iks]
        return conditions

    def _find_input(self, match: Mapping[str, str], limit: int) -> dict[str, str]:
        if not match:
            raise InvalidInput("match", "at least one condition is required")
        if limit < 0 or limit > MAX_FIND:
            raise InvalidInput("limit", f"must be between 0 and {MAX_FIND}")
        for name in match:
            try:
                spec = self.core.schema.spec(name)
            except InvalidInput as exc:
                raise InvalidInput(f"match.{exc.field}", "unknown field") from None
            if not spec.searchable:
                raise InvalidInput(f"match.{name}", "field is not searchable")
        try:
            return self.core.schema.validate(match)
        except InvalidInput as exc:
            raise InvalidInput(f"match.{exc.field}", exc.problem) from None


@dataclass(frozen=True, slots=True)
class _Read:
    """One GetRecord call, once authorized: who asks, under which role and purpose, for what."""

    caller: Caller
    policy: Policy
    role: Role
    purpose: Purpose | None
    tenant: str
    record_id: str
    fields: Sequence[str]
    deadline: Deadline

    def decide(self, stored: Sequence[StoredValue]) -> dict[str, FieldDecision]:
        """The policy's output for each stored field."""
        return self.policy.outputs(
            self.role,
            self.purpose.name if self.purpose else None,
            {s.field_name: FieldClass(s.field_class) for s in stored},
        )
