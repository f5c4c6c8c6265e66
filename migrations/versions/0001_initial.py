"""Initial schema: tenant/index keys, records, data keys, sealed values, blind index, tombstones.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

Triggers refuse writing back a data key, value or record of an erased record, on both SQLite and
PostgreSQL; the read path checks the tombstones as well, so a restore that bypasses triggers
still cannot make an erased value readable.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

T = 64
ID = 36
TS = sa.DateTime(timezone=True)

# (table, condition on NEW that means "belongs to an erased record")
_GUARDED = {
    "data_keys": "EXISTS (SELECT 1 FROM erased_data_keys e WHERE e.data_key_id = NEW.id)"
    " OR EXISTS (SELECT 1 FROM erasures r WHERE r.record_id = NEW.record_id)",
    "record_values": "EXISTS (SELECT 1 FROM erasures r WHERE r.record_id = NEW.record_id)",
    "records": "EXISTS (SELECT 1 FROM erasures r WHERE r.record_id = NEW.id)",
}


def upgrade() -> None:
    op.create_table(
        "tenant_keys",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("tenant", sa.String(T), nullable=False),
        sa.Column("field_class", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("wrapped", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tenant_keys"),
        sa.UniqueConstraint(
            "tenant", "field_class", "kind", "version", name="uq_tenant_keys_tenant"
        ),
    )
    op.create_table(
        "records",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("tenant", sa.String(T), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_records"),
        sa.UniqueConstraint("tenant", "idempotency_key", name="uq_records_tenant"),
    )
    op.create_index("ix_records_tenant", "records", ["tenant"])
    op.create_table(
        "data_keys",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("tenant", sa.String(T), nullable=False),
        sa.Column("record_id", sa.String(ID), nullable=False),
        sa.Column("field_class", sa.String(32), nullable=False),
        sa.Column("tenant_key_id", sa.String(ID), nullable=False),
        sa.Column("wrapped", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_data_keys"),
        sa.ForeignKeyConstraint(
            ["tenant_key_id"], ["tenant_keys.id"], name="fk_data_keys_tenant_key_id_tenant_keys"
        ),
        sa.UniqueConstraint("record_id", "field_class", name="uq_data_keys_record_id"),
    )
    op.create_index("ix_data_keys_tenant_key_id", "data_keys", ["tenant_key_id"])
    op.create_table(
        "record_values",
        sa.Column("record_id", sa.String(ID), nullable=False),
        sa.Column("field_name", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(T), nullable=False),
        sa.Column("field_class", sa.String(32), nullable=False),
        sa.Column("data_key_id", sa.String(ID), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("record_id", "field_name", name="pk_record_values"),
        sa.UniqueConstraint("token", name="uq_record_values_token"),
    )
    op.create_index("ix_record_values_data_key_id", "record_values", ["data_key_id"])
    op.create_table(
        "blind_index",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(T), nullable=False),
        sa.Column("record_id", sa.String(ID), nullable=False),
        sa.Column("field_name", sa.String(64), nullable=False),
        sa.Column("index_key_id", sa.String(ID), nullable=False),
        sa.Column("digest", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_blind_index"),
        sa.ForeignKeyConstraint(
            ["index_key_id"], ["tenant_keys.id"], name="fk_blind_index_index_key_id_tenant_keys"
        ),
        sa.UniqueConstraint(
            "record_id", "field_name", "index_key_id", name="uq_blind_index_record_id"
        ),
    )
    op.create_index("ix_blind_index_lookup", "blind_index", ["tenant", "field_name", "digest"])
    op.create_table(
        "erasures",
        sa.Column("record_id", sa.String(ID), nullable=False),
        sa.Column("tenant", sa.String(T), nullable=False),
        sa.Column("erased_at", TS, nullable=False),
        sa.Column("data_key_ids", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("record_id", name="pk_erasures"),
    )
    op.create_table(
        "erased_data_keys",
        sa.Column("data_key_id", sa.String(ID), nullable=False),
        sa.Column("record_id", sa.String(ID), nullable=False),
        sa.Column("tenant", sa.String(T), nullable=False),
        sa.Column("erased_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("data_key_id", name="pk_erased_data_keys"),
    )
    op.create_index("ix_erased_data_keys_record_id", "erased_data_keys", ["record_id"])
    _create_guards()


def _create_guards() -> None:
    dialect = op.get_bind().dialect.name
    for table, cond in _GUARDED.items():
        if dialect == "sqlite":
            for event in ("INSERT", "UPDATE"):
                op.execute(
                    f"CREATE TRIGGER refuse_erased_{table}_{event.lower()} BEFORE {event} "
                    f"ON {table} FOR EACH ROW WHEN {cond} "
                    "BEGIN SELECT RAISE(ABORT, 'record erased'); END"
                )
        elif dialect == "postgresql":
            op.execute(
                f"CREATE FUNCTION refuse_erased_{table}() RETURNS trigger AS $$ "
                f"BEGIN IF {cond} THEN RAISE EXCEPTION 'record erased' "
                "USING ERRCODE = 'integrity_constraint_violation'; END IF; RETURN NEW; END; "
                "$$ LANGUAGE plpgsql"
            )
            op.execute(
                f"CREATE TRIGGER refuse_erased_{table} BEFORE INSERT OR UPDATE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION refuse_erased_{table}()"
            )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in _GUARDED:
        if dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS refuse_erased_{table}_insert")
            op.execute(f"DROP TRIGGER IF EXISTS refuse_erased_{table}_update")
        elif dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS refuse_erased_{table} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS refuse_erased_{table}()")
    for table in (
        "erased_data_keys",
        "erasures",
        "blind_index",
        "record_values",
        "data_keys",
        "records",
        "tenant_keys",
    ):
        op.drop_table(table)
