"""Reveal grants can be revoked, and can bound the values they reveal as well as the calls:
``revoked_at`` (set by RevokeGrant; a revoked grant is refused), ``max_values`` (0: no bound
but ``max_uses``) and ``values_used``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "reveal_grants", sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "reveal_grants",
        sa.Column("max_values", sa.Integer, nullable=False, server_default="0"),
    )
    op.add_column(
        "reveal_grants",
        sa.Column("values_used", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    for column in ("values_used", "max_values", "revoked_at"):
        op.drop_column("reveal_grants", column)
