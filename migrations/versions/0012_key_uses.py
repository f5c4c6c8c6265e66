"""AES-GCM usage bounds: how many data keys each tenant key has wrapped (``tenant_keys.wraps``,
counted in blocks; the next version starts before 2^30), and how many linked-token values each
data key has sealed (``data_keys.seals``, bounded per record key). Existing keys start at 0: the
counts are a bound kept from now on, far below AES-GCM's 2^32.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table, column in (("tenant_keys", "wraps"), ("data_keys", "seals")):
        op.add_column(table, sa.Column(column, sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    for table, column in (("data_keys", "seals"), ("tenant_keys", "wraps")):
        op.drop_column(table, column)
