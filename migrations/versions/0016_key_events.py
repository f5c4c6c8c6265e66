"""Key events and replica heartbeats (issue 15): erasures and rotations reach every running
server's memory.

- ``key_events``: one row per step that took key material out of use (an erasure's or a rekey's
  data keys, a rotation's destroyed tenant or index keys), in ``seq`` order; every server
  polls it and evicts those ids from its key caches.
- ``replica_sync``: per server (its audit chain), the newest event it has applied and when it
  last said so; ``shred-report`` says complete only once every live server has applied the
  tenant's last step.

Additive (a server of 0015 neither reads nor writes them): ``min_server`` stays.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "key_events",
        sa.Column("seq", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ids", sa.Text, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_key_events"),
    )
    op.create_table(
        "replica_sync",
        sa.Column("replica", sa.String(64), nullable=False),
        sa.Column("applied_seq", sa.Integer, nullable=False),
        sa.Column("seen_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("replica", name="pk_replica_sync"),
    )


def downgrade() -> None:
    op.drop_table("replica_sync")
    op.drop_table("key_events")
