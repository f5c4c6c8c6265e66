"""UpdateRecord: set and clear fields, crypto-shredding every value cleared or replaced.

A value that is cleared or replaced is crypto-shredded, like an erased record: the data key of
its class is destroyed (tombstoned) in the same transaction, and what remains of that class (the
record's other fields of the class, linked tokens whose value was not one of those removed) is
re-sealed under a new data key. So a backup taken before the update cannot be opened with a live
key. The ids destroyed are returned and audited. Standalone tokens of a removed value (``Tokenize``
tokens of any kind and scope, ``TokenizeText`` spans) are tombstoned by fingerprint in the same
transaction, as a whole-record erasure does (``_erasure``), unless the record still holds the
value after the update (compared in its deterministic form).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from vault import crypto
from vault.crypto import DataKey
from vault.deadline import Deadline
from vault.errors import Conflict, Erased, InvalidInput
from vault.policy import Action
from vault.schema import FieldClass
from vault.service._core import Core, live_record
from vault.service._erasure import removed_prints
from vault.service._normal import deterministic_form
from vault.service._reading import RecordReader
from vault.service._sealing import RecordSealer, seal_linked
from vault.service._types import StoredRecord
from vault.service.access import Caller
from vault.service.validators import check_record_id, check_tenant
from vault.storage import NewDataKey, NewIndex, NewValue, StoredValue, repo, tokens_repo


@dataclass(frozen=True, slots=True)
class Change:
    """What one UpdateRecord (or a rekey) writes, made before its transaction."""

    new_dek_rows: list[NewDataKey]
    value_rows: list[NewValue]
    index_rows: list[NewIndex]
    #: linked tokens moved to a new data key: (token, new data key id, new ciphertext)
    resealed: list[tuple[tokens_repo.LinkedToken, str, bytes]]
    #: data keys destroyed (tombstoned) with the values they held
    destroyed: tuple[str, ...]
    tokens: dict[str, str]
    #: fingerprints of the values removed (none the record still holds): their standalone
    #: tokens are tombstoned with the update
    erased_prints: frozenset[bytes] = frozenset()


@dataclass(frozen=True, slots=True)
class _Current:
    """What an update reads of the record before sealing anything."""

    keys: dict[str, tuple[str, bytes, str]]
    tokens: dict[str, str]
    removed: list[str]
    touched: set[str]
    stored: list[StoredValue]
    linked: list[tokens_repo.LinkedToken]


def write_change(
    conn: Connection,
    tenant: str,
    record_id: str,
    change: Change,
    cleared: Sequence[str],
    now: datetime,
) -> None:
    """Store a change made by :class:`RecordUpdater` or a rekey, in the caller's transaction:
    the old keys are destroyed first (a record holds one data key per class)."""
    repo.destroy_data_keys(conn, tenant, record_id, change.destroyed, now)
    repo.replace_values(
        conn,
        record_id,
        new_data_keys=change.new_dek_rows,
        values=change.value_rows,
        index_rows=change.index_rows,
        cleared=list(cleared),
        now=now,
    )
    for t, dek_id, ct in change.resealed:
        tokens_repo.reseal_token(conn, tenant, t, dek_id, ct)
    tokens_repo.tombstone_fingerprints(conn, tenant, record_id, change.erased_prints, now)


class RecordUpdater:
    """UpdateRecord over the shared reader and sealer."""

    def __init__(self, core: Core, reader: RecordReader, sealer: RecordSealer) -> None:
        self._core = core
        self._reader = reader
        self._sealer = sealer

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
        """Set and clear fields if the record is still at ``expected_version``. In the same
        transaction, the fingerprints of the values removed (cleared or replaced, and not still
        held by the record) are tombstoned and their standalone tokens emptied, as a
        whole-record erasure does; the result does not count them.

        Raises:
            Conflict: the record changed since ``expected_version`` (the caller re-reads).
            NotFound, Erased, InvalidInput: as for GetRecord and CreateRecord.
        """
        check_tenant(tenant)
        check_record_id(record_id)
        access = self._core.access
        _, role = access.authorize(
            caller, Action.RECORD_WRITE, tenant=tenant, record_id=record_id, deadline=deadline
        )
        values = self._input(expected_version, set_fields, clear_fields)
        change = self._change(
            tenant, record_id, expected_version, values, clear_fields, deadline=deadline
        )
        event = access.event(
            caller,
            role.name,
            Action.RECORD_WRITE,
            tenant=tenant,
            record_id=record_id,
            field_classes=self._core.classes_of([*values, *clear_fields]),
            reason="data_keys_destroyed" if change.destroyed else "",
        )
        now = datetime.now(UTC)
        try:
            with self._core.audited_write([event], deadline=deadline) as conn:
                if not repo.bump_version(conn, tenant, record_id, expected_version, now):
                    if repo.is_erased(conn, tenant, record_id):
                        raise Erased("record erased")
                    raise Conflict("record version is not expected_version")
                write_change(conn, tenant, record_id, change, clear_fields, now)
        except IntegrityError:
            raise Conflict("record changed concurrently") from None
        self._core.data_keys.forget(change.destroyed)
        return StoredRecord(record_id, expected_version + 1, change.tokens, change.destroyed)

    def _input(
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
                self._core.schema.spec(name)
            except InvalidInput as exc:
                # exc.field is the name only when it looks like a field name (never a value)
                raise InvalidInput(f"clear_fields.{exc.field}", "unknown field") from None
            if name in set_fields:
                raise InvalidInput(f"clear_fields.{name}", "also in set_fields")
        try:
            return self._core.schema.validate(set_fields) if set_fields else {}
        except InvalidInput as exc:
            raise InvalidInput(f"set_fields.{exc.field}", exc.problem) from None

    def _read(
        self,
        tenant: str,
        record_id: str,
        expected_version: int,
        names: Sequence[str],
    ) -> _Current:
        """The record's keys and tokens, and the values of the classes ``names`` touch."""
        cls = self._core.class_of
        with self._core.db.begin(write=False) as conn:
            row = live_record(conn, tenant, record_id)
            if row.version != expected_version:
                raise Conflict("record version is not expected_version")
            keys = repo.record_data_keys(conn, tenant, record_id)
            tokens = repo.record_tokens(conn, tenant, record_id)
            removed = [n for n in names if n in tokens]
            touched = {cls(n) for n in removed}
            _, stored = repo.read_record(
                conn, tenant, record_id, [n for n in tokens if cls(n) in touched]
            )
            linked = tokens_repo.tokens_of_record(conn, tenant, record_id) if touched else []
        return _Current(keys, tokens, removed, touched, stored, linked)

    def _change(
        self,
        tenant: str,
        record_id: str,
        expected_version: int,
        values: Mapping[str, str],
        clear_fields: Sequence[str],
        *,
        deadline: Deadline,
    ) -> Change:
        """Everything an update writes, sealed before its transaction (CPU work outside it).

        A class with a value cleared or replaced (``touched``) loses its data key; what is left
        of it (other fields, linked tokens holding none of the removed values) moves to a new
        one. Adding a field to a class no value left keeps the class's key.
        """
        cls = self._core.class_of
        cur = self._read(tenant, record_id, expected_version, [*values, *clear_fields])
        if not (set(cur.tokens) - set(clear_fields)) | set(values):
            raise InvalidInput("clear_fields", "a record must keep at least one field")
        reader = self._reader
        old = reader.open(tenant, record_id, cur.stored, deadline=deadline) if cur.stored else {}
        kept = {n: v for n, v in old.items() if n not in cur.removed}
        old_deks = reader.keys_of(
            tenant, record_id, cur.keys, cur.touched & set(cur.keys), deadline=deadline
        )
        gone = [(cls(n), old[n]) for n in cur.removed if n in old]
        keep_tokens = _linked_to_keep(tenant, record_id, cur.linked, old_deks, gone)
        classes = {cls(n) for n in values}
        left = classes | {cls(n) for n in kept} | {t.field_class for t, _ in keep_tokens}
        fresh = (classes - set(cur.keys)) | (cur.touched & left)
        tkeys = self._core.keyring.current(tenant, left, deadline=deadline) if left else {}
        deks = reader.keys_of(tenant, record_id, cur.keys, classes - fresh, deadline=deadline)
        new_deks, new_dek_rows = self._sealer.new_data_keys(tenant, record_id, fresh, tkeys)
        deks.update(new_deks)
        value_rows, index_rows, new_tokens = self._sealer.seal_values(
            tenant, record_id, {**kept, **values}, deks, tkeys, tokens=cur.tokens
        )
        resealed = [
            (
                t,
                str(deks[t.field_class].id),
                seal_linked(deks[t.field_class], tenant, record_id, t, v),
            )
            for t, v in keep_tokens
        ]
        out_tokens = {n: t for n, t in cur.tokens.items() if n not in clear_fields} | new_tokens
        destroyed = tuple(sorted(cur.keys[c][0] for c in cur.touched if c in cur.keys))
        held = [(cls(n), v) for n, v in {**kept, **values}.items()]
        prints = removed_prints(self._core, tenant, gone, held, deadline=deadline)
        return Change(new_dek_rows, value_rows, index_rows, resealed, destroyed, out_tokens, prints)


def _linked_to_keep(
    tenant: str,
    record_id: str,
    linked: Sequence[tokens_repo.LinkedToken],
    old_deks: Mapping[str, DataKey],
    removed: Sequence[tuple[str, str]],
) -> list[tuple[tokens_repo.LinkedToken, str]]:
    """Linked tokens sealed under a data key about to be destroyed, with their values, except
    those holding a value the update removes, compared as deterministic tokens compare them (an
    email case-insensitively): they go with it and reveal as erased. ``removed``: (field class,
    value) of each value removed."""
    by_id = {str(d.id): d for d in old_deks.values()}
    gone = {(c, deterministic_form(FieldClass(c), v)) for c, v in removed}
    out: list[tuple[tokens_repo.LinkedToken, str]] = []
    for t in linked:
        dek = by_id.get(t.data_key_id)
        if dek is None:
            continue  # not under a key this update destroys
        value = crypto.open_value(dek, tenant, record_id, f"token:{t.token}", t.ciphertext)
        if (t.field_class, deterministic_form(FieldClass(t.field_class), value)) not in gone:
            out.append((t, value))
    return out
