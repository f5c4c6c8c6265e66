"""The token table: one row per issued token, holding the value only as a ciphertext.

A token's value is sealed under a data key: the linked record's key for the class when the
token names a record (erasing the record shreds it), else a key of the tenant's standalone
pool. Imported by ``vault.storage`` so that one metadata describes every table.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from vault.storage.models import ID, TENANT, Base

#: longest token string: a format-preserving surrogate is as long as its value
TOKEN_MAX = 256


class TokenRow(Base):
    """An issued token. ``token`` is opaque (``tok_<class>_<base62>``) or a surrogate."""

    __tablename__ = "tokens"
    __table_args__ = (
        Index("ix_tokens_expires_at", "expires_at"),
        Index("ix_tokens_record_id", "record_id"),
    )

    tenant: Mapped[str] = mapped_column(String(TENANT), primary_key=True)
    token: Mapped[str] = mapped_column(String(TOKEN_MAX), primary_key=True)
    field_class: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(24))
    scope: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str | None] = mapped_column(String(ID), nullable=True)
    data_key_id: Mapped[str] = mapped_column(String(ID))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
