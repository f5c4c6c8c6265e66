"""Tables of the access layer: customer consents and shared rate-limit counters.

Nothing here is a customer value: consent rows hold purpose names (and a MAC), and counters hold
principal names and counts. Imported by ``models`` so that one metadata describes every table.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from vault.storage._types import UtcDateTime
from vault.storage.models import ID, TENANT, Base


class RecordConsent(Base):
    """The purposes a customer currently consents to, as one versioned set per record."""

    __tablename__ = "record_consents"

    record_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(TENANT))
    version: Mapped[int] = mapped_column(Integer)
    purposes: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: HMAC of every other column (``vault.crypto.consent_mac``) under the row key of audit key
    #: ``mac_key_id``: a row an insider wrote or edited counts as no consent. None on rows
    #: written before migration 0011 (no consent either, until UpdateConsent replaces them).
    mac: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    mac_key_id: Mapped[str | None] = mapped_column(String(ID), nullable=True)


class ConsentHistory(Base):
    """Every consent version ever set, with when and from where (for DSAR exports)."""

    __tablename__ = "consent_history"
    __table_args__ = (Index("ix_consent_history_record", "record_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(TENANT))
    record_id: Mapped[str] = mapped_column(String(ID))
    version: Mapped[int] = mapped_column(Integer)
    purposes: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(128))
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime())


class RateCounter(Base):
    """Plaintext values revealed per principal and time window, shared by every replica."""

    __tablename__ = "rate_counters"

    principal: Mapped[str] = mapped_column(String(256), primary_key=True)
    window: Mapped[str] = mapped_column(String(8), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
