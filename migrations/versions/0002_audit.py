"""Audit log: wrapped audit keys, MAC-chained audit events, chain heads.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

``audit_events`` is append-only at the database level as well: triggers refuse UPDATE and DELETE
(and TRUNCATE on PostgreSQL). That stops an application bug or a DML-only injection from
rewriting history; an attacker who can drop triggers is caught by ``vault.audit`` verification
(the MAC chain, the head table and the checkpoint kept outside the database).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

T = 64
ID = 36
TS = sa.DateTime(timezone=True)
_GUARD = "audit_events_append_only"


def upgrade() -> None:
    op.create_table(
        "audit_keys",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("wrapped", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_keys"),
        sa.UniqueConstraint("version", name="uq_audit_keys_version"),
    )
    op.create_table(
        "audit_events",
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("time", TS, nullable=False),
        sa.Column("principal", sa.String(256), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(T), nullable=False),
        sa.Column("record_ref", sa.String(32), nullable=True),
        sa.Column("field_classes", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("audit_key_id", sa.String(ID), nullable=False),
        sa.Column("mac", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("chain", "seq", name="pk_audit_events"),
        sa.ForeignKeyConstraint(
            ["audit_key_id"], ["audit_keys.id"], name="fk_audit_events_audit_key_id_audit_keys"
        ),
    )
    op.create_index("ix_audit_events_lookup", "audit_events", ["tenant", "record_ref"])
    op.create_table(
        "audit_chain_heads",
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("mac", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("chain", name="pk_audit_chain_heads"),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {_GUARD}_{event.lower()} BEFORE {event} ON audit_events "
                "FOR EACH ROW BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            f"CREATE FUNCTION {_GUARD}() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION 'audit log is append-only' "
            "USING ERRCODE = 'integrity_constraint_violation'; END; $$ LANGUAGE plpgsql"
        )
        op.execute(
            f"CREATE TRIGGER {_GUARD} BEFORE UPDATE OR DELETE ON audit_events "
            f"FOR EACH ROW EXECUTE FUNCTION {_GUARD}()"
        )
        op.execute(
            f"CREATE TRIGGER {_GUARD}_truncate BEFORE TRUNCATE ON audit_events "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {_GUARD}()"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {_GUARD}_update")
        op.execute(f"DROP TRIGGER IF EXISTS {_GUARD}_delete")
    elif dialect == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {_GUARD}_truncate ON audit_events")
        op.execute(f"DROP TRIGGER IF EXISTS {_GUARD} ON audit_events")
        op.execute(f"DROP FUNCTION IF EXISTS {_GUARD}()")
    op.drop_index("ix_audit_events_lookup", table_name="audit_events")
    op.drop_table("audit_chain_heads")
    op.drop_table("audit_events")
    op.drop_table("audit_keys")
