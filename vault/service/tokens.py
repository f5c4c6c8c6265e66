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
call in steady state.

Reveals (by role, or under a grant of :mod:`vault.service.grants`) are made by
:mod:`vault.service._token_reveal`, through the one reveal commit.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from vault import crypto
from vault.audit import AuditEvent
from vault.crypto import KEEPS_LAST_FOUR, DataKey, SurrogateError, SurrogateShapeError, surrogate
from vault.deadline import Deadline
from vault.errors import Conflict, InvalidInput, PermissionDenied, ResourceExhausted
from vault.policy import Action, Policy, Role
from vault.schema import DEFAULT_MAX_LENGTH, FieldClass, canonicalize
from vault.service._core import Core, live_record
from vault.service._datakeys import DataKeyRef
from vault.service._keyring import DATA, INDEX, TenantKey
from vault.service._normal import (
    UNKNOWN,
    canonical_or_none,
    class_spec,
    deterministic_form,
    fingerprint,
)
from vault.service._reading import record_key_refs
from vault.service._token_pools import Pool, PoolLimits, TokenPools
from vault.service._token_reveal import TokenRevealer
from vault.service._token_types import (
    FPE_ATTEMPTS,
    FPE_CLASSES,
    MAX_ITEMS,
    MAX_TTL_SECONDS,
    Prepared,
    RevealedToken,
    TokenError,
    TokenizeItem,
    TokenKind,
    check_ttl,
    expired,
    token_field,
)
from vault.service.access import Caller
from vault.service.grants import GrantsService
from vault.service.validators import check_record_id, check_scope, check_tenant
from vault.storage import Database, keys_repo, repo, tokens_repo
from vault.storage.models_tokens import TOKEN_MAX

log = logging.getLogger("vault.service.tokens")

#: the primary key columns of a token row (never rewritten)
_KEY = frozenset({"tenant", "token"})
#: the data key of each (linked record, class)
RecordKeys = dict[tuple[str, str], DataKey]


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

        Raises:
            PermissionDenied: the role may not create tokens, or not deterministic ones of that
                class in that scope (``token_scope_not_allowed``, ``token_scope_shared``;
                audited).
            InvalidInput: a bad item (named as ``items[i].<field>``; values never echoed),
                e.g. a value its class's validator refuses (``items[i].value``).
            NotFound, Erased: a linked record does not exist in the tenant, or was erased.
            Conflict: surrogates kept colliding, or a concurrent call raced (retry).
            Unavailable: key server, database or audit log; nothing was written.
        """
        check_tenant(tenant)
        policy, role = self.core.access.authorize(
            caller, Action.TOKEN_CREATE, tenant=tenant, deadline=deadline
        )
        prepared = _prepare(items, max_items)
        self._check_scopes(caller, policy, role, tenant, prepared, deadline=deadline)
        self.core.tenants.require(caller, role, Action.TOKEN_CREATE, tenant, deadline=deadline)
        for _attempt in range(3):
            try:
                return self._tokenize(caller, role, tenant, prepared, deadline=deadline)
            except IntegrityError:
                # a concurrent call inserted the same deterministic token or surrogate first,
                # or made the same record's data key: the next pass sees its rows
                log.info("token insert raced; retrying")
        raise Conflict("concurrent tokenization; retry")

    def _check_scopes(
        self,
        caller: Caller,
        policy: Policy,
        role: Role,
        tenant: str,
        prepared: Sequence[Prepared],
        *,
        deadline: Deadline,
    ) -> None:
        """Deterministic tokens only where the policy lets the role make them: a deterministic
        token anyone may make in a scope is a guessing oracle on that scope's tokens (random
        and format-preserving tokens are fresh draws: no oracle). Refusals are audited.

        Raises:
            PermissionDenied: ``token_scope_not_allowed`` or ``token_scope_shared``, naming the
                item (``items[i]``), never its value or scope.
        """
        for i, p in enumerate(prepared):
            if p.item.kind is not TokenKind.DETERMINISTIC:
                continue
            try:
                policy.check_deterministic(role, p.field_class, p.item.scope)
            except PermissionDenied as exc:
                refused = PermissionDenied(f"items[{i}].scope: {exc.message}", reason=exc.reason)
                raise self.core.access.deny(
                    caller,
                    role.name,
                    Action.TOKEN_CREATE,
                    refused,
                    tenant=tenant,
                    field_classes=[p.field_class.value],
                    deadline=deadline,
                ) from None

    def _tokenize(
        self,
        caller: Caller,
        role: Role,
        tenant: str,
        prepared: Sequence[Prepared],
        *,
        deadline: Deadline,
    ) -> list[str]:
        classes = {p.field_class.value for p in prepared}
        tkeys = self.core.keyring.current(tenant, classes, deadline=deadline)
        record_deks, new_key_rows = self._record_keys(tenant, prepared, tkeys, deadline=deadline)
        counts: dict[str, int] = {}
        for p in prepared:
            if not p.item.record_id:
                counts[p.field_class.value] = counts.get(p.field_class.value, 0) + 1
        pools, new_pools = self._pools.take(tenant, counts, tkeys)
        tokens = _minted(prepared, tkeys)
        self._keep_tokens_of_older_index_keys(tenant, prepared, tokens, tkeys, deadline=deadline)
        rows = _TokenRows(tenant, datetime.now(UTC), record_deks, pools, tkeys)
        for token, p in zip(tokens, prepared, strict=True):
            rows.add(token, p)  # sealed outside the transaction (all but surrogates)
        new_key_rows += [row for _, row in new_pools]
        events = self._events(caller, role, tenant, prepared)
        deadline.check()  # a call cancelled or past its deadline while sealing writes nothing
        with self.core.audited_write(events, deadline=deadline) as conn:
            self._write(conn, tenant, prepared, tokens, rows, new_key_rows)
        self._pools.install(tenant, new_pools)
        return tokens

    def _write(
        self,
        conn: Connection,
        tenant: str,
        prepared: Sequence[Prepared],
        tokens: list[str],
        rows: _TokenRows,
        new_key_rows: Sequence[Mapping[str, object]],
    ) -> None:
        """The tokenize transaction's rows: new data keys, surrogates (drawn against the table,
        so in here), and the tokens; a deterministic token that exists keeps its row."""
        if new_key_rows:
            repo.insert_data_keys(conn, new_key_rows, rows.now)
        if len(rows.by_token) < len(tokens):
            self._draw_surrogates(conn, tenant, prepared, tokens)
            for token, p in zip(tokens, prepared, strict=True):
                rows.add(token, p)
        det = [
            t
            for t, p in zip(tokens, prepared, strict=True)
            if p.item.kind is TokenKind.DETERMINISTIC
        ]
        existing = tokens_repo.read_tokens(conn, tenant, det) if det else {}
        for token, old in existing.items():
            row = rows.by_token.pop(token)
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
        _count_record_seals(conn, rows.by_token.values())
        tokens_repo.insert_tokens(conn, list(rows.by_token.values()))

    def _keep_tokens_of_older_index_keys(
        self,
        tenant: str,
        prepared: Sequence[Prepared],
        tokens: list[str],
        tkeys: Mapping[tuple[str, str], TenantKey],
        *,
        deadline: Deadline,
    ) -> None:
        """While an index key is being rotated (``cvault keys rotate-index``), a value already
        tokenized under the older version keeps its token: joins on tokens do not break
        mid-rotation. Costs nothing when a class has one index-key version."""
        det = [i for i, p in enumerate(prepared) if p.item.kind is TokenKind.DETERMINISTIC]
        if not det:
            return
        older: dict[str, list[TenantKey]] = {}
        for c in {prepared[i].field_class.value for i in det}:
            keys = self.core.keyring.index_keys(tenant, c, deadline=deadline)
            newest = tkeys[(c, INDEX)].version
            older[c] = [k for k in keys if k.version < newest]
        if not any(older.values()):
            return
        candidates: dict[str, int] = {}
        for i in det:
            p = prepared[i]
            for k in older[p.field_class.value]:
                candidates.setdefault(_deterministic(p, k), i)
        if not candidates:
            return
        with self.core.db.begin(write=False) as conn:
            found = tokens_repo.existing_tokens(conn, tenant, list(candidates))
        for alt in found:
            tokens[candidates[alt]] = alt

    @staticmethod
    def _draw_surrogates(
        conn: Connection, tenant: str, prepared: Sequence[Prepared], tokens: list[str]
    ) -> None:
        """Fill in format-preserving tokens, redrawing any that exist in the tenant already
        (or twice in this call)."""
        todo = [i for i, p in enumerate(prepared) if p.item.kind is TokenKind.FORMAT_PRESERVING]
        taken: set[str] = set()
        for attempt in range(FPE_ATTEMPTS):
            if not todo:
                return
            drawn: dict[int, str] = {}
            retry: list[int] = []
            for i in todo:
                token = _surrogate(i, prepared[i], attempt)
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
        prepared: Sequence[Prepared],
        tkeys: Mapping[tuple[str, str], TenantKey],
        *,
        deadline: Deadline,
    ) -> tuple[RecordKeys, list[dict[str, object]]]:
        """The data key of each (linked record, class), through the one data-key path, and
        rows for the ones to create (made locally, cached at once).

        Raises: NotFound, Erased (a linked record is not live in the tenant).
        """
        wanted: dict[str, set[str]] = {}
        for p in prepared:
            if p.item.record_id:
                wanted.setdefault(p.item.record_id, set()).add(p.field_class.value)
        if not wanted:
            return {}, []
        with self.core.db.begin(write=False) as conn:
            existing = {rid: self._live_record_keys(conn, tenant, rid) for rid in sorted(wanted)}
        refs = [existing[rid][c] for rid, cs in wanted.items() for c in cs if c in existing[rid]]
        deks = self.core.data_keys.open(
            tenant, refs, deadline=deadline, reread=lambda cold: self._reread(tenant, cold)
        )
        out: RecordKeys = {}
        new_rows: list[dict[str, object]] = []
        for rid, classes in wanted.items():
            for c in sorted(classes):
                ref = existing[rid].get(c)
                if ref is not None:
                    out[(rid, c)] = deks[ref.id]
                    continue
                dek, row = self.core.keyring.new_data_key(tenant, rid, c, tkeys[(c, DATA)])
                self.core.data_keys.remember(dek)
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

    def _events(
        self, caller: Caller, role: Role, tenant: str, prepared: Sequence[Prepared]
    ) -> list[AuditEvent]:
        by_record: dict[str | None, set[str]] = {}
        for p in prepared:
            by_record.setdefault(p.item.record_id or None, set()).add(p.field_class.value)
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
        erased (its record was crypto-shredded), or denied (``consent_required``, or
        ``outside_grant``; audited). The audit rows and the plaintext count commit before any
        value is returned.

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
            DecryptionFailed: a stored value or key did not authenticate (tampering).
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


def _count_record_seals(conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Count the linked tokens sealed under each record's data key in this transaction.

    Raises: ResourceExhausted (``data_key_exhausted``): a key is past its bound; nothing is
        written (rekey the record: ``cvault keys rekey``).
    """
    per_key = Counter(str(r["data_key_id"]) for r in rows if r.get("record_id"))
    if per_key and keys_repo.add_data_key_seals(conn, per_key) > MAX_LINKED_SEALS:
        raise ResourceExhausted(
            "a record's data key sealed its bound of linked tokens; rekey the record",
            reason="data_key_exhausted",
        )


class _TokenRows:
    """The token rows of one tokenize call, their values sealed (CPU work: done outside the
    transaction for every token known before it, i.e. all but surrogates)."""

    def __init__(
        self,
        tenant: str,
        now: datetime,
        record_deks: RecordKeys,
        pools: Mapping[str, Pool],
        tkeys: Mapping[tuple[str, str], TenantKey],
    ) -> None:
        self.tenant = tenant
        self.now = now
        self._record_deks = record_deks
        self._pools = pools
        self._tkeys = tkeys
        self._sealers: dict[uuid.UUID, crypto.ValueSealer] = {}
        #: token -> row; a repeated deterministic token once
        self.by_token: dict[str, dict[str, Any]] = {}

    def add(self, token: str, p: Prepared) -> None:
        """The row of ``token`` (not yet drawn: ``""``, skipped; already added: kept)."""
        if not token or token in self.by_token:
            return
        if p.item.record_id:
            owner = p.item.record_id
            dek = self._record_deks[(p.item.record_id, p.field_class.value)]
        else:
            pool = self._pools[p.field_class.value]
            owner, dek = pool.pool_id, pool.dek
        sealer = self._sealers.get(dek.id)
        if sealer is None:
            sealer = self._sealers[dek.id] = crypto.ValueSealer(dek)
        ttl = p.item.ttl_seconds
        ik = self._tkeys[(p.field_class.value, INDEX)]
        self.by_token[token] = {
            "tenant": self.tenant,
            "token": token,
            "field_class": p.field_class.value,
            "kind": p.item.kind.value,
            "scope": p.item.scope,
            "record_id": p.item.record_id or None,
            "data_key_id": str(dek.id),
            "ciphertext": sealer.seal(self.tenant, owner, token_field(token), p.item.value),
            "expires_at": self.now + timedelta(seconds=ttl) if ttl else None,
            "created_at": self.now,
            "fingerprint": _fingerprint(p, ik.key),
            "fingerprint_key_id": ik.id,
        }


def _fingerprint(p: Prepared, index_key: bytes) -> bytes:
    """The item's value fingerprint under the current index key (every kind: an erasure finds
    every token of a value by it), on the canonical form :func:`_prepared` already made. Spans
    of free text (exact) too are fingerprinted on the class's form when the value parses for
    the class: computed here, as they were not validated."""
    return fingerprint(
        index_key, p.field_class, p.item.value, UNKNOWN if p.item.exact else p.canonical
    )


def _minted(prepared: Sequence[Prepared], tkeys: Mapping[tuple[str, str], TenantKey]) -> list[str]:
    """The token of each item; ``""`` for surrogates (drawn against the table, later)."""
    tokens: list[str] = []
    for p in prepared:
        if p.item.kind is TokenKind.DETERMINISTIC:
            tokens.append(_deterministic(p, tkeys[(p.field_class.value, INDEX)]))
        elif p.item.kind is TokenKind.FORMAT_PRESERVING:
            tokens.append("")
        else:
            tokens.append(crypto.random_token(p.field_class.value))
    return tokens


def _deterministic(p: Prepared, index_key: TenantKey) -> str:
    """The deterministic token of an item under one index-key version."""
    normalized = (
        p.item.value.encode("utf-8")
        if p.item.exact
        else deterministic_form(p.field_class, p.item.value, p.canonical)
    )
    return crypto.deterministic_token(
        index_key.key, p.field_class.value, p.item.scope, normalized, exact=p.item.exact
    )


def _surrogate(i: int, p: Prepared, attempt: int) -> str | None:
    """One draw of item ``i``'s surrogate (None: no acceptable draw at this attempt)."""
    assert p.canonical is not None
    try:
        token = surrogate(
            p.field_class.value, p.canonical, attempt=attempt, keep_last_four=p.item.keep_last_four
        )
    except SurrogateShapeError:
        raise InvalidInput(f"items[{i}].value", f"not a valid {p.field_class.value}") from None
    except SurrogateError:
        return None
    if len(token) > TOKEN_MAX:
        raise InvalidInput(f"items[{i}].value", "too long for a surrogate")
    return token


def _prepare(items: Sequence[TokenizeItem], max_items: int) -> list[Prepared]:
    """Every item validated, or InvalidInput naming ``items[i].<field>`` (values never
    echoed)."""
    if not items:
        raise InvalidInput("items", "at least one item is required")
    if len(items) > max_items:
        raise InvalidInput("items", f"at most {max_items} items per call")
    return [_prepared(f"items[{i}]", item) for i, item in enumerate(items)]


def _prepared(where: str, item: TokenizeItem) -> Prepared:
    try:
        field_class = FieldClass(item.field_class)
    except ValueError:
        raise InvalidInput(f"{where}.field_class", "unknown field class") from None
    value = item.value
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{where}.value", "must be a non-empty string")
    limit = DEFAULT_MAX_LENGTH[field_class]
    if len(value) > limit:
        raise InvalidInput(f"{where}.value", f"longer than {limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{where}.value", "is not valid unicode") from None
    check_scope(item.scope, f"{where}.scope")
    check_ttl(item.ttl_seconds, f"{where}.ttl_seconds")
    if item.record_id:
        check_record_id(item.record_id, f"{where}.record_id")
    if item.kind is TokenKind.FORMAT_PRESERVING:
        _check_surrogate_item(where, item, field_class)
    # Spans found in free text (exact, from TokenizeText) are tokenized as found: a detector
    # also takes what the class's validator would not (a phone number that is only possible,
    # a date written 03/29/1972: 833 of the 9,058 spans of the text corpus), and refusing one
    # would fail the whole call. Their canonical form is left to the fingerprint.
    canonical = None if item.exact else _validated(f"{where}.value", field_class, value)
    if item.kind is TokenKind.FORMAT_PRESERVING and canonical is None:
        raise InvalidInput(f"{where}.value", f"not a valid {field_class.value}")
    return Prepared(item, field_class, canonical)


def _validated(field: str, field_class: FieldClass, value: str) -> str | None:
    """The value's canonical form, validated as a record field of its class is (the same
    validator): every kind of token, so ``phone="hello"`` is refused. Free text is not
    validated (None when it has no canonical form, e.g. control characters).

    The canonical form is what deterministic tokens, surrogates and every fingerprint are made
    of, so validating costs a random batch nothing more, except for plain ASCII emails (whose
    fingerprint alone could skip the parser).

    Raises:
        InvalidInput: naming ``field``, with the validator's problem (never the value).
    """
    if field_class is FieldClass.FREE_TEXT:
        return canonical_or_none(field_class, value)
    try:
        return canonicalize(class_spec(field_class), value)
    except InvalidInput as exc:
        problem = exc.problem
    # raised outside the except block: nothing chained (the validators' own rule)
    raise InvalidInput(field, problem)


def _check_surrogate_item(where: str, item: TokenizeItem, field_class: FieldClass) -> None:
    """The class and options of a format-preserving item (its value is validated after)."""
    if field_class not in FPE_CLASSES:
        raise InvalidInput(f"{where}.kind", f"no format-preserving tokens for {field_class.value}")
    if item.keep_last_four and field_class.value not in KEEPS_LAST_FOUR:
        raise InvalidInput(
            f"{where}.keep_last_four",
            f"format-preserving {field_class.value} tokens keep no last four",
        )


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
