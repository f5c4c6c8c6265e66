"""Tenants exist only once created: a ``tenants`` table, filled here with every tenant the
database already holds (tenant keys, records, tokens, consent), so existing deployments keep
working. New tenants come from ``cvault tenants create`` or a write by a role with the
``tenant.create`` action, never from a first write alone.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

T = 64
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("name", sa.String(T), primary_key=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
    )
    op.execute(
        "INSERT INTO tenants (name, created_at, created_by)"
        " SELECT tenant, CURRENT_TIMESTAMP, 'migration 0008' FROM ("
        "SELECT tenant FROM tenant_keys UNION SELECT tenant FROM records"
        " UNION SELECT tenant FROM tokens) AS known"
    )


def downgrade() -> None:
    op.drop_table("tenants")
