"""Rolling upgrades: ``schema_compat`` holds the oldest server revision that can run against
this schema (``min_server``). A server whose own newest migration is older than the database's
reads it: at or above ``min_server`` it serves (the migrations since were additive), below it
reports NOT_SERVING naming the revision it needs.

A migration that keeps the previous server working (adds tables, nullable columns, indexes)
leaves the row alone; one that breaks it (drops or renames what the previous server uses) sets
``min_server`` to its own revision. This one only adds the table: the server of 0012 can run
against it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "schema_compat",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("min_server", sa.String(32), nullable=False),
    )
    op.bulk_insert(table, [{"id": 1, "min_server": "0012"}])


def downgrade() -> None:
    op.drop_table("schema_compat")
