"""Denser indexes (issue 13): audit rows found by a hash of their record pseudonym, and the
b-trees that only grow at their right edge filled to 100%.

- ``audit_events``: the (tenant, record_ref) b-tree becomes a hash index on ``record_ref``
  (``ix_audit_events_ref``; a b-tree on SQLite). The one query by pseudonym
  (``rows_for_refs``: a data-subject report) still names the tenant, which the rows it finds
  are filtered on; a pseudonym is a keyed digest of tenant and record, so no other tenant's
  rows share it. Its entries were half of the index's bytes: a hash entry holds 4 bytes of hash
  instead of the 33-character pseudonym and the tenant.
- PostgreSQL: ``fillfactor = 100`` on the b-trees whose keys only grow (UUIDv7 ids, a chain's
  seq), where the pages left behind by a split are never inserted into again: the default
  (90) left a tenth of each of them empty. Applies to pages split from now on; ``REINDEX``
  compacts existing ones. A rewrite of old rows (a rotation) splits pages anywhere in them,
  as before.

Additive for the server of 0014 (it uses neither index by name): ``min_server`` stays.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

#: b-trees whose keys only grow (UUIDv7 record and data-key ids, a chain's seq)
RIGHT_GROWING = (
    "pk_records",
    "pk_data_keys",
    "uq_data_keys_record_id",
    "pk_record_values",
    "pk_blind_index",
    "pk_audit_events",
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_index("ix_audit_events_lookup", table_name="audit_events")
    op.create_index("ix_audit_events_ref", "audit_events", ["record_ref"], postgresql_using="hash")
    if postgres:
        for index in RIGHT_GROWING:
            op.execute(f"ALTER INDEX {index} SET (fillfactor = 100)")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        for index in RIGHT_GROWING:
            op.execute(f"ALTER INDEX {index} RESET (fillfactor)")
    op.drop_index("ix_audit_events_ref", table_name="audit_events")
    op.create_index("ix_audit_events_lookup", "audit_events", ["tenant", "record_ref"])
