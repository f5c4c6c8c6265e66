"""Grant and consent rows carry a MAC (issue 11, point 6): ``reveal_grants.mac`` and
``record_consents.mac``, HMAC-SHA256 under a key derived from the audit key (label
``cvault/rows/mac/v1``), with the audit key's id in ``mac_key_id``. The service refuses a row
whose MAC does not verify, so an insider with database write access can no longer forge a grant
or a consent.

Rows written before this revision have no MAC, and a migration cannot make one (it has no key):
a grant without one is refused (``grant_invalid``; grants live at most a day: issue it again),
a consent without one counts as no consent until UpdateConsent replaces it (GetConsent shows its
version with no purposes, so the writer can).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ID = 36
TABLES = ("reveal_grants", "record_consents")


def upgrade() -> None:
    # nullable columns without a default: PostgreSQL adds them without rewriting the table
    for table in TABLES:
        op.add_column(table, sa.Column("mac", sa.LargeBinary, nullable=True))
        op.add_column(table, sa.Column("mac_key_id", sa.String(ID), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        for column in ("mac_key_id", "mac"):
            op.drop_column(table, column)
