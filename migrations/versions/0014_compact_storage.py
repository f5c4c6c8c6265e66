"""Compact storage (issue 13): UUID ids as PostgreSQL's ``uuid``, and only the indexes queries use.

- PostgreSQL: the id columns of the record, key, tombstone, token and audit tables change from
  ``VARCHAR(36)`` to ``uuid``: 16 bytes instead of 37 in every row and in every index on them.
  The service still reads and writes canonical strings (``vault.storage._types.uuid_id``).
  Every value is checked first: one that is not a canonical (lower-case, hyphenated) UUID stops
  the migration, naming its column, before anything changed. SQLite keeps its text ids.
- ``record_values``: no index on ``data_key_id`` (every query naming it names the record too,
  which the primary key serves) and no unique constraint on ``token`` (a record token is 130
  random bits read with its record, never looked up).
- ``records``: no index on ``tenant`` alone: the unique (tenant, idempotency key) index leads
  with it and serves every query by tenant.
- ``record_values`` and ``blind_index``: no ``tenant`` column. A value or index row belongs to
  its record, whose row names the tenant: every query reaching them by tenant joins the record
  (or has checked it in the same transaction). The upgrade first checks that every such row's
  tenant is its record's (it stops, changing nothing, if one is not); the downgrade takes the
  tenant back from the record.
- ``data_keys``: ``created_at`` and ``seals`` may be NULL. A record's data key is written
  without an age (only a token pool's key's age is read) and ``seals`` stays NULL (0) until a
  linked token is sealed under it. Existing rows keep their values; the downgrade fills the
  NULLs (the record's creation time, 0).
- ``blind_index``: its primary key is (record id, field, index key), the former unique
  constraint, instead of an integer id; searches find rows by ``digest`` alone (a hash index on
  PostgreSQL, a b-tree on SQLite), since the digest is keyed per tenant and class.

On PostgreSQL the columns and indexes go before the id conversion: its one rewrite per table
leaves the dropped columns' bytes out of existing rows and rebuilds only the indexes that stay.

Per-class crypto-shredding is unchanged: one data-key row per (record, class), its tombstone,
and the triggers refusing a restored key, value or record of an erased record (kept on
PostgreSQL; put back on SQLite, where changing a table's constraints means rebuilding it).

``schema_compat.min_server`` becomes 0014: the server of 0013 binds ids as ``VARCHAR``, which
PostgreSQL does not compare with ``uuid``, and reads ``blind_index.id``. Stop the servers of
0013 (they report NOT_SERVING once this has run), migrate, then start those of 0014.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

ID = 36
T = 64
TS = sa.DateTime(timezone=True)
#: tables whose ``tenant`` column goes: their rows' tenant is their record's
TENANT_FROM_RECORD = ("record_values", "blind_index")
#: every column holding a UUID id, by table (PostgreSQL only)
UUID_COLUMNS: dict[str, tuple[str, ...]] = {
    "tenant_keys": ("id",),
    "audit_keys": ("id",),
    "records": ("id",),
    "data_keys": ("id", "record_id", "tenant_key_id"),
    "record_values": ("record_id", "data_key_id"),
    "blind_index": ("record_id", "index_key_id"),
    "erasures": ("record_id",),
    "erased_data_keys": ("data_key_id", "record_id"),
    "tokens": ("record_id", "data_key_id"),
    "audit_events": ("audit_key_id",),
}
#: foreign keys onto converted columns: dropped while both ends change type
FOREIGN_KEYS = (
    ("fk_data_keys_tenant_key_id_tenant_keys", "data_keys", "tenant_key_id", "tenant_keys"),
    ("fk_blind_index_index_key_id_tenant_keys", "blind_index", "index_key_id", "tenant_keys"),
    ("fk_audit_events_audit_key_id_audit_keys", "audit_events", "audit_key_id", "audit_keys"),
)
_CANONICAL_UUID = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_BI_KEY = ("record_id", "field_name", "index_key_id")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        _no_statement_timeout()
        _check_uuids()
    _check_tenants()
    op.drop_index("ix_records_tenant", table_name="records")
    op.drop_index("ix_record_values_data_key_id", table_name="record_values")
    with _rebuilt("record_values") as batch:
        batch.drop_constraint("uq_record_values_token", type_="unique")
        batch.drop_column("tenant")
    op.drop_index("ix_blind_index_lookup", table_name="blind_index")
    with _rebuilt("blind_index") as batch:
        batch.drop_constraint("uq_blind_index_record_id", type_="unique")
        batch.drop_constraint("pk_blind_index", type_="primary")
        batch.drop_column("id")
        batch.drop_column("tenant")
        batch.create_primary_key("pk_blind_index", list(_BI_KEY))
    if postgres:
        # after the drops: the rewrite leaves out the dropped columns' bytes and rebuilds
        # only the indexes that stay
        _convert_ids("uuid", "{c}::uuid")
    op.create_index("ix_blind_index_digest", "blind_index", ["digest"], postgresql_using="hash")
    with _rebuilt("data_keys") as batch:
        batch.alter_column("created_at", existing_type=TS, nullable=True)
        batch.alter_column("seals", existing_type=sa.BigInteger, nullable=True, server_default=None)
    op.execute("UPDATE schema_compat SET min_server = '0014'")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute("UPDATE schema_compat SET min_server = '0012'")
    for table in TENANT_FROM_RECORD:
        _tenant_from_record(table)
    _data_key_columns_filled()
    op.drop_index("ix_blind_index_digest", table_name="blind_index")
    if postgres:
        op.drop_constraint("pk_blind_index", "blind_index", type_="primary")
        op.execute("ALTER TABLE blind_index ADD COLUMN id SERIAL")
        op.create_primary_key("pk_blind_index", "blind_index", ["id"])
        op.create_unique_constraint("uq_blind_index_record_id", "blind_index", list(_BI_KEY))
    else:
        _sqlite_blind_index_with_id()
    op.create_index("ix_blind_index_lookup", "blind_index", ["tenant", "field_name", "digest"])
    with _rebuilt("record_values") as batch:
        batch.create_unique_constraint("uq_record_values_token", ["token"])
    op.create_index("ix_record_values_data_key_id", "record_values", ["data_key_id"])
    op.create_index("ix_records_tenant", "records", ["tenant"])
    if postgres:
        _no_statement_timeout()
        _convert_ids(f"VARCHAR({ID})", "{c}::text")


def _check_uuids() -> None:
    """Refuse to start when a value would not survive the conversion unchanged."""
    bind = op.get_bind()
    for table, columns in UUID_COLUMNS.items():
        for column in columns:
            bad = bind.execute(
                sa.text(f"SELECT count(*) FROM {table} WHERE {column} !~ :pattern"),  # noqa: S608
                {"pattern": _CANONICAL_UUID},
            ).scalar_one()
            if bad:
                raise RuntimeError(
                    f"migration 0014: {table}.{column} holds {bad} value(s) that are not"
                    " canonical UUIDs; nothing was changed"
                )


def _check_tenants() -> None:
    """Refuse to drop a row's tenant unless its record names the same one."""
    bind = op.get_bind()
    for table in TENANT_FROM_RECORD:
        bad = bind.execute(
            sa.text(
                f"SELECT count(*) FROM {table} t WHERE NOT EXISTS"  # noqa: S608
                " (SELECT 1 FROM records r WHERE r.id = t.record_id AND r.tenant = t.tenant)"
            )
        ).scalar_one()
        if bad:
            raise RuntimeError(
                f"migration 0014: {table} holds {bad} row(s) whose record is missing or of"
                " another tenant; nothing was changed"
            )


def _tenant_from_record(table: str) -> None:
    """Downgrade: ``table.tenant`` back (NOT NULL), each row's taken from its record."""
    with _rebuilt(table) as batch:
        batch.add_column(sa.Column("tenant", sa.String(T), nullable=True))
    op.execute(
        f"UPDATE {table} SET tenant ="  # noqa: S608
        f" (SELECT r.tenant FROM records r WHERE r.id = {table}.record_id)"
    )
    with _rebuilt(table) as batch:
        batch.alter_column("tenant", existing_type=sa.String(T), nullable=False)


def _data_key_columns_filled() -> None:
    """Downgrade: ``data_keys.created_at`` and ``seals`` NOT NULL again, the NULLs filled with
    the record's creation time (else now) and 0."""
    op.execute(
        "UPDATE data_keys SET created_at = COALESCE((SELECT r.created_at FROM records r"
        " WHERE r.id = data_keys.record_id), CURRENT_TIMESTAMP) WHERE created_at IS NULL"
    )
    op.execute("UPDATE data_keys SET seals = 0 WHERE seals IS NULL")
    with _rebuilt("data_keys") as batch:
        batch.alter_column("created_at", existing_type=TS, nullable=False)
        batch.alter_column("seals", existing_type=sa.BigInteger, nullable=False, server_default="0")


def _no_statement_timeout() -> None:
    # env.py's 60 s cap suits online migrations; this one rewrites the largest tables once,
    # with the servers of 0013 stopped (min_server), for as long as that takes.
    op.execute("SET LOCAL statement_timeout = 0")


def _convert_ids(sql_type: str, using: str) -> None:
    """Every id column to ``sql_type``: one ALTER TABLE (one rewrite) per table, foreign keys
    dropped meanwhile. Indexes, triggers and grants stay with their tables."""
    for name, table, _, _ in FOREIGN_KEYS:
        op.drop_constraint(name, table, type_="foreignkey")
    for table, columns in UUID_COLUMNS.items():
        changes = ", ".join(
            f"ALTER COLUMN {c} TYPE {sql_type} USING {using.format(c=c)}" for c in columns
        )
        op.execute(f"ALTER TABLE {table} {changes}")
    for name, table, column, target in FOREIGN_KEYS:
        op.create_foreign_key(name, table, target, [column], ["id"])


@contextmanager
def _rebuilt(table: str) -> Iterator[BatchOperations]:
    """``op.batch_alter_table``, keeping the table's triggers: SQLite rebuilds the table to
    change its constraints, and the rebuild drops them (PostgreSQL alters it in place)."""
    bind = op.get_bind()
    triggers: list[str] = []
    if bind.dialect.name == "sqlite":
        triggers = list(
            bind.execute(
                sa.text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"),
                {"t": table},
            ).scalars()
        )
    with op.batch_alter_table(table) as batch:
        yield batch
    if bind.dialect.name == "sqlite":
        present = set(
            bind.execute(
                sa.text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"),
                {"t": table},
            ).scalars()
        )
        for sql in triggers:
            if sql not in present:
                op.execute(sql)


def _sqlite_blind_index_with_id() -> None:
    """SQLite: ``blind_index`` as 0013 had it, an ``INTEGER PRIMARY KEY`` id numbering rows."""
    op.execute(
        f"CREATE TABLE blind_index_0013 (id INTEGER NOT NULL, tenant VARCHAR(64) NOT NULL,"
        f" record_id VARCHAR({ID}) NOT NULL, field_name VARCHAR(64) NOT NULL,"
        f" index_key_id VARCHAR({ID}) NOT NULL, digest BLOB NOT NULL,"
        " CONSTRAINT pk_blind_index PRIMARY KEY (id),"
        " CONSTRAINT uq_blind_index_record_id UNIQUE (record_id, field_name, index_key_id),"
        " CONSTRAINT fk_blind_index_index_key_id_tenant_keys FOREIGN KEY(index_key_id)"
        " REFERENCES tenant_keys (id))"
    )
    op.execute(
        "INSERT INTO blind_index_0013 (tenant, record_id, field_name, index_key_id, digest)"
        " SELECT tenant, record_id, field_name, index_key_id, digest FROM blind_index"
        " ORDER BY record_id, field_name, index_key_id"
    )
    op.execute("DROP TABLE blind_index")
    op.execute("ALTER TABLE blind_index_0013 RENAME TO blind_index")
