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
tenant's **pool** for the class, made locally and replaced after ``pool_max_values`` values or
``pool_max_age`` seconds. Tokenizing makes no key-server call in steady state.

A reveal is looked up only in the tenant the call names, checked against the role's output
for the token's class and the stated purpose (and the record's consent for a consent-bound
purpose), counted against the role's limits and audited in one transaction before any value
leaves. Problems with single tokens (unknown, expired, erased, denied) are reported per token.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.exc import IntegrityError

from vault import crypto
from vault.audit import AuditEntry, AuditEvent
from vault.crypto import (
    KEEPS_LAST_FOUR,
    DataKey,
    SurrogateError,
    SurrogateShapeError,
    surrogate,
)
from vault.crypto._encoding import random_base62, uuid7
from vault.deadline import Deadline
from vault.errors import (
    Conflict,
    ConsentRequired,
    DecryptionFailed,
    Erased,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from vault.keys import KeyManager
from vault.policy import Action, Output, Policy, Purpose, Role, mask
from vault.schema import DEFAULT_MAX_LENGTH, FieldClass
from vault.service._keyring import DATA, INDEX, Keyring, TenantKey, new_data_key
from vault.service._normal import canonical_or_none, deterministic_form
from vault.service.access import Access, Caller
from vault.service.validators import (
    GRANT_RE,
    PRINCIPAL_RE,
    check_record_id,
    check_scope,
    check_tenant,
    matches,
)
from vault.storage import Database, repo
from vault.storage import _tokens_repo as token_repo
from vault.storage.models_tokens import TOKEN_MAX

log = logging.getLogger("vault.service.tokens")

#: values per Tokenize call and tokens per Reveal call
MAX_ITEMS = 10_000
#: longest TTL: ten years
MAX_TTL_SECONDS = 10 * 366 * 86_400
#: classes offered as format-preserving surrogates (short values of a known shape)
FPE_CLASSES = frozenset(
    {
        FieldClass.EMAIL,
        FieldClass.PHONE,
        FieldClass.NAME,
        FieldClass.DATE_OF_BIRTH,
        FieldClass.NATIONAL_ID,
        FieldClass.CARD_NUMBER,
        FieldClass.IBAN,
        FieldClass.IP_ADDRESS,
    }
)
#: collisions tolerated while drawing one surrogate before the call gives up (ABORTED)
FPE_ATTEMPTS = 32
_REVEALING = (Output.PLAIN, Output.MASKED)
#: grants live at most a day, name at most 1,000 records and allow at most 10,000 calls
MAX_GRANT_TTL = 86_400
MAX_GRANT_RECORDS = 1000
MAX_GRANT_USES = 10_000
GRANT_INVALID = "grant_invalid"
OUTSIDE_GRANT = "outside_grant"
PURPOSE_NOT_ALLOWED = "purpose_not_allowed"


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """What a grant allows: ``record_ids`` or a conversation ``scope`` (exactly one)."""

    grantee: str
    field_classes: Sequence[str]
    ttl_seconds: int
    max_uses: int
    record_ids: Sequence[str] = ()
    scope: str = ""


@dataclass(frozen=True, slots=True)
class IssuedGrant:
    grant_id: str
    expires_at: datetime


def _record_ids_or_none(ids: frozenset[str]) -> list[str | None]:
    """The ids in order, or ``[None]`` (one audit row about no particular record)."""
    out: list[str | None] = list(sorted(ids))
    return out or [None]


def _within(grant: token_repo.GrantRow, row: token_repo.StoredToken) -> bool:
    """Whether a token lies within a grant: its class, and its record or its scope."""
    if row.field_class not in grant.field_classes:
        return False
    if grant.record_ids:
        return row.record_id is not None and row.record_id in grant.record_ids
    return bool(grant.scope) and row.scope == grant.scope


class TokenKind(StrEnum):
    RANDOM = "random"
    DETERMINISTIC = "deterministic"
    FORMAT_PRESERVING = "format_preserving"


class TokenError(StrEnum):
    """Why one token of a reveal was not revealed."""

    UNKNOWN = "unknown"
    EXPIRED = "expired"
    ERASED = "erased"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class TokenizeItem:
    value: str = field(repr=False)
    field_class: str
    kind: TokenKind = TokenKind.RANDOM
    scope: str = ""
    ttl_seconds: int = 0
    record_id: str = ""
    keep_last_four: bool = False
    #: deterministic tokens keyed on the exact string (free text), not the class's search form
    exact: bool = False


@dataclass(frozen=True, slots=True)
class RevealedToken:
    """One token's result: an output and value, or an error (with a reason code)."""

    token: str
    error: TokenError | None = None
    output: Output | None = None
    value: str = field(repr=False, default="")
    field_class: str = ""
    reason: str = ""


@dataclass(slots=True)
class _Pool:
    pool_id: str
    dek: DataKey = field(repr=False)
    created: float
    used: int = 0


@dataclass(slots=True)
class _Prepared:
    """One item, validated: its class, spec and the bytes its deterministic token keys on."""

    item: TokenizeItem
    field_class: FieldClass
    canonical: str | None  # None when the value does not validate for its class


#: the primary key columns of a token row (never rewritten)
_KEY = frozenset({"tenant", "token"})


def _token_field(token: str) -> str:
    """The AAD's field part of a token's value: binds the ciphertext to its token."""
    return f"token:{token}"


class TokensService:
    """Tokenize and reveal. Thread-safe; one instance serves every request."""

    def __init__(
        self,
        db: Database,
        keys: KeyManager,
        access: Access,
        keyring: Keyring,
        *,
        pool_max_values: int = 100_000,
        pool_max_age: float = 86_400.0,
        pool_max_entries: int = 10_000,
        clock: Any = time.monotonic,
    ) -> None:
        self.db = db
        self.keys = keys
        self.access = access
        self.audit = access.audit
        self.keyring = keyring
        self._pool_max_values = pool_max_values
        self._pool_max_age = pool_max_age
        self._pool_max_entries = pool_max_entries
        self._clock = clock
        # (tenant, class) -> the current pool, least recently used first: bounded, because
        # tenants are named by callers (an evicted pool costs only a new local data key)
        self._pools: OrderedDict[tuple[str, str], _Pool] = OrderedDict()
        self._pool_lock = threading.Lock()

    # --- tokenize ----------------------------------------------------------------------------

    def tokenize(
        self, caller: Caller, tenant: str, items: Sequence[TokenizeItem], *, deadline: Deadline
    ) -> list[str]:
        """Tokens for ``items``, in order; all or nothing. Audited (one row per linked record
        and one for the standalone values).

        Raises:
            PermissionDenied: the role may not create tokens (audited).
            InvalidInput: a bad item (named as ``items[i].<field>``; values never echoed).
            NotFound, Erased: a linked record does not exist in the tenant, or was erased.
            Conflict: surrogates kept colliding, or a concurrent call raced (retry).
            Unavailable: key server, database or audit log; nothing was written.
        """
        check_tenant(tenant)
        _, role = self.access.authorize(
            caller, Action.TOKEN_CREATE, tenant=tenant, deadline=deadline
        )
        prepared = self._validate(items)
        for _attempt in range(3):
            try:
                return self._tokenize(caller, role, tenant, prepared, deadline=deadline)
            except IntegrityError:
                # a concurrent call inserted the same deterministic token or surrogate first,
                # or made the same record's data key: the next pass sees its rows
                log.info("token insert raced; retrying")
        raise Conflict("concurrent tokenization; retry")

    @staticmethod
    def _validate(items: Sequence[TokenizeItem]) -> list[_Prepared]:
        if not items:
            raise InvalidInput("items", "at least one item is required")
        if len(items) > MAX_ITEMS:
            raise InvalidInput("items", f"at most {MAX_ITEMS} items per call")
        out: list[_Prepared] = []
        for i, item in enumerate(items):
            where = f"items[{i}]"
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
            if not 0 <= item.ttl_seconds <= MAX_TTL_SECONDS:
                raise InvalidInput(f"{where}.ttl_seconds", f"must be 0..{MAX_TTL_SECONDS}")
            if item.record_id:
                check_record_id(item.record_id, f"{where}.record_id")
            # only the kinds that use it: validation is most of a random batch's CPU time
            needs_canonical = item.kind is TokenKind.FORMAT_PRESERVING or (
                item.kind is TokenKind.DETERMINISTIC and not item.exact
            )
            canonical = canonical_or_none(field_class, value) if needs_canonical else None
            if item.kind is TokenKind.FORMAT_PRESERVING:
                if field_class not in FPE_CLASSES:
                    raise InvalidInput(
                        f"{where}.kind", f"no format-preserving tokens for {field_class.value}"
                    )
                if canonical is None:
                    raise InvalidInput(f"{where}.value", f"not a valid {field_class.value}")
                if item.keep_last_four and field_class.value not in KEEPS_LAST_FOUR:
                    raise InvalidInput(
                        f"{where}.keep_last_four",
                        f"format-preserving {field_class.value} tokens keep no last four",
                    )
            out.append(_Prepared(item, field_class, canonical))
        return out

    def _tokenize(
        self,
        caller: Caller,
        role: Role,
        tenant: str,
        prepared: Sequence[_Prepared],
        *,
        deadline: Deadline,
    ) -> list[str]:
        classes = {p.field_class.value for p in prepared}
        tkeys = self.keyring.current(tenant, classes, deadline=deadline)
        linked = sorted({p.item.record_id for p in prepared if p.item.record_id})
        record_deks, new_dek_rows = self._record_keys(
            tenant, linked, prepared, tkeys, deadline=deadline
        )
        standalone = [p for p in prepared if not p.item.record_id]
        pools, new_pools = self._pools_for(tenant, standalone, tkeys)
        now = datetime.now(UTC)

        tokens: list[str] = []
        for p in prepared:
            if p.item.kind is TokenKind.DETERMINISTIC:
                ik = tkeys[(p.field_class.value, INDEX)]
                normalized = (
                    p.item.value.encode("utf-8")
                    if p.item.exact
                    else deterministic_form(p.field_class, p.item.value, p.canonical)
                )
                tokens.append(
                    crypto.deterministic_token(
                        ik.key, p.field_class.value, p.item.scope, normalized, exact=p.item.exact
                    )
                )
            elif p.item.kind is TokenKind.FORMAT_PRESERVING:
                tokens.append("")  # drawn below, against the table
            else:
                tokens.append(crypto.random_token(p.field_class.value))

        self._keep_tokens_of_older_index_keys(tenant, prepared, tokens, tkeys, deadline=deadline)
        events = self._events(caller, role, tenant, prepared)
        sealers: dict[uuid.UUID, crypto.ValueSealer] = {}

        def row_of(token: str, p: _Prepared) -> dict[str, Any]:
            """The token's row, its value sealed (CPU work: done outside the transaction for
            every token known before it, i.e. all but surrogates)."""
            if p.item.record_id:
                owner = p.item.record_id
                dek = record_deks[(p.item.record_id, p.field_class.value)]
            else:
                pool = pools[p.field_class.value]
                owner, dek = pool.pool_id, pool.dek
            sealer = sealers.get(dek.id)
            if sealer is None:
                sealer = sealers[dek.id] = crypto.ValueSealer(dek)
            ttl = p.item.ttl_seconds
            return {
                "tenant": tenant,
                "token": token,
                "field_class": p.field_class.value,
                "kind": p.item.kind.value,
                "scope": p.item.scope,
                "record_id": p.item.record_id or None,
                "data_key_id": str(dek.id),
                "ciphertext": sealer.seal(tenant, owner, _token_field(token), p.item.value),
                "expires_at": now + timedelta(seconds=ttl) if ttl else None,
                "created_at": now,
            }

        rows: dict[str, dict[str, Any]] = {}  # token -> row; a repeated deterministic token once
        for token, p in zip(tokens, prepared, strict=True):
            if token and token not in rows:
                rows[token] = row_of(token, p)
        det = [
            t
            for t, p in zip(tokens, prepared, strict=True)
            if p.item.kind is TokenKind.DETERMINISTIC
        ]
        self.audit.prepare(deadline=deadline)
        entries: list[AuditEntry] = []
        with self.db.begin() as conn:
            if new_dek_rows:
                repo.insert_data_keys(conn, new_dek_rows, now)
            if new_pools:
                repo.insert_data_keys(conn, [row for _, row in new_pools], now)
            if len(rows) < len(tokens):  # surrogates: drawn against the table, so in here
                self._draw_surrogates(conn, tenant, prepared, tokens)
                for token, p in zip(tokens, prepared, strict=True):
                    if token not in rows:
                        rows[token] = row_of(token, p)
            existing = token_repo.read_tokens(conn, tenant, det) if det else {}
            for token, old in existing.items():
                row = rows.pop(token)
                if old.dek_erased or old.wrapped_dek is None or _expired(old.expires_at, now):
                    # its value was shredded with its record, or it lapsed: issue it afresh
                    token_repo.replace_token(
                        conn, tenant, token, {k: v for k, v in row.items() if k not in _KEY}
                    )
                elif old.expires_at is not None and (
                    row["expires_at"] is None or row["expires_at"] > old.expires_at
                ):
                    token_repo.set_expiry(conn, tenant, token, row["expires_at"])
            token_repo.insert_tokens(conn, list(rows.values()))
            entries = self.audit.append(conn, events, deadline=deadline)
        self.audit.after_commit(entries)
        self._install_pools(tenant, standalone, new_pools)
        return tokens

    def _keep_tokens_of_older_index_keys(
        self,
        tenant: str,
        prepared: Sequence[_Prepared],
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
            keys = self.keyring.index_keys(tenant, c, deadline=deadline)
            newest = tkeys[(c, INDEX)].version
            older[c] = [k for k in keys if k.version < newest]
        if not any(older.values()):
            return
        candidates: dict[str, int] = {}
        for i in det:
            p = prepared[i]
            normalized = (
                p.item.value.encode("utf-8")
                if p.item.exact
                else deterministic_form(p.field_class, p.item.value, p.canonical)
            )
            for k in older[p.field_class.value]:
                alt = crypto.deterministic_token(
                    k.key, p.field_class.value, p.item.scope, normalized, exact=p.item.exact
                )
                candidates.setdefault(alt, i)
        if not candidates:
            return
        with self.db.begin(write=False) as conn:
            found = token_repo.existing_tokens(conn, tenant, list(candidates))
        for alt in found:
            tokens[candidates[alt]] = alt

    def _draw_surrogates(
        self, conn: Any, tenant: str, prepared: Sequence[_Prepared], tokens: list[str]
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
                p = prepared[i]
                assert p.canonical is not None
                try:
                    token = surrogate(
                        p.field_class.value,
                        p.canonical,
                        attempt=attempt,
                        keep_last_four=p.item.keep_last_four,
                    )
                except SurrogateShapeError:
                    raise InvalidInput(
                        f"items[{i}].value", f"not a valid {p.field_class.value}"
                    ) from None
                except SurrogateError:
                    retry.append(i)  # no acceptable draw this time: try a wider attempt
                    continue
                if len(token) > TOKEN_MAX:
                    raise InvalidInput(f"items[{i}].value", "too long for a surrogate")
                drawn[i] = token
            clash = token_repo.existing_tokens(conn, tenant, list(drawn.values()))
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
        record_ids: Sequence[str],
        prepared: Sequence[_Prepared],
        tkeys: Mapping[tuple[str, str], TenantKey],
        *,
        deadline: Deadline,
    ) -> tuple[dict[tuple[str, str], DataKey], list[dict[str, object]]]:
        """The data key of each (linked record, class), and rows for the ones to create."""
        out: dict[tuple[str, str], DataKey] = {}
        new_rows: list[dict[str, object]] = []
        if not record_ids:
            return out, new_rows
        wanted: dict[str, set[str]] = {}
        for p in prepared:
            if p.item.record_id:
                wanted.setdefault(p.item.record_id, set()).add(p.field_class.value)
        existing: dict[str, dict[str, tuple[str, bytes, str]]] = {}
        with self.db.begin(write=False) as conn:
            for rid in record_ids:
                if repo.get_record(conn, tenant, rid) is None:
                    if repo.is_erased(conn, tenant, rid):
                        raise Erased("record erased")
                    raise NotFound("record not found")
                existing[rid] = repo.record_data_keys(conn, tenant, rid)
        need_tk: set[str] = set()
        for rid, classes in wanted.items():
            for c in classes:
                if c in existing[rid]:
                    dek_id, _, tk_id = existing[rid][c]
                    cached = self.keys.data_keys.get(dek_id)
                    if cached is not None:
                        out[(rid, c)] = DataKey(uuid.UUID(dek_id), cached)
                    else:
                        need_tk.add(tk_id)
        tks = self.keyring.by_ids(tenant, need_tk, deadline=deadline) if need_tk else {}
        for rid, classes in wanted.items():
            for c in sorted(classes):
                if (rid, c) in out:
                    continue
                if c in existing[rid]:
                    dek_id, wrapped, tk_id = existing[rid][c]
                    tk = tks.get(tk_id)
                    if tk is None:
                        raise DecryptionFailed()
                    dek = crypto.unwrap_data_key(
                        uuid.UUID(tk_id),
                        tk.key,
                        uuid.UUID(dek_id),
                        wrapped,
                        tenant=tenant,
                        record_id=rid,
                        field_class=c,
                    )
                else:
                    dek, row = new_data_key(tenant, rid, c, tkeys[(c, DATA)])
                    new_rows.append(row)
                self.keys.data_keys.put(str(dek.id), dek.key)
                out[(rid, c)] = dek
        return out, new_rows

    def _pools_for(
        self,
        tenant: str,
        standalone: Sequence[_Prepared],
        tkeys: Mapping[tuple[str, str], TenantKey],
    ) -> tuple[dict[str, _Pool], list[tuple[_Pool, dict[str, object]]]]:
        """The pool data key for each class of the standalone items; new pools (rows to insert,
        installed only after the commit) where none is current, or the current one is full or
        old."""
        counts: dict[str, int] = {}
        for p in standalone:
            counts[p.field_class.value] = counts.get(p.field_class.value, 0) + 1
        out: dict[str, _Pool] = {}
        new: list[tuple[_Pool, dict[str, object]]] = []
        now = self._clock()
        with self._pool_lock:
            for c, n in counts.items():
                pool = self._pools.get((tenant, c))
                if (
                    pool is not None
                    and pool.used + n <= self._pool_max_values
                    and now - pool.created < self._pool_max_age
                ):
                    pool.used += n
                    out[c] = pool
                    self._pools.move_to_end((tenant, c))
                    continue
                pool_id = str(uuid7())
                dek, row = new_data_key(tenant, pool_id, c, tkeys[(c, DATA)])
                fresh = _Pool(pool_id, dek, now, n)
                out[c] = fresh
                new.append((fresh, row))
        return out, new

    def _install_pools(
        self,
        tenant: str,
        standalone: Sequence[_Prepared],
        new: Sequence[tuple[_Pool, dict[str, object]]],
    ) -> None:
        with self._pool_lock:
            for pool, row in new:
                self.keys.data_keys.put(str(pool.dek.id), pool.dek.key)
                self._pools[(tenant, str(row["field_class"]))] = pool
                self._pools.move_to_end((tenant, str(row["field_class"])))
            while len(self._pools) > self._pool_max_entries:
                self._pools.popitem(last=False)

    def _events(
        self, caller: Caller, role: Role, tenant: str, prepared: Sequence[_Prepared]
    ) -> list[AuditEvent]:
        by_record: dict[str | None, set[str]] = {}
        for p in prepared:
            by_record.setdefault(p.item.record_id or None, set()).add(p.field_class.value)
        return [
            self.access.event(
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
        :meth:`issue_grant`) instead of its own role: only tokens of the grant's records or
        scope and classes, for the grant's purpose, with the granting role's outputs; each call
        uses the grant once. ``action`` is ``token.reveal`` or ``text.reveal`` (RevealText).

        Raises:
            PermissionDenied: action or purpose not allowed, or the grant is not valid for this
                caller (unknown, expired, used up, another principal's): audited.
            InvalidInput: no tokens, too many, or the purpose missing or unknown.
            ResourceExhausted: the role's plaintext limit (audited); nothing revealed.
            DecryptionFailed: a stored value or key did not authenticate (tampering).
            Unavailable: key server, database or audit log; nothing revealed.
        """
        check_tenant(tenant)
        policy, role, purpose, grant = self._authority(
            caller, tenant, grant_id, action, deadline=deadline
        )
        if not tokens:
            raise InvalidInput("tokens", "at least one token is required")
        if len(tokens) > MAX_ITEMS:
            raise InvalidInput("tokens", f"at most {MAX_ITEMS} tokens per call")
        lookup = [t for t in tokens if isinstance(t, str) and 0 < len(t) <= TOKEN_MAX]
        now = datetime.now(UTC)
        with self.db.begin(write=False) as conn:
            stored = token_repo.read_tokens(conn, tenant, lookup)
        results: dict[str, RevealedToken] = {}
        decide: dict[str, token_repo.StoredToken] = {}
        for t in set(tokens):
            row = stored.get(t) if isinstance(t, str) else None
            if row is None:
                results[t] = RevealedToken(t, TokenError.UNKNOWN, reason="unknown_token")
            elif _expired(row.expires_at, now):
                results[t] = RevealedToken(
                    t, TokenError.EXPIRED, field_class=row.field_class, reason="expired"
                )
            elif row.dek_erased or row.record_erased:
                results[t] = RevealedToken(
                    t, TokenError.ERASED, field_class=row.field_class, reason="erased"
                )
            elif row.wrapped_dek is None:
                # the key row is gone without a tombstone: tampering, not erasure
                raise DecryptionFailed()
            else:
                decide[t] = row
        outside: dict[str, token_repo.StoredToken] = {}
        if grant is not None:
            for t, r in list(decide.items()):
                if not _within(grant, r):
                    outside[t] = r
                    results[t] = RevealedToken(
                        t, TokenError.DENIED, field_class=r.field_class, reason=OUTSIDE_GRANT
                    )
                    del decide[t]
        decisions = policy.outputs(
            role,
            purpose.name if purpose else None,
            {t: FieldClass(r.field_class) for t, r in decide.items()},
        )
        revealing = {t: r for t, r in decide.items() if decisions[t].output in _REVEALING}
        plain = self._open(tenant, revealing, deadline=deadline)
        for t, r in decide.items():
            d = decisions[t]
            if d.output is Output.PLAIN:
                value = plain[t]
            elif d.output is Output.MASKED:
                # masks are defined on canonical forms (as GetRecord stores them)
                cls = FieldClass(r.field_class)
                value = mask(cls, canonical_or_none(cls, plain[t]) or plain[t])
            elif d.output is Output.TOKEN:
                value = t
            else:
                value = ""
            results[t] = RevealedToken(t, None, d.output, value, r.field_class, d.reason)
        self._commit_reveal(
            caller,
            role,
            purpose,
            tenant,
            decide,
            decisions,
            results,
            action,
            grant,
            outside,
            deadline=deadline,
        )
        return [results[t] for t in tokens]

    def check_reveal(
        self, caller: Caller, tenant: str, grant_id: str, action: Action, *, deadline: Deadline
    ) -> None:
        """The checks a reveal makes before looking at any token (action or grant, purpose),
        for a call that turns out to hold no token. Raises as :meth:`reveal`."""
        check_tenant(tenant)
        self._authority(caller, tenant, grant_id, action, deadline=deadline)

    def _authority(
        self, caller: Caller, tenant: str, grant_id: str, action: Action, *, deadline: Deadline
    ) -> tuple[Policy, Role, Purpose | None, token_repo.GrantRow | None]:
        if grant_id:
            return self._grant_authority(caller, tenant, grant_id, action, deadline=deadline)
        policy, role = self.access.authorize(caller, action, tenant=tenant, deadline=deadline)
        purpose = self.access.check_purpose(
            policy,
            caller,
            role,
            action,
            required=True,
            tenant=tenant,
            record_id=None,
            deadline=deadline,
        )
        return policy, role, purpose, None

    def _grant_authority(
        self, caller: Caller, tenant: str, grant_id: str, action: Action, *, deadline: Deadline
    ) -> tuple[Policy, Role, Purpose, token_repo.GrantRow]:
        """The policy, the granting role (whose outputs apply), the purpose and the grant, if
        ``grant_id`` is a live grant of this tenant issued to this caller and its grantor may
        still issue it under the current policy. Any refusal is audited."""
        policy = self.access.policy.current
        try:
            agent_role = policy.role_of(caller.principal).name
        except PermissionDenied as exc:
            raise self.access.deny(
                caller, "", action, exc, tenant=tenant, deadline=deadline
            ) from None

        def refuse(why: str, reason: str = GRANT_INVALID) -> PermissionDenied:
            err = self.access.deny(
                caller,
                agent_role,
                action,
                PermissionDenied(why, reason=reason),
                tenant=tenant,
                deadline=deadline,
            )
            assert isinstance(err, PermissionDenied)
            return err

        grant = None
        if matches(GRANT_RE, grant_id):
            with self.db.begin(write=False) as conn:
                grant = token_repo.get_grant(conn, tenant, grant_id)
        if grant is None or grant.grantee != caller.principal.name:
            raise refuse("no such grant for this caller")
        if _expired(grant.expires_at, datetime.now(UTC)):
            raise refuse("grant expired")
        if grant.uses >= grant.max_uses:
            raise refuse("grant used up")
        if caller.purpose and caller.purpose != grant.purpose:
            raise refuse("purpose differs from the grant's", PURPOSE_NOT_ALLOWED)
        grantor_role = policy.roles.get(grant.grantor_role)
        purpose = policy.purpose(grant.purpose)
        if (
            grantor_role is None
            or purpose is None
            or policy.principals.get(grant.grantor) != grantor_role.name
            or Action.GRANT_ISSUE not in grantor_role.actions
            or grant.purpose not in grantor_role.purposes
        ):
            raise refuse("the grantor may no longer issue this grant")
        return policy, grantor_role, purpose, grant

    # --- grants ------------------------------------------------------------------------------

    def issue_grant(
        self, caller: Caller, tenant: str, request: GrantRequest, *, deadline: Deadline
    ) -> IssuedGrant:
        """A grant letting ``request.grantee`` reveal, for ``caller``'s purpose, only tokens of
        the named records (or of the conversation scope) and classes, up to ``max_uses`` calls
        within ``ttl_seconds``, seeing what ``caller``'s role would see. Audited (one row per
        record named, naming the grantee as ``on_behalf_of``).

        Raises:
            PermissionDenied: the role may not issue grants or use the purpose (audited).
            InvalidInput: a bad field (named), including a purpose missing or unknown.
            NotFound: a named record does not exist in the tenant.
        """
        check_tenant(tenant)
        policy, role = self.access.authorize(
            caller, Action.GRANT_ISSUE, tenant=tenant, deadline=deadline
        )
        purpose = self.access.check_purpose(
            policy,
            caller,
            role,
            Action.GRANT_ISSUE,
            required=True,
            tenant=tenant,
            record_id=None,
            deadline=deadline,
        )
        assert purpose is not None
        if not matches(PRINCIPAL_RE, request.grantee):
            raise InvalidInput(
                "grantee", "must be a principal name: 1-256 printable ASCII, no spaces"
            )
        if bool(request.record_ids) == bool(request.scope):
            raise InvalidInput("record_ids", "give record ids or a scope (exactly one of them)")
        if len(request.record_ids) > MAX_GRANT_RECORDS:
            raise InvalidInput("record_ids", f"at most {MAX_GRANT_RECORDS} records")
        for i, rid in enumerate(request.record_ids):
            check_record_id(rid, f"record_ids[{i}]")
        check_scope(request.scope)
        if not request.field_classes:
            raise InvalidInput("field_classes", "at least one field class is required")
        for i, c in enumerate(request.field_classes):
            try:
                FieldClass(c)
            except ValueError:
                raise InvalidInput(f"field_classes[{i}]", "unknown field class") from None
        if not 1 <= request.ttl_seconds <= MAX_GRANT_TTL:
            raise InvalidInput("ttl_seconds", f"must be 1..{MAX_GRANT_TTL}")
        if not 1 <= request.max_uses <= MAX_GRANT_USES:
            raise InvalidInput("max_uses", f"must be 1..{MAX_GRANT_USES}")
        now = datetime.now(UTC)
        grant = token_repo.GrantRow(
            id=f"grt_{random_base62(128)}",
            tenant=tenant,
            grantor=caller.principal.name,
            grantor_role=role.name,
            grantee=request.grantee,
            record_ids=frozenset(request.record_ids),
            scope=request.scope,
            field_classes=frozenset(request.field_classes),
            purpose=purpose.name,
            expires_at=now + timedelta(seconds=request.ttl_seconds),
            max_uses=request.max_uses,
            uses=0,
        )
        events = [
            self.access.event(
                caller,
                role.name,
                Action.GRANT_ISSUE,
                tenant=tenant,
                record_id=rid,
                field_classes=sorted(grant.field_classes),
                on_behalf_of=request.grantee,
            )
            for rid in _record_ids_or_none(grant.record_ids)
        ]
        self.audit.prepare(deadline=deadline)
        with self.db.begin() as conn:
            for rid in sorted(grant.record_ids):
                if repo.get_record(conn, tenant, rid) is None:
                    raise NotFound("record not found")
            token_repo.insert_grant(conn, grant, now)
            entries = self.audit.append(conn, events, deadline=deadline)
        self.audit.after_commit(entries)
        return IssuedGrant(grant.id, grant.expires_at)

    def _open(
        self, tenant: str, rows: Mapping[str, token_repo.StoredToken], *, deadline: Deadline
    ) -> dict[str, str]:
        deks: dict[str, DataKey] = {}
        need_tk: set[str] = set()
        for r in rows.values():
            cached = self.keys.data_keys.get(r.data_key_id)
            if cached is not None:
                deks[r.data_key_id] = DataKey(uuid.UUID(r.data_key_id), cached)
            elif r.tenant_key_id is not None:
                need_tk.add(r.tenant_key_id)
        if need_tk:
            tks = self.keyring.by_ids(tenant, need_tk, deadline=deadline)
            if need_tk - set(tks):
                # re-wrapped under a new tenant-key version (rotate-tenant) after being read
                with self.db.begin(write=False) as conn:
                    fresh = token_repo.read_tokens(conn, tenant, list(rows))
                rows = {t: fresh.get(t, r) for t, r in rows.items()}
                tks = self.keyring.by_ids(
                    tenant, {r.tenant_key_id or "" for r in rows.values()}, deadline=deadline
                )
            for r in rows.values():
                if r.data_key_id in deks:
                    continue
                tk = tks.get(r.tenant_key_id or "")
                if tk is None or r.wrapped_dek is None or r.key_owner is None:
                    raise DecryptionFailed()
                dek = crypto.unwrap_data_key(
                    uuid.UUID(tk.id),
                    tk.key,
                    uuid.UUID(r.data_key_id),
                    r.wrapped_dek,
                    tenant=tenant,
                    record_id=r.key_owner,
                    field_class=r.field_class,
                )
                deks[r.data_key_id] = dek
                self.keys.data_keys.put(r.data_key_id, dek.key)
        out: dict[str, str] = {}
        for t, r in rows.items():
            owner = r.record_id or r.key_owner
            if owner is None or (r.record_id is not None and r.key_owner != r.record_id):
                raise DecryptionFailed()
            out[t] = crypto.open_value(
                deks[r.data_key_id], tenant, owner, _token_field(t), r.ciphertext
            )
        return out

    def _commit_reveal(
        self,
        caller: Caller,
        role: Role,
        purpose: Purpose | None,
        tenant: str,
        rows: Mapping[str, token_repo.StoredToken],
        decisions: Mapping[str, Any],
        results: dict[str, RevealedToken],
        action: Action,
        grant: token_repo.GrantRow | None,
        outside: Mapping[str, token_repo.StoredToken],
        *,
        deadline: Deadline,
    ) -> None:
        """Consent (for a consent-bound purpose), the plaintext count and the audit rows in one
        transaction; tokens refused for consent become DENIED (and are audited as such)."""
        revealing = [t for t, r in rows.items() if decisions[t].output in _REVEALING]
        self.audit.prepare(deadline=deadline)
        try:
            with self.db.begin() as conn:
                refused: set[str] = set()
                if purpose is not None and purpose.consent_required:
                    consent: dict[str, bool] = {}
                    for t, r in rows.items():
                        if r.record_id is None:
                            refused.add(t)  # a standalone value has no customer consent
                            continue
                        if r.record_id not in consent:
                            consent[r.record_id] = self.access.has_consent(
                                conn, tenant, r.record_id, purpose
                            )
                        if not consent[r.record_id]:
                            refused.add(t)
                allowed = [t for t in revealing if t not in refused]
                n_plain = sum(1 for t in allowed if decisions[t].output is Output.PLAIN)
                if grant is not None and not token_repo.use_grant(conn, grant.id):
                    raise PermissionDenied("grant used up", reason=GRANT_INVALID)
                self.access.charge(conn, caller, role, n_plain)
                events = self._reveal_events(
                    caller,
                    role,
                    tenant,
                    {**rows, **outside},
                    [
                        (allowed, ""),
                        (sorted(refused), ConsentRequired.reason),
                        (sorted(outside), OUTSIDE_GRANT),
                    ],
                    action,
                    grant,
                )
                entries = self.audit.append(conn, events, deadline=deadline) if events else []
        except PermissionDenied as exc:
            raise self.access.deny(
                caller, role.name, action, exc, tenant=tenant, deadline=deadline
            ) from None
        except ResourceExhausted as exc:
            raise self.access.deny(
                caller,
                role.name,
                "limit.exceeded",
                exc,
                tenant=tenant,
                field_classes=sorted({rows[t].field_class for t in revealing}),
                deadline=deadline,
            ) from None
        self.audit.after_commit(entries)
        for t in refused:
            results[t] = RevealedToken(
                t,
                TokenError.DENIED,
                field_class=rows[t].field_class,
                reason=ConsentRequired.reason,
            )

    def _reveal_events(
        self,
        caller: Caller,
        role: Role,
        tenant: str,
        rows: Mapping[str, token_repo.StoredToken],
        groups: Sequence[tuple[Sequence[str], str]],
        action: Action,
        grant: token_repo.GrantRow | None,
    ) -> list[AuditEvent]:
        """Per group of tokens (revealed: reason ``""``; refused: the reason), one row per record
        and one for standalone tokens. Under a grant the row names the agent (principal and its
        own role) and, as ``on_behalf_of``, the granting principal."""
        events: list[AuditEvent] = []
        role_name = role.name
        on_behalf_of = ""
        if grant is not None:
            role_name = self.access.role_name(caller)
            on_behalf_of = grant.grantor
        for outcome_tokens, refusal in groups:
            by_record: dict[str | None, set[str]] = {}
            for t in outcome_tokens:
                by_record.setdefault(rows[t].record_id, set()).add(rows[t].field_class)
            for rid, classes in sorted(by_record.items(), key=lambda kv: kv[0] or ""):
                events.append(
                    self.access.event(
                        caller,
                        role_name,
                        action,
                        tenant=tenant,
                        record_id=rid,
                        field_classes=sorted(classes),
                        on_behalf_of=on_behalf_of,
                        purpose=grant.purpose if grant is not None else None,
                        **({"outcome": "denied", "reason": refusal} if refusal else {}),
                    )
                )
        return events

    # --- housekeeping ------------------------------------------------------------------------

    def purge_expired(self, *, batch: int = 1000) -> int:
        """Delete every token whose TTL passed, in batches; returns how many."""
        return purge_expired_tokens(self.db, batch=batch)


def purge_expired_tokens(db: Database, *, batch: int = 1000, dry_run: bool = False) -> int:
    """Delete (or with ``dry_run`` only count) the tokens whose TTL passed, in short
    transactions of ``batch`` rows; returns how many. Safe while the service runs."""
    now = datetime.now(UTC)
    if dry_run:
        with db.begin(write=False) as conn:
            return token_repo.count_expired(conn, now)
    total = 0
    while True:
        with db.begin() as conn:
            n = token_repo.purge_expired(conn, now, batch)
        total += n
        if n < batch:
            return total


def _expired(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and expires_at <= now
