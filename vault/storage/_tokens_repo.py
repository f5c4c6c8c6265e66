"""SQL for the token table, over a connection the caller opened."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, exists, func, insert, select, tuple_, update
from sqlalchemy.engine import Connection

from vault.storage._bulk import bulk_insert, db_time
from vault.storage.models import DataKeyRow, ErasedDataKey, Erasure, TenantKey
from vault.storage.models_tokens import ErasedFingerprint, RevealGrant, TokenRow

tokens = cast(Table, TokenRow.__table__)
erased_fps = cast(Table, ErasedFingerprint.__table__)
grants = cast(Table, RevealGrant.__table__)
_dk = cast(Table, DataKeyRow.__table__)
_edk = cast(Table, ErasedDataKey.__table__)
_er = cast(Table, Erasure.__table__)
_tk = cast(Table, TenantKey.__table__)

#: tokens per ``IN (...)`` list: well under SQLite's and PostgreSQL's parameter limits
CHUNK = 500


@dataclass(frozen=True, slots=True)
class StoredToken:
    """A token row joined with its data key (None when the key row is gone)."""

    token: str
    field_class: str
    kind: str
    scope: str
    record_id: str | None
    data_key_id: str
    ciphertext: bytes = field(repr=False)
    expires_at: datetime | None
    # the data key, when its row exists and has no tombstone
    wrapped_dek: bytes | None = field(repr=False)
    tenant_key_id: str | None
    key_owner: str | None  # the data key row's record_id: the linked record or a pool id
    dek_erased: bool
    record_erased: bool
    #: a standalone token of a value erased with a record (tombstoned by its fingerprint), or
    #: its value emptied by that erasure
    value_erased: bool = False
    fingerprint: bytes | None = field(repr=False, default=None)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def read_tokens(conn: Connection, tenant: str, wanted: Sequence[str]) -> dict[str, StoredToken]:
    """The rows of ``wanted`` tokens in ``tenant`` (missing ones are absent)."""
    out: dict[str, StoredToken] = {}
    unique = sorted(set(wanted))
    for chunk in _chunks(unique):
        rows = conn.execute(
            select(
                tokens,
                _dk.c.wrapped.label("wrapped_dek"),
                _dk.c.tenant_key_id,
                _dk.c.record_id.label("key_owner"),
                _edk.c.data_key_id.label("tombstone"),
                _er.c.record_id.label("erased_record"),
                _value_erased().label("value_erased"),
            )
            .select_from(
                tokens.outerjoin(
                    _dk, (_dk.c.id == tokens.c.data_key_id) & (_dk.c.tenant == tokens.c.tenant)
                )
                .outerjoin(_edk, _edk.c.data_key_id == tokens.c.data_key_id)
                .outerjoin(_er, _er.c.record_id == tokens.c.record_id)
            )
            .where(tokens.c.tenant == tenant, tokens.c.token.in_(list(chunk)))
        ).all()
        for r in rows:
            dek_erased = r.tombstone is not None
            out[r.token] = StoredToken(
                token=r.token,
                field_class=r.field_class,
                kind=r.kind,
                scope=r.scope,
                record_id=r.record_id,
                data_key_id=r.data_key_id,
                ciphertext=bytes(r.ciphertext),
                expires_at=r.expires_at,
                wrapped_dek=None if dek_erased or r.wrapped_dek is None else bytes(r.wrapped_dek),
                tenant_key_id=None if dek_erased else r.tenant_key_id,
                key_owner=None if dek_erased else r.key_owner,
                dek_erased=dek_erased,
                record_erased=r.erased_record is not None,
                value_erased=bool(r.value_erased) or not r.ciphertext,
                fingerprint=None if r.fingerprint is None else bytes(r.fingerprint),
            )
    return out


def _value_erased() -> Any:
    """Whether a standalone token's fingerprint was tombstoned by an erasure at or after the
    token was made: so a token row restored from a backup stays erased, while a token issued
    again later for the value (a new tokenization) reveals."""
    return exists().where(
        tokens.c.record_id.is_(None),
        erased_fps.c.tenant == tokens.c.tenant,
        erased_fps.c.fingerprint == tokens.c.fingerprint,
        erased_fps.c.erased_at >= tokens.c.created_at,
    )


def existing_tokens(conn: Connection, tenant: str, wanted: Sequence[str]) -> set[str]:
    """Which of ``wanted`` already exist in ``tenant``: primary-key look-ups, in one statement
    with an array on PostgreSQL, in chunks of :data:`CHUNK` on SQLite (the hot path of
    deterministic Tokenize, so in plain SQL: nothing to compile per call)."""
    unique = sorted(set(wanted))
    if not unique:
        return set()
    if conn.dialect.name == "postgresql":
        rows = conn.exec_driver_sql(_EXISTING_ANY, (tenant, unique))
        return {r[0] for r in rows}
    found: set[str] = set()
    for chunk in _chunks(unique):
        marks = ", ".join("?" * len(chunk))
        rows = conn.exec_driver_sql(f"{_EXISTING_IN} ({marks})", (tenant, *chunk))
        found.update(r[0] for r in rows)
    return found


_EXISTING_ANY = "SELECT token FROM tokens WHERE tenant = %s AND token = ANY(%s)"
_EXISTING_IN = "SELECT token FROM tokens WHERE tenant = ? AND token IN"


#: the columns of a token row, in the order :func:`insert_tokens` takes them
TOKEN_COLUMNS: tuple[str, ...] = (
    "tenant",
    "token",
    "field_class",
    "kind",
    "scope",
    "record_id",
    "data_key_id",
    "ciphertext",
    "expires_at",
    "created_at",
    "fingerprint",
    "fingerprint_key_id",
)
#: where ``expires_at`` and ``created_at`` sit in a row of TOKEN_COLUMNS
_EXPIRES, _CREATED = TOKEN_COLUMNS.index("expires_at"), TOKEN_COLUMNS.index("created_at")


def insert_tokens(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert token rows, tuples in :data:`TOKEN_COLUMNS` order (datetimes aware, in UTC), in
    the caller's transaction: the bulk path of Tokenize (COPY on PostgreSQL, one tuple
    ``executemany`` on SQLite), with the few distinct datetimes of a call converted once.

    Raises:
        IntegrityError: a token exists already (a concurrent call made it; the caller retries).
    """
    if not rows:
        return
    stamps: dict[Any, Any] = {None: None}

    def stamp(value: Any) -> Any:
        if value not in stamps:
            stamps[value] = db_time(conn, tokens, "created_at", value)
        return stamps[value]

    e, c = _EXPIRES, _CREATED
    bulk_insert(
        conn,
        tokens,
        TOKEN_COLUMNS,
        [(*r[:e], stamp(r[e]), stamp(r[c]), *r[c + 1 :]) for r in rows],
    )


def replace_token(conn: Connection, tenant: str, token: str, values: Mapping[str, Any]) -> None:
    """Overwrite a token row's value and key (a deterministic token whose old value was
    shredded, issued again for a live value)."""
    conn.execute(
        update(tokens).where(tokens.c.tenant == tenant, tokens.c.token == token).values(**values)
    )


def set_expiry(conn: Connection, tenant: str, token: str, expires_at: datetime | None) -> None:
    conn.execute(
        update(tokens)
        .where(tokens.c.tenant == tenant, tokens.c.token == token)
        .values(expires_at=expires_at)
    )


def count_expired(conn: Connection, now: datetime) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(tokens)
            .where(tokens.c.expires_at.is_not(None), tokens.c.expires_at <= now)
        ).scalar_one()
    )


def purge_expired(conn: Connection, now: datetime, limit: int) -> int:
    """Delete up to ``limit`` tokens that expired before ``now``; returns how many."""
    victims = (
        select(tokens.c.tenant, tokens.c.token)
        .where(tokens.c.expires_at.is_not(None), tokens.c.expires_at <= now)
        .limit(limit)
    )
    rows = [(r.tenant, r.token) for r in conn.execute(victims)]
    if rows:
        conn.execute(delete(tokens).where(tuple_(tokens.c.tenant, tokens.c.token).in_(rows)))
    return len(rows)


def erase_tokens(
    conn: Connection,
    tenant: str,
    record_id: str,
    fingerprints: Iterable[bytes],
    now: datetime,
) -> tuple[int, list[str]]:
    """Tombstone the tokens of an erased record's values, in the erasure's transaction: the
    fingerprints are kept (``erased_fingerprints``: a restored token row of one stays erased)
    and the ciphertext of every standalone token of the tenant carrying one is emptied. Tokens
    linked to the record are erased with its data keys; tokens linked to another live record
    are that record's (its value lives on there) and are left.

    Returns how many tokens the erasure reaches (linked to the record, and standalone ones
    emptied now) and the ids of the data keys (token pools) the standalone ones were sealed
    under, sorted.
    """
    linked = int(
        conn.execute(
            select(func.count())
            .select_from(tokens)
            .where(tokens.c.tenant == tenant, tokens.c.record_id == record_id)
        ).scalar_one()
    )
    victims = tombstone_fingerprints(conn, tenant, record_id, fingerprints, now)
    return linked + len(victims), sorted({k for _, k in victims})


def tombstone_fingerprints(
    conn: Connection,
    tenant: str,
    record_id: str,
    fingerprints: Iterable[bytes],
    now: datetime,
) -> list[tuple[str, str]]:
    """Tombstone the fingerprints of values erased from ``record_id`` (the whole record, or
    values an update or a class's retention removed), in the caller's transaction, and empty
    every standalone token of the tenant carrying one. A value erased from the record before
    has its tombstone moved to ``now``. Returns the (token, data key id) of those emptied."""
    fps = sorted(set(fingerprints))
    if not fps:
        return []
    for i in range(0, len(fps), CHUNK):
        conn.execute(
            delete(erased_fps).where(
                erased_fps.c.tenant == tenant,
                erased_fps.c.record_id == record_id,
                erased_fps.c.fingerprint.in_(fps[i : i + CHUNK]),
            )
        )
    conn.execute(
        insert(erased_fps),
        [
            {"tenant": tenant, "fingerprint": f, "record_id": record_id, "erased_at": now}
            for f in fps
        ],
    )
    victims: list[tuple[str, str]] = []
    for i in range(0, len(fps), CHUNK):
        victims += [
            (r.token, r.data_key_id)
            for r in conn.execute(
                select(tokens.c.token, tokens.c.data_key_id).where(
                    tokens.c.tenant == tenant,
                    tokens.c.fingerprint.in_(fps[i : i + CHUNK]),
                    tokens.c.record_id.is_(None),
                    func.length(tokens.c.ciphertext) > 0,
                )
            )
        ]
    names = [t for t, _ in victims]
    for chunk in _chunks(names):
        conn.execute(
            update(tokens)
            .where(tokens.c.tenant == tenant, tokens.c.token.in_(list(chunk)))
            .values(ciphertext=b"")
        )
    return victims


def set_fingerprint(
    conn: Connection, tenant: str, token: str, fingerprint: bytes, key_id: str
) -> None:
    """Give a token made before fingerprints existed its fingerprint."""
    conn.execute(
        update(tokens)
        .where(tokens.c.tenant == tenant, tokens.c.token == token)
        .values(fingerprint=fingerprint, fingerprint_key_id=key_id)
    )


def tokens_to_fingerprint(
    conn: Connection, tenant: str, field_class: str, key_id: str, after: str, limit: int
) -> list[str]:
    """Up to ``limit`` live tokens of (tenant, class), after ``after`` in token order, without a
    fingerprint under index key ``key_id`` (made before fingerprints, or under an older
    index-key version)."""
    return list(
        conn.execute(
            select(tokens.c.token)
            .where(
                tokens.c.tenant == tenant,
                tokens.c.field_class == field_class,
                tokens.c.token > after,
                (tokens.c.fingerprint_key_id.is_(None)) | (tokens.c.fingerprint_key_id != key_id),
                func.length(tokens.c.ciphertext) > 0,
            )
            .order_by(tokens.c.token)
            .limit(limit)
        ).scalars()
    )


def token_classes(conn: Connection) -> list[tuple[str, str]]:
    """Every (tenant, class) that has tokens."""
    rows = conn.execute(
        select(tokens.c.tenant, tokens.c.field_class)
        .distinct()
        .order_by(tokens.c.tenant, tokens.c.field_class)
    )
    return [(r.tenant, r.field_class) for r in rows]


# --- grants ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrantRow:
    id: str
    tenant: str
    grantor: str
    grantor_role: str
    grantee: str
    record_ids: frozenset[str]
    scope: str
    field_classes: frozenset[str]
    purpose: str
    expires_at: datetime
    max_uses: int
    uses: int
    max_values: int = 0  # 0: only max_uses bounds it
    values_used: int = 0
    revoked: bool = False
    #: the row's MAC and the audit key its row key came from (None: issued before they existed)
    mac: bytes | None = None
    mac_key_id: str | None = None


def _split(text: str) -> frozenset[str]:
    return frozenset(text.split(",")) if text else frozenset()


def insert_grant(conn: Connection, row: GrantRow, now: datetime) -> None:
    conn.execute(
        insert(grants).values(
            id=row.id,
            tenant=row.tenant,
            grantor=row.grantor,
            grantor_role=row.grantor_role,
            grantee=row.grantee,
            record_ids=",".join(sorted(row.record_ids)),
            scope=row.scope,
            field_classes=",".join(sorted(row.field_classes)),
            purpose=row.purpose,
            expires_at=row.expires_at,
            max_uses=row.max_uses,
            uses=0,
            max_values=row.max_values,
            values_used=0,
            created_at=now,
            mac=row.mac,
            mac_key_id=row.mac_key_id,
        )
    )


def get_grant(conn: Connection, tenant: str, grant_id: str) -> GrantRow | None:
    r = conn.execute(
        select(grants).where(grants.c.id == grant_id, grants.c.tenant == tenant)
    ).first()
    if r is None:
        return None
    return GrantRow(
        id=r.id,
        tenant=r.tenant,
        grantor=r.grantor,
        grantor_role=r.grantor_role,
        grantee=r.grantee,
        record_ids=_split(r.record_ids),
        scope=r.scope,
        field_classes=_split(r.field_classes),
        purpose=r.purpose,
        expires_at=r.expires_at,
        max_uses=r.max_uses,
        uses=r.uses,
        max_values=r.max_values,
        values_used=r.values_used,
        revoked=r.revoked_at is not None,
        mac=None if r.mac is None else bytes(r.mac),
        mac_key_id=r.mac_key_id,
    )


def use_grant(conn: Connection, grant_id: str, values: int) -> bool:
    """Count one use revealing ``values`` tokens; False when no call or not enough values are
    left, or the grant was revoked (the row is locked until the transaction ends, so
    concurrent uses cannot exceed the bounds)."""
    result = conn.execute(
        update(grants)
        .where(
            grants.c.id == grant_id,
            grants.c.revoked_at.is_(None),
            grants.c.uses < grants.c.max_uses,
            (grants.c.max_values == 0) | (grants.c.values_used + values <= grants.c.max_values),
        )
        .values(uses=grants.c.uses + 1, values_used=grants.c.values_used + values)
        .execution_options(preserve_rowcount=True)
    )
    return result.rowcount == 1


def revoke_grant(conn: Connection, tenant: str, grant_id: str, now: datetime) -> bool:
    """Mark a grant revoked; False when it was revoked already (or does not exist)."""
    result = conn.execute(
        update(grants)
        .where(grants.c.id == grant_id, grants.c.tenant == tenant, grants.c.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(preserve_rowcount=True)
    )
    return result.rowcount == 1


@dataclass(frozen=True, slots=True)
class LinkedToken:
    token: str
    field_class: str
    data_key_id: str
    ciphertext: bytes = field(repr=False)


def tokens_of_record(conn: Connection, tenant: str, record_id: str) -> list[LinkedToken]:
    """The tokens whose values are sealed under ``record_id``'s data keys."""
    rows = conn.execute(
        select(
            tokens.c.token, tokens.c.field_class, tokens.c.data_key_id, tokens.c.ciphertext
        ).where(tokens.c.tenant == tenant, tokens.c.record_id == record_id)
    ).all()
    return [LinkedToken(r.token, r.field_class, r.data_key_id, bytes(r.ciphertext)) for r in rows]


def pool_tokens(conn: Connection, tenant: str, data_key_id: str) -> list[str]:
    """The standalone tokens whose values are still sealed under pool key ``data_key_id``
    (those an erasure emptied are left out)."""
    rows = conn.execute(
        select(tokens.c.token).where(
            tokens.c.tenant == tenant,
            tokens.c.data_key_id == data_key_id,
            tokens.c.record_id.is_(None),
            func.length(tokens.c.ciphertext) > 0,
        )
    ).all()
    return [r.token for r in rows]


def reseal_token(
    conn: Connection, tenant: str, old: LinkedToken, data_key_id: str, ciphertext: bytes
) -> bool:
    """Compare-and-set a token's value and key (rekey, pool shred): refused when the row's
    key or value changed since ``old`` was read (an erasure emptied it meanwhile)."""
    result = conn.execute(
        update(tokens)
        .where(
            tokens.c.tenant == tenant,
            tokens.c.token == old.token,
            tokens.c.data_key_id == old.data_key_id,
            tokens.c.ciphertext == old.ciphertext,
        )
        .values(data_key_id=data_key_id, ciphertext=ciphertext)
    )
    return result.rowcount == 1
