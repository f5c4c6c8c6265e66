"""SQL for the token table, over a connection the caller opened."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select, tuple_, update
from sqlalchemy.engine import Connection

from vault.storage.models import DataKeyRow, ErasedDataKey, Erasure
from vault.storage.models_tokens import RevealGrant, TokenRow

tokens = cast(Table, TokenRow.__table__)
grants = cast(Table, RevealGrant.__table__)
_dk = cast(Table, DataKeyRow.__table__)
_edk = cast(Table, ErasedDataKey.__table__)
_er = cast(Table, Erasure.__table__)

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
            )
    return out


def existing_tokens(conn: Connection, tenant: str, wanted: Sequence[str]) -> set[str]:
    """Which of ``wanted`` already exist in ``tenant``."""
    found: set[str] = set()
    for chunk in _chunks(sorted(set(wanted))):
        found.update(
            conn.execute(
                select(tokens.c.token).where(
                    tokens.c.tenant == tenant, tokens.c.token.in_(list(chunk))
                )
            ).scalars()
        )
    return found


_COLUMNS: tuple[str, ...] = tuple(c.name for c in tokens.columns)
_DATETIMES = frozenset({"expires_at", "created_at"})
# Built from the model's own column names, never from input.
_COPY_SQL = f"COPY tokens ({', '.join(_COLUMNS)}) FROM STDIN"
_INSERT_SQL = (
    f"INSERT INTO tokens ({', '.join(_COLUMNS)}) "  # noqa: S608 - fixed column names
    f"VALUES ({', '.join('?' * len(_COLUMNS))})"
)


def insert_tokens(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert token rows (every column given), in the caller's transaction.

    The bulk path of Tokenize, so it skips SQLAlchemy's per-row parameter processing: COPY on
    PostgreSQL, one prepared INSERT with tuples on SQLite (about twice as fast for 1,000 rows;
    datetimes converted by the dialect's own processor, so rows read back the same).
    """
    if not rows:
        return
    dialect = conn.dialect
    if dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cur, cur.copy(_COPY_SQL) as copy:
            for row in rows:
                copy.write_row(tuple(row[c] for c in _COLUMNS))
        return
    if dialect.name == "sqlite":
        impl = tokens.c.created_at.type.dialect_impl(dialect)
        to_db: Callable[[Any], Any] = impl.bind_processor(dialect) or (lambda v: v)
        stamps: dict[Any, Any] = {None: None}

        def stamp(value: Any) -> Any:
            if value not in stamps:
                stamps[value] = to_db(value)
            return stamps[value]

        conn.exec_driver_sql(
            _INSERT_SQL,
            [tuple(stamp(row[c]) if c in _DATETIMES else row[c] for c in _COLUMNS) for row in rows],
        )
        return
    conn.execute(insert(tokens), list(rows))


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
            created_at=now,
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
    )


def use_grant(conn: Connection, grant_id: str) -> bool:
    """Count one use; False when none is left (the row is locked until the transaction ends,
    so concurrent uses cannot exceed ``max_uses``)."""
    result = conn.execute(
        update(grants)
        .where(grants.c.id == grant_id, grants.c.uses < grants.c.max_uses)
        .values(uses=grants.c.uses + 1)
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


def reseal_token(
    conn: Connection, tenant: str, old: LinkedToken, data_key_id: str, ciphertext: bytes
) -> bool:
    """Compare-and-set a token's value and key (rekey)."""
    result = conn.execute(
        update(tokens)
        .where(
            tokens.c.tenant == tenant,
            tokens.c.token == old.token,
            tokens.c.data_key_id == old.data_key_id,
        )
        .values(data_key_id=data_key_id, ciphertext=ciphertext)
    )
    return result.rowcount == 1
