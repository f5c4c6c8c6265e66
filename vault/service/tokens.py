"""The tokens use cases: tokenize values in batches, reveal tokens per the policy.

Three kinds of token (``TokenKind``):

* ``random``: ``tok_<class>_<22 random base62 digits>``, fresh for every value;
* ``deterministic``: the same string for the same normalized value in the same tenant and scope
  (``vault.crypto.deterministic_token`` under the tenant's index key for the class), so joins
  and counts work on tokens; scopes and tenants cannot be linked;
* ``format_preserving``: a random surrogate of the value's shape (``vault.crypto.surrogate``),
  unique in the tenant.

Every token row keeps its value sealed (AES-256-GCM, AAD = tenant, key owner, ``token:<token>``
and the data key id) under a data key: the linked record's key for the class when the item
names a record, so erasing the record shreds the token's value too; otherwise a key of the
tenant's **pool** for the class (:mod:`vault.service._token_pools`), made locally and replaced
after ``PoolLimits.max_values`` values or ``max_age`` seconds. Tokenizing makes no key-server
call in steady state, and opens one transaction, its write: the tenant's current keys come
from the keyring's cache and are checked in that transaction (``Keyring.cached_current``).
The per-item work keeps no object per item beyond the row tuple it inserts: items are
validated into lists (:class:`Batch`), and the ciphers, HMAC states and AAD prefixes are set
up once per call and key.

Reveals (by role, or under a grant of :mod:`vault.service.grants`) are made by
:mod:`vault.service._token_reveal`, through the one reveal commit.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from vault import crypto
from vault.audit import AuditEvent
from vault.crypto import DataKey, SurrogateError, SurrogateShapeError, surrogate
from vault.deadline import Deadline
from vault.errors import Conflict, InvalidInput, PermissionDenied, ResourceExhausted
from vault.policy import Action, Policy, Role
from vault.schema import FieldClass
from vault.service._core import Core, live_record
from vault.service._datakeys import DataKeyRef
from vault.service._keyring import DATA, INDEX, CurrentKeys, TenantKey
from vault.service._normal import (
    deterministic_form,
    fingerprint,
)
from vault.service._reading import record_key_refs
from vault.service._token_batch import NAME, RANDOM, Batch, prepare
from vault.service._token_pools import Pool, PoolLimits, TokenPools
from vault.service._token_reveal import TokenRevealer
from vault.service._token_types import (
    FPE_ATTEMPTS,
    FPE_CLASSES,
    MAX_ITEMS,
    MAX_TTL_SECONDS,
    RevealedToken,
    TokenError,
    TokenizeItem,
    TokenKind,
    expired,
    token_field,
)
from vault.service.access import Caller
from vault.service.grants import GrantsService
from vault.service.validators import check_tenant
from vault.storage import Database, NewDataKey, keys_repo, repo, tokens_repo
from vault.storage.models_tokens import TOKEN_MAX

log = logging.getLogger("vault.service.tokens")

#: the primary key columns of a token row (never rewritten)
_KEY = frozenset({"tenant", "token"})
TOKEN_COLUMNS = tokens_repo.TOKEN_COLUMNS
#: the data key of each (linked record, class)
RecordKeys = dict[tuple[str, str], DataKey]


class _StaleKeys(Exception):
    """The tenant's keys changed (a rotation) after this call took them: start again."""


class TokensService:
    """Tokenize and reveal. Thread-safe; one instance serves every request."""

    def __init__(
        self,
        core: Core,
        grants: GrantsService,
        *,
        pools: PoolLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.core = core
        # (tenant, class) -> the current pool, least recently used first: bounded, because
        # tenants are named by callers (an evicted pool costs only a new local data key)
        self._pools = TokenPools(core.data_keys, core.keyring, pools, clock=clock)
        self._revealer = TokenRevealer(core, grants)

    # --- tokenize ----------------------------------------------------------------------------

    def tokenize(
        self,
        caller: Caller,
        tenant: str,
        items: Sequence[TokenizeItem],
        *,
        deadline: Deadline,
        max_items: int = MAX_ITEMS,
    ) -> list[str]:
        """Tokens for ``items``, in order; all or nothing. Audited (one row per linked record
        and one for the standalone values). ``max_items``: TokenizeText's own budget, whose
        spans are written in one transaction too.

        The tenant's current keys come from the keyring's cache and are checked inside the
        write transaction (:meth:`Keyring.cached_current`): a call that finds them changed by
        a rotation writes nothing and starts again with the new ones.

        Raises:
            PermissionDenied: the role may not create tokens, or not deterministic ones of that
                class in that scope (``token_scope_not_allowed``, ``token_scope_shared``;
                audited).
            InvalidInput: a bad item (named as ``items[i].<field>``; values never echoed),
                e.g. a value its class's validator refuses (``items[i].value``).
            NotFound, Erased: a linked record does not exist in the tenant, or was erased.
            Conflict: surrogates kept colliding, or a concurrent call or rotation raced (retry).
            Unavailable: key server, database or audit log; nothing was written.
        """
        check_tenant(tenant)
        policy, role = self.core.access.authorize(
            caller, Action.TOKEN_CREATE, tenant=tenant, deadline=deadline
        )
        batch = prepare(items, max_items)
        self._check_scopes(caller, policy, role, tenant, batch, deadline=deadline)
        self.core.tenants.require(caller, role, Action.TOKEN_CREATE, tenant, deadline=deadline)
        for _attempt in range(3):
            try:
                return self._tokenize(caller, role, tenant, batch, deadline=deadline)
            except IntegrityError:
                # a concurrent call inserted the same deterministic token or surrogate first,
                # or made the same record's data key, or a rotation destroyed the tenant-key
                # version just used: the next pass sees the rows and keys as they are now
                self.core.keyring.forget(tenant, batch.class_names)
                log.info("token insert raced; retrying")
            except _StaleKeys:
                log.info("the tenant's keys changed (a rotation); retrying with the new ones")
        raise Conflict("concurrent tokenization; retry")

    def _check_scopes(
        self,
        caller: Caller,
        policy: Policy,
        role: Role,
        tenant: str,
        batch: Batch,
        *,
        deadline: Deadline,
    ) -> None:
        """Deterministic tokens only where the policy lets the role make them: a deterministic
        token anyone may make in a scope is a guessing oracle on that scope's tokens (random
        and format-preserving tokens are fresh draws: no oracle). Refusals are audited.

        Raises:
            PermissionDenied: ``token_scope_not_allowed`` or ``token_scope_shared``, naming the
                first such item (``items[i]``), never its value or scope.
        """
        checked: set[tuple[FieldClass, str]] = set()
        for i in batch.det:
            field_class, scope = batch.classes[i], batch.items[i].scope
            if (field_class, scope) in checked:
                continue
            try:
                policy.check_deterministic(role, field_class, scope)
            except PermissionDenied as exc:
                refused = PermissionDenied(f"items[{i}].scope: {exc.message}", reason=exc.reason)
                raise self.core.access.deny(
                    caller,
                    role.name,
                    Action.TOKEN_CREATE,
                    refused,
                    tenant=tenant,
                    field_classes=[NAME[field_class]],
                    deadline=deadline,
                ) from None
            checked.add((field_class, scope))

    def _tokenize(
        self, caller: Caller, role: Role, tenant: str, batch: Batch, *, deadline: Deadline
    ) -> list[str]:
        keys = self.core.keyring.cached_current(tenant, batch.class_names, deadline=deadline)
        record_deks, new_key_rows = self._record_keys(tenant, batch, keys.newest, deadline=deadline)
        pools, new_pools = self._pools.take(tenant, batch.pool_counts(), keys.newest)
        tokens, forms = _minted(batch, keys.newest)
        if batch.det and keys.older_index:
            self._keep_tokens_of_older_index_keys(tenant, batch, tokens, keys)
        rows = _TokenRows(tenant, datetime.now(UTC), batch, keys.newest, record_deks, pools)
        rows.add(range(len(tokens)), tokens, forms)  # sealed outside the transaction
        new_key_rows += [row for _, row in new_pools]
        events = self._events(caller, role, tenant, batch)
        deadline.check()  # a call cancelled or past its deadline while sealing writes nothing
        with self.core.audited_write(events, deadline=deadline) as conn:
            if not self.core.keyring.still_current(conn, keys):
                raise _StaleKeys
            self._write(conn, tenant, batch, tokens, forms, rows, new_key_rows)
        self._pools.install(tenant, new_pools)
        return tokens

    def _write(
        self,
        conn: Connection,
        tenant: str,
        batch: Batch,
        tokens: list[str],
        forms: list[bytes],
        rows: _TokenRows,
        new_key_rows: Sequence[NewDataKey],
    ) -> None:
        """The tokenize transaction's rows: new data keys, surrogates (drawn against the table,
        so in here), and the tokens; a deterministic token that exists keeps its row."""
        if new_key_rows:
            repo.insert_data_keys(conn, new_key_rows, rows.now)
        if batch.fpe:
            self._draw_surrogates(conn, tenant, batch, tokens)
            rows.add(batch.fpe, tokens, forms)
        if batch.det:
            self._keep_existing(conn, tenant, [tokens[i] for i in batch.det], rows)
        if batch.linked:
            _count_record_seals(conn, rows.by_token.values())
        tokens_repo.insert_tokens(conn, list(rows.by_token.values()))

    @staticmethod
    def _keep_existing(conn: Connection, tenant: str, det: list[str], rows: _TokenRows) -> None:
        """Deterministic tokens issued before keep their rows (updated as need be, and left
        out of the insert); one look-up by primary key, the full rows only of those found."""
        found = tokens_repo.existing_tokens(conn, tenant, det)
        if not found:
            return
        for token, old in tokens_repo.read_tokens(conn, tenant, sorted(found)).items():
            row = dict(zip(TOKEN_COLUMNS, rows.by_token.pop(token), strict=True))
            if (
                old.dek_erased
                or old.value_erased
                or old.wrapped_dek is None
                or expired(old.expires_at, rows.now)
            ):
                # its value was shredded with its record (linked, or found by its fingerprint),
                # or it lapsed: issue it afresh
                tokens_repo.replace_token(
                    conn, tenant, token, {k: v for k, v in row.items() if k not in _KEY}
                )
                continue
            if old.fingerprint is None:  # made before fingerprints: give it one now
                tokens_repo.set_fingerprint(
                    conn, tenant, token, row["fingerprint"], row["fingerprint_key_id"]
                )
            if old.expires_at is not None and (
                row["expires_at"] is None or row["expires_at"] > old.expires_at
            ):
                tokens_repo.set_expiry(conn, tenant, token, row["expires_at"])

    def _keep_tokens_of_older_index_keys(
        self, tenant: str, batch: Batch, tokens: list[str], keys: CurrentKeys
    ) -> None:
        """While an index key is being rotated (``cvault keys rotate-index``), a value already
        tokenized under the older version keeps its token: joins on tokens do not break
        mid-rotation. Called only while a class has older index-key versions."""
        candidates: dict[str, int] = {}
        for i in batch.det:
            for k in keys.older_index.get(NAME[batch.classes[i]], ()):
                candidates.setdefault(_deterministic(batch, i, k), i)
        if not candidates:
            return
        with self.core.db.begin(write=False) as conn:
            found = tokens_repo.existing_tokens(conn, tenant, list(candidates))
        for alt in found:
            tokens[candidates[alt]] = alt

    @staticmethod
    def _draw_surrogates(conn: Connection, tenant: str, batch: Batch, tokens: list[str]) -> None:
        """Fill in format-preserving tokens, redrawing any that exist in the tenant already
        (or twice in this call)."""
        todo = list(batch.fpe)
        taken: set[str] = set()
        for attempt in range(FPE_ATTEMPTS):
            if not todo:
                return
            drawn: dict[int, str] = {}
            retry: list[int] = []
            for i in todo:
                token = _surrogate(batch, i, attempt)
                if token is None:
                    retry.append(i)  # no acceptable draw this time: try a wider attempt
                else:
                    drawn[i] = token
            clash = tokens_repo.existing_tokens(conn, tenant, list(drawn.values()))
            for i, token in drawn.items():
                if token in clash or token in taken:
                    retry.append(i)
                else:
                    taken.add(token)
                    tokens[i] = token
            todo = retry
        if todo:
            raise Conflict("no free format-preserving surrogate found; retry")

    def _record_keys(
        self,
        tenant: str,
        batch: Batch,
        tkeys: Mapping[tuple[str, str], TenantKey],
        *,
        deadline: Deadline,
    ) -> tuple[RecordKeys, list[NewDataKey]]:
        """The data key of each (linked record, class), through the one data-key path, and
        rows for the ones to create (made locally).

        Raises: NotFound, Erased (a linked record is not live in the tenant).
        """
        if not batch.linked:
            return {}, []
        wanted: dict[str, set[str]] = {}
        for i, item in enumerate(batch.items):
            if item.record_id:
                wanted.setdefault(item.record_id, set()).add(NAME[batch.classes[i]])
        with self.core.db.begin(write=False) as conn:
            existing = {rid: self._live_record_keys(conn, tenant, rid) for rid in sorted(wanted)}
        refs = [existing[rid][c] for rid, cs in wanted.items() for c in cs if c in existing[rid]]
        deks = self.core.data_keys.open(
            tenant, refs, deadline=deadline, reread=lambda cold: self._reread(tenant, cold)
        )
        out: RecordKeys = {}
        new_rows: list[NewDataKey] = []
        for rid, classes in wanted.items():
            for c in sorted(classes):
                ref = existing[rid].get(c)
                if ref is not None:
                    out[(rid, c)] = deks[ref.id]
                    continue
                dek, row = self.core.keyring.new_data_key(tenant, rid, c, tkeys[(c, DATA)])
                self.core.data_keys.made(dek)
                new_rows.append(row)
                out[(rid, c)] = dek
        return out, new_rows

    @staticmethod
    def _live_record_keys(conn: Connection, tenant: str, record_id: str) -> dict[str, DataKeyRef]:
        live_record(conn, tenant, record_id)
        return record_key_refs(record_id, repo.record_data_keys(conn, tenant, record_id))

    def _reread(self, tenant: str, cold: Sequence[DataKeyRef]) -> list[DataKeyRef]:
        """``cold`` as the data-key rows are now (re-wrapped by a tenant-key rotation)."""
        now: dict[str, DataKeyRef] = {}
        with self.core.db.begin(write=False) as conn:
            for rid in sorted({r.owner for r in cold}):
                keys = repo.record_data_keys(conn, tenant, rid)
                now |= {r.id: r for r in record_key_refs(rid, keys).values()}
        return [now.get(r.id, r) for r in cold]

    def _events(self, caller: Caller, role: Role, tenant: str, batch: Batch) -> list[AuditEvent]:
        by_record: dict[str | None, set[str]] = {}
        if batch.linked:
            for i, item in enumerate(batch.items):
                by_record.setdefault(item.record_id or None, set()).add(NAME[batch.classes[i]])
        else:
            by_record[None] = set(batch.class_names)
        return [
            self.core.access.event(
                caller,
                role.name,
                Action.TOKEN_CREATE,
                tenant=tenant,
                record_id=rid,
                field_classes=sorted(classes),
            )
            for rid, classes in sorted(by_record.items(), key=lambda kv: kv[0] or "")
        ]

    # --- reveal ------------------------------------------------------------------------------

    def reveal(
        self,
        caller: Caller,
        tenant: str,
        tokens: Sequence[str],
        *,
        grant_id: str = "",
        action: Action = Action.TOKEN_REVEAL,
        deadline: Deadline,
    ) -> list[RevealedToken]:
        """Each token as the policy gives this role for the stated purpose, in order.

        Per token, never failing the others: unknown (not issued in this tenant), expired,
        erased (its record was crypto-shredded), denied (``consent_required``, or
        ``outside_grant``; audited), or decryption_failed (its stored value or its data key
        does not authenticate: damaged or tampered at rest; audited as an integrity event,
        outcome ``error``, and not counted as revealed). The audit rows and the plaintext count
        commit before any value is returned.

        With ``grant_id``, the caller reveals under a grant issued to it (see
        :meth:`vault.service.grants.GrantsService.issue`) instead of its own role: only tokens
        of the grant's records or scope and classes, for the grant's purpose, with the granting
        role's outputs; each call uses the grant once. ``action`` is ``token.reveal`` or
        ``text.reveal`` (RevealText).

        Raises:
            PermissionDenied: action or purpose not allowed, or the grant is not valid for this
                caller (unknown, expired, used up, another principal's): audited.
            InvalidInput: no tokens, too many, or the purpose missing or unknown.
            ResourceExhausted: the role's plaintext limit (audited); nothing revealed.
            DecryptionFailed: a tenant key did not authenticate or is another tenant's (the
                key hierarchy is damaged: every token under it would fail); nothing revealed.
            Unavailable: key server, database or audit log; nothing revealed.
        """
        return self._revealer.reveal(
            caller, tenant, tokens, grant_id=grant_id, action=action, deadline=deadline
        )

    def check_reveal(
        self, caller: Caller, tenant: str, grant_id: str, action: Action, *, deadline: Deadline
    ) -> None:
        """The checks a reveal makes before looking at any token (action or grant, purpose),
        for a call that turns out to hold no token. Raises as :meth:`reveal`."""
        self._revealer.check(caller, tenant, grant_id, action, deadline=deadline)

    # --- housekeeping ------------------------------------------------------------------------

    def purge_expired(self, *, batch: int = 1000) -> int:
        """Delete every token whose TTL passed, in batches; returns how many."""
        return purge_expired_tokens(self.core.db, batch=batch)


def purge_expired_tokens(db: Database, *, batch: int = 1000, dry_run: bool = False) -> int:
    """Delete (or with ``dry_run`` only count) the tokens whose TTL passed, in short
    transactions of ``batch`` rows; returns how many. Safe while the service runs."""
    now = datetime.now(UTC)
    if dry_run:
        with db.begin(write=False) as conn:
            return tokens_repo.count_expired(conn, now)
    total = 0
    while True:
        with db.begin() as conn:
            n = tokens_repo.purge_expired(conn, now, batch)
        total += n
        if n < batch:
            return total


#: values a caller may seal under one record's data key through linked tokens. A record has a
#: handful of values; without a bound a caller could seal chosen values under one customer's
#: key without end (AES-GCM's random nonces must stay far below 2^32 per key).
MAX_LINKED_SEALS = 2**20

#: positions in a token row (tokens_repo.TOKEN_COLUMNS)
_RECORD, _DATA_KEY = TOKEN_COLUMNS.index("record_id"), TOKEN_COLUMNS.index("data_key_id")


def _count_record_seals(conn: Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Count the linked tokens sealed under each record's data key in this transaction.

    Raises: ResourceExhausted (``data_key_exhausted``): a key is past its bound; nothing is
        written (rekey the record: ``cvault keys rekey``).
    """
    per_key = Counter(str(r[_DATA_KEY]) for r in rows if r[_RECORD])
    if per_key and keys_repo.add_data_key_seals(conn, per_key) > MAX_LINKED_SEALS:
        raise ResourceExhausted(
            "a record's data key sealed its bound of linked tokens; rekey the record",
            reason="data_key_exhausted",
        )


class _TokenRows:
    """The token rows of one tokenize call (tuples in ``TOKEN_COLUMNS`` order), their values
    sealed: CPU work, done outside the transaction for every token known before it (all but
    surrogates). The ciphers, HMAC states and expiry times are set up once per call."""

    def __init__(
        self,
        tenant: str,
        now: datetime,
        batch: Batch,
        tkeys: Mapping[tuple[str, str], TenantKey],
        record_deks: RecordKeys,
        pools: Mapping[str, Pool],
    ) -> None:
        self.tenant = tenant
        self.now = now
        self._batch = batch
        #: class -> its index key, and fingerprints under it
        self._index = {
            c: (tkeys[(c, INDEX)], crypto.ValueFingerprints(tkeys[(c, INDEX)].key))
            for c in batch.class_names
        }
        #: class -> (sealer under its pool's key, the key's id) for standalone values
        self._pools = {
            c: (crypto.OwnerSealer(p.dek, tenant, p.pool_id), str(p.dek.id))
            for c, p in pools.items()
        }
        self._record_deks = record_deks
        self._records: dict[tuple[str, str], tuple[crypto.OwnerSealer, str]] = {}
        self._expiry: dict[int, datetime | None] = {0: None}
        #: token -> row; a repeated deterministic token once
        self.by_token: dict[str, tuple[Any, ...]] = {}

    def add(self, positions: Iterable[int], tokens: list[str], forms: list[bytes]) -> None:
        """The rows of the items at ``positions`` (not yet drawn: ``""``, skipped; already
        added: kept)."""
        batch, by_token, tenant, now = self._batch, self.by_token, self.tenant, self.now
        items, classes, kinds = batch.items, batch.classes, batch.kinds
        for i in positions:
            token = tokens[i]
            if not token or token in by_token:
                continue
            item = items[i]
            c = NAME[classes[i]]
            record_id = item.record_id
            sealer, dek_id = self._record(record_id, c) if record_id else self._pools[c]
            index_key, fingerprints = self._index[c]
            fp = (
                # a text span: on the class's form when the value parses for the class
                fingerprint(index_key.key, classes[i], item.value)
                if item.exact
                else fingerprints.of(c, forms[i])
            )
            ttl = item.ttl_seconds
            by_token[token] = (
                tenant,
                token,
                c,
                kinds[i],
                item.scope,
                record_id or None,
                dek_id,
                sealer.seal(token_field(token), item.value),
                self._expiry[ttl] if ttl in self._expiry else self._expires(ttl),
                now,
                fp,
                index_key.id,
            )

    def _record(self, record_id: str, c: str) -> tuple[crypto.OwnerSealer, str]:
        sealer = self._records.get((record_id, c))
        if sealer is None:
            dek = self._record_deks[(record_id, c)]
            sealer = self._records[(record_id, c)] = (
                crypto.OwnerSealer(dek, self.tenant, record_id),
                str(dek.id),
            )
        return sealer

    def _expires(self, ttl: int) -> datetime:
        at = self._expiry[ttl] = self.now + timedelta(seconds=ttl)
        return at


def _minted(
    batch: Batch, tkeys: Mapping[tuple[str, str], TenantKey]
) -> tuple[list[str], list[bytes]]:
    """The token of each item (``""`` for surrogates: drawn against the table, later) and its
    value's normalized form (what deterministic tokens and fingerprints are keyed on; ``b""``
    where it is computed later, for text spans)."""
    items, classes, kinds, canonical = batch.items, batch.classes, batch.kinds, batch.canonical
    n = len(items)
    forms = [
        b"" if items[i].exact else deterministic_form(classes[i], items[i].value, canonical[i])
        for i in range(n)
    ]
    tokens = [""] * n
    randoms: dict[str, list[int]] = {}
    for i, kind in enumerate(kinds):
        if kind is RANDOM:
            randoms.setdefault(NAME[classes[i]], []).append(i)
    for c, positions in randoms.items():
        for i, token in zip(positions, crypto.random_tokens(c, len(positions)), strict=True):
            tokens[i] = token
    minters = {c: crypto.DeterministicTokens(tkeys[(c, INDEX)].key) for c in batch.class_names}
    for i in batch.det:
        item = items[i]
        c = NAME[classes[i]]
        normalized = item.value.encode("utf-8") if item.exact else forms[i]
        tokens[i] = minters[c].token(c, item.scope, normalized, exact=item.exact)
    return tokens, forms


def _deterministic(batch: Batch, i: int, index_key: TenantKey) -> str:
    """The deterministic token of item ``i`` under one index-key version."""
    item, field_class = batch.items[i], batch.classes[i]
    normalized = (
        item.value.encode("utf-8")
        if item.exact
        else deterministic_form(field_class, item.value, batch.canonical[i])
    )
    return crypto.deterministic_token(
        index_key.key, NAME[field_class], item.scope, normalized, exact=item.exact
    )


def _surrogate(batch: Batch, i: int, attempt: int) -> str | None:
    """One draw of item ``i``'s surrogate (None: no acceptable draw at this attempt)."""
    item, field_class, canonical = batch.items[i], batch.classes[i], batch.canonical[i]
    assert canonical is not None
    try:
        token = surrogate(
            NAME[field_class], canonical, attempt=attempt, keep_last_four=item.keep_last_four
        )
    except SurrogateShapeError:
        raise InvalidInput(f"items[{i}].value", f"not a valid {NAME[field_class]}") from None
    except SurrogateError:
        return None
    if len(token) > TOKEN_MAX:
        raise InvalidInput(f"items[{i}].value", "too long for a surrogate")
    return token


__all__ = [
    "FPE_CLASSES",
    "MAX_ITEMS",
    "MAX_TTL_SECONDS",
    "PoolLimits",
    "RevealedToken",
    "TokenError",
    "TokenKind",
    "TokenizeItem",
    "TokensService",
    "purge_expired_tokens",
]
