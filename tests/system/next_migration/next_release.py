"""The next release's migration, as the system test applies it between replica restarts: an
additive change (a new table and a nullable column), so it leaves ``schema_compat`` alone and
the running server (whose newest migration is 0016) keeps serving on it.

Revision ID: 9001
Revises: 0016
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "next_release_notes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("note", sa.String(64), nullable=True),
    )
    op.add_column("tenants", sa.Column("next_release_label", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("tenants", "next_release_label")
    op.drop_table("next_release_notes")
