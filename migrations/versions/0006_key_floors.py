"""Key rotation bookkeeping: per field key, the lowest field-key version a newly wrapped key
may be stored under (so a key wrapped just before a rotation cannot slip in after it), and the
rotation runs (so a run stopped after its last batch is finished, not repeated).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "field_key_floors",
        sa.Column("field_class", sa.String(32), nullable=False),
        sa.Column("min_version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("field_class", name="pk_field_key_floors"),
    )
    op.create_table(
        "key_rotations",
        sa.Column("scope", sa.String(160), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        # one command over many units (--all): a rerun after a stop skips the units it finished
        sa.Column("campaign", sa.String(36), nullable=False),
        sa.PrimaryKeyConstraint("scope", "version", name="pk_key_rotations"),
    )


def downgrade() -> None:
    op.drop_table("key_rotations")
    op.drop_table("field_key_floors")
