"""Customer consents (current set and history) and shared rate-limit counters.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

T = 64
ID = 36
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "record_consents",
        sa.Column("record_id", sa.String(ID), nullable=False),
        sa.Column("tenant", sa.String(T), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("purposes", sa.Text, nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("record_id", name="pk_record_consents"),
    )
    op.create_table(
        "consent_history",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(T), nullable=False),
        sa.Column("record_id", sa.String(ID), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("purposes", sa.Text, nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("changed_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_consent_history"),
    )
    op.create_index("ix_consent_history_record", "consent_history", ["record_id", "version"])
    op.create_table(
        "rate_counters",
        sa.Column("principal", sa.String(256), nullable=False),
        sa.Column("window", sa.String(8), nullable=False),
        sa.Column("window_start", sa.BigInteger, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("principal", "window", "window_start", name="pk_rate_counters"),
    )


def downgrade() -> None:
    op.drop_table("rate_counters")
    op.drop_index("ix_consent_history_record", table_name="consent_history")
    op.drop_table("consent_history")
    op.drop_table("record_consents")
