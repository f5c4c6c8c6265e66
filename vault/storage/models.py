"""SQLAlchemy 2 table definitions. Nothing here holds plaintext: only ciphertexts, wrapped keys,
keyed digests and opaque ids. Migrations in ``migrations/`` create exactly these tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vault.storage._types import UtcDateTime, uuid_id

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TENANT = 64
#: width of a UUID id where it is text (SQLite); ``uuid_id()`` columns are ``uuid`` on PostgreSQL
ID = 36


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Tenant(Base):
    """A tenant the vault serves: created by an operator (``cvault tenants create``) or by a
    write of a role with ``tenant.create``; writes to any other tenant are refused."""

    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(TENANT), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(256))


class TenantKey(Base):
    """A tenant key (``kind='data'``) or index key (``kind='index'``) per (tenant, class, version),
    stored only as the key server's wrapped blob."""

    __tablename__ = "tenant_keys"
    __table_args__ = (UniqueConstraint("tenant", "field_class", "kind", "version"),)

    id: Mapped[str] = mapped_column(uuid_id(), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(TENANT))
    field_class: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(8))
    version: Mapped[int] = mapped_column(Integer)
    wrapped: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: data keys wrapped under it (counted in blocks; see vault.service._keyring.WRAP_LIMIT)
    wraps: Mapped[int] = mapped_column(BigInteger, server_default="0")


class Record(Base):
    __tablename__ = "records"
    __table_args__ = (UniqueConstraint("tenant", "idempotency_key"),)

    id: Mapped[str] = mapped_column(uuid_id(), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(TENANT))
    version: Mapped[int] = mapped_column(BigInteger)
    schema_version: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class DataKeyRow(Base):
    """One data key per (tenant, record, field class), wrapped locally by a tenant key."""

    __tablename__ = "data_keys"
    __table_args__ = (UniqueConstraint("record_id", "field_class"),)

    id: Mapped[str] = mapped_column(uuid_id(), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(TENANT))
    #: the record, or the token pool, whose key it is
    record_id: Mapped[str] = mapped_column(uuid_id())
    field_class: Mapped[str] = mapped_column(String(32))
    tenant_key_id: Mapped[str] = mapped_column(uuid_id(), ForeignKey("tenant_keys.id"), index=True)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    #: a token pool's key's birth (its age bounds its use); NULL for a record's key
    created_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    #: linked-token values sealed under it (bounded: vault.service.tokens.MAX_LINKED_SEALS);
    #: NULL until the first one (0)
    seals: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class RecordValue(Base):
    """One sealed field value of a record, with the record-scoped token that stands for it.

    Only the primary key is indexed: every query naming ``data_key_id`` names the record too,
    and a record token is read with its record, never looked up (it is 130 random bits, so no
    unique index guards it either; migration 0014).
    """

    __tablename__ = "record_values"

    record_id: Mapped[str] = mapped_column(uuid_id(), primary_key=True)
    field_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    field_class: Mapped[str] = mapped_column(String(32))
    data_key_id: Mapped[str] = mapped_column(uuid_id())
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    token: Mapped[str] = mapped_column(String(64))


class BlindIndexRow(Base):
    """Keyed digest of a searchable value; never plaintext, never an unkeyed hash.

    One row per (record, field, index-key version). Searches find rows by ``digest`` alone (a
    hash index on PostgreSQL): the digest is keyed per tenant and class, so tenant and field
    are checked on the few rows found, not kept in the index.
    """

    __tablename__ = "blind_index"
    __table_args__ = (Index("ix_blind_index_digest", "digest", postgresql_using="hash"),)

    record_id: Mapped[str] = mapped_column(uuid_id(), primary_key=True)
    field_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    index_key_id: Mapped[str] = mapped_column(
        uuid_id(), ForeignKey("tenant_keys.id"), primary_key=True
    )
    digest: Mapped[bytes] = mapped_column(LargeBinary)


class Erasure(Base):
    """Tombstone of an erased record, with what its receipt said."""

    __tablename__ = "erasures"

    record_id: Mapped[str] = mapped_column(uuid_id(), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(TENANT))
    erased_at: Mapped[datetime] = mapped_column(UtcDateTime())
    data_key_ids: Mapped[str] = mapped_column(Text)
    #: how many tokens of the record's values (linked or not) the erasure tombstoned
    tokens_erased: Mapped[int] = mapped_column(Integer, server_default="0")
    #: JSON list of the token-pool data keys that held standalone tokens of those values
    token_key_ids: Mapped[str] = mapped_column(Text, server_default="[]")


class ErasedDataKey(Base):
    """Tombstone of a destroyed data key: a restored copy of its row is refused and never read."""

    __tablename__ = "erased_data_keys"

    data_key_id: Mapped[str] = mapped_column(uuid_id(), primary_key=True)
    record_id: Mapped[str] = mapped_column(uuid_id(), index=True)
    tenant: Mapped[str] = mapped_column(String(TENANT))
    erased_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AuditKey(Base):
    """The audit-log key per version, stored only wrapped by the ``<prefix>-audit`` transit key."""

    __tablename__ = "audit_keys"
    __table_args__ = (UniqueConstraint("version"),)

    id: Mapped[str] = mapped_column(uuid_id(), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    wrapped: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AuditEventRow(Base):
    """One audit event, MAC-chained to the row before it in its chain (see ``vault.audit``).

    Holds no customer value: the record is named only by a keyed pseudonym (``record_ref``).
    """

    __tablename__ = "audit_events"
    # the data-subject report's lookup (it names the tenant too); a hash index on PostgreSQL
    __table_args__ = (Index("ix_audit_events_ref", "record_ref", postgresql_using="hash"),)

    chain: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[datetime] = mapped_column(UtcDateTime())
    principal: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(String(TENANT))
    record_ref: Mapped[str | None] = mapped_column(String(32), nullable=True)
    field_classes: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(128))
    audit_key_id: Mapped[str] = mapped_column(uuid_id(), ForeignKey("audit_keys.id"))
    mac: Mapped[bytes] = mapped_column(LargeBinary)
    #: the granting principal when the caller used a reveal grant, else empty
    on_behalf_of: Mapped[str] = mapped_column(String(256), server_default="")
    #: the caller's network address (empty for operator commands and older rows)
    peer: Mapped[str] = mapped_column(String(128), server_default="")


class AuditChainHead(Base):
    """The newest (seq, mac) of each audit chain: appenders lock it to serialize themselves."""

    __tablename__ = "audit_chain_heads"

    chain: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    mac: Mapped[bytes] = mapped_column(LargeBinary)


class FieldKeyFloor(Base):
    """The lowest field-key version a newly wrapped tenant or index key may be stored under:
    raised by a field-key rotation before its first pass."""

    __tablename__ = "field_key_floors"

    field_class: Mapped[str] = mapped_column(String(32), primary_key=True)
    min_version: Mapped[int] = mapped_column(Integer)


class KeyRotation(Base):
    """One rotation run (``field:<class>`` or ``tenant:<tenant>/<class>``) to a version; a run
    that was stopped is finished by the next, not repeated."""

    __tablename__ = "key_rotations"

    scope: Mapped[str] = mapped_column(String(160), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    #: the command run (``--all``) it belongs to: a rerun after a stop skips what it finished
    campaign: Mapped[str] = mapped_column(String(36))


class SchemaCompat(Base):
    """One row: the oldest server revision that can run against this schema (rolling upgrades,
    :func:`vault.storage.schema_problem`)."""

    __tablename__ = "schema_compat"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    min_server: Mapped[str] = mapped_column(String(32))


class KeyEvent(Base):
    """A step that took key material out of use (an erasure's or rekey's data keys, a rotation's
    destroyed tenant or index keys): what every running process must drop from its caches.
    ``seq`` orders them; each replica records in ``replica_sync`` how far it has applied them."""

    __tablename__ = "key_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(TENANT))
    #: "data_keys" or "tenant_keys": which cache the ids are evicted from
    kind: Mapped[str] = mapped_column(String(16))
    #: JSON list of the key row ids
    ids: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime())


class ReplicaSync(Base):
    """Each running server's heartbeat: the key events it has applied to its caches, and when
    it last said so (``shred-report`` waits for every live one)."""

    __tablename__ = "replica_sync"

    replica: Mapped[str] = mapped_column(String(64), primary_key=True)
    applied_seq: Mapped[int] = mapped_column(Integer)
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime())
