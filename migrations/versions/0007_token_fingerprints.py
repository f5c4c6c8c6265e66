"""Erasure reaches every token: a keyed fingerprint on each token row, tombstones of erased
values, and what an erasure did to tokens kept with its receipt.

``tokens.fingerprint`` is HMAC-SHA256 under the tenant's index key for the class (label
``cvault/vfp/v1``) of the value's normal form, ``fingerprint_key_id`` the index key's id. Rows
made before this revision have neither: an erasure cannot find them until
``cvault tokens fingerprint`` has filled them in (it opens each value in the service process).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

T = 64
ID = 36
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # nullable columns without a default: PostgreSQL adds them without rewriting the table
    op.add_column("tokens", sa.Column("fingerprint", sa.LargeBinary, nullable=True))
    op.add_column("tokens", sa.Column("fingerprint_key_id", sa.String(ID), nullable=True))
    op.create_index("ix_tokens_fingerprint", "tokens", ["tenant", "fingerprint"])
    op.create_table(
        "erased_fingerprints",
        sa.Column("tenant", sa.String(T), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary, nullable=False),
        sa.Column("record_id", sa.String(ID), nullable=False),
        sa.Column("erased_at", TS, nullable=False),
        # (tenant, fingerprint) leads the key: it serves the reveal's lookup
        sa.PrimaryKeyConstraint(
            "tenant", "fingerprint", "record_id", name="pk_erased_fingerprints"
        ),
    )
    op.add_column(
        "erasures",
        sa.Column("tokens_erased", sa.Integer, nullable=False, server_default="0"),
    )
    op.add_column(
        "erasures",
        sa.Column("token_key_ids", sa.Text, nullable=False, server_default="[]"),
    )


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+ and PostgreSQL): a batch copy of ``erasures``
    # would trip the triggers of 0001 that name it
    for table, column in (
        ("erasures", "token_key_ids"),
        ("erasures", "tokens_erased"),
    ):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    op.drop_table("erased_fingerprints")
    op.drop_index("ix_tokens_fingerprint", table_name="tokens")
    op.execute("ALTER TABLE tokens DROP COLUMN fingerprint_key_id")
    op.execute("ALTER TABLE tokens DROP COLUMN fingerprint")
