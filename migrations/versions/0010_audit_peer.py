"""Audit rows record the caller's network address (``peer``, as gRPC saw it): who flooded the
log with denials can be told apart. MAC'd only when set, so older rows keep their MACs.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "audit_events", sa.Column("peer", sa.String(128), nullable=False, server_default="")
    )


def downgrade() -> None:
    op.drop_column("audit_events", "peer")
