"""The token table: one row per issued token, holding the value only as a ciphertext.

A token's value is sealed under a data key: the linked record's key for the class when the
token names a record (erasing the record shreds it), else a key of the tenant's standalone
pool. Imported by ``vault.storage`` so that one metadata describes every table.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from vault.storage._types import UtcDateTime, uuid_id
from vault.storage.models import ID, TENANT, Base

#: longest token string: a format-preserving surrogate is as long as its value
TOKEN_MAX = 256


class TokenRow(Base):
    """An issued token. ``token`` is opaque (``tok_<class>_<base62>``) or a surrogate."""

    __tablename__ = "tokens"
    __table_args__ = (
        Index("ix_tokens_expires_at", "expires_at"),
        Index("ix_tokens_record_id", "record_id"),
        Index("ix_tokens_fingerprint", "tenant", "fingerprint"),
    )

    tenant: Mapped[str] = mapped_column(String(TENANT), primary_key=True)
    token: Mapped[str] = mapped_column(String(TOKEN_MAX), primary_key=True)
    field_class: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(24))
    scope: Mapped[str] = mapped_column(String(64))
    #: ``uuid`` on PostgreSQL since migration 0014 (``uuid_id``), text on SQLite
    record_id: Mapped[str | None] = mapped_column(uuid_id(), nullable=True)
    data_key_id: Mapped[str] = mapped_column(uuid_id())
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: keyed, scope-independent digest of the normalized value (``crypto.value_fingerprint``)
    #: under the index key ``fingerprint_key_id``: how an erasure finds every token of a value.
    #: None on rows made before migration 0007 (until ``cvault tokens fingerprint``).
    fingerprint: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    fingerprint_key_id: Mapped[str | None] = mapped_column(String(ID), nullable=True)


class ErasedFingerprint(Base):
    """Tombstone of an erased value: every token of the tenant with this fingerprint made at or
    before ``erased_at`` reveals as erased (a token row restored from a backup too)."""

    __tablename__ = "erased_fingerprints"  # the primary key serves lookups by fingerprint

    tenant: Mapped[str] = mapped_column(String(TENANT), primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    record_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(UtcDateTime())


class RevealGrant(Base):
    """A short-lived, purpose-bound permission for one principal (an agent) to reveal within
    named records or a conversation scope, for named field classes, a bounded number of
    times (calls, and optionally values), with the outputs its granting principal's role would
    get, until it expires or is revoked. Valid only with its MAC (``mac``)."""

    __tablename__ = "reveal_grants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(TENANT))
    grantor: Mapped[str] = mapped_column(String(256))
    grantor_role: Mapped[str] = mapped_column(String(64))
    grantee: Mapped[str] = mapped_column(String(256))
    record_ids: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(String(64))
    field_classes: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    max_uses: Mapped[int] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: when RevokeGrant ended it (None: not revoked)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    #: tokens revealed at most over all uses (0: bounded by ``max_uses`` calls only)
    max_values: Mapped[int] = mapped_column(Integer, server_default="0")
    values_used: Mapped[int] = mapped_column(Integer, server_default="0")
    #: HMAC of every column a reveal decides by but the counters and ``revoked_at``
    #: (``vault.crypto.grant_mac``), under the row key of audit key ``mac_key_id``: a row an
    #: insider wrote or edited is refused. None on rows issued before migration 0011 (refused).
    mac: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    mac_key_id: Mapped[str | None] = mapped_column(String(ID), nullable=True)
