"""Tokens issued by the Tokens service (values only as ciphertexts).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

T = 64
ID = 36
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("tenant", sa.String(T), nullable=False),
        sa.Column("token", sa.String(256), nullable=False),
        sa.Column("field_class", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("record_id", sa.String(ID), nullable=True),
        sa.Column("data_key_id", sa.String(ID), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "token", name="pk_tokens"),
    )
    op.create_index("ix_tokens_expires_at", "tokens", ["expires_at"])
    op.create_index("ix_tokens_record_id", "tokens", ["record_id"])


def downgrade() -> None:
    op.drop_index("ix_tokens_record_id", table_name="tokens")
    op.drop_index("ix_tokens_expires_at", table_name="tokens")
    op.drop_table("tokens")
