"""Purpose-bound reveal grants, and the granting principal on audit rows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

T = 64
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # A constant default: PostgreSQL adds it without rewriting (or UPDATE-triggering) rows, and
    # the MAC of a row with an empty value is the MAC it had before the column existed.
    op.add_column(
        "audit_events",
        sa.Column("on_behalf_of", sa.String(256), nullable=False, server_default=""),
    )
    op.create_table(
        "reveal_grants",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(T), nullable=False),
        sa.Column("grantor", sa.String(256), nullable=False),
        sa.Column("grantor_role", sa.String(64), nullable=False),
        sa.Column("grantee", sa.String(256), nullable=False),
        sa.Column("record_ids", sa.Text, nullable=False),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("field_classes", sa.Text, nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("max_uses", sa.Integer, nullable=False),
        sa.Column("uses", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reveal_grants"),
    )


def downgrade() -> None:
    op.drop_table("reveal_grants")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("on_behalf_of")
