"""Storage: SQLAlchemy 2 tables, repositories and migrations (SQLite WAL and PostgreSQL)."""

from vault.storage import _access_repo as access_repo
from vault.storage import _keys_repo as keys_repo
from vault.storage import _repo as repo
from vault.storage import _restored as restored
from vault.storage import _sync as sync
from vault.storage import _tokens_repo as tokens_repo
from vault.storage import models_access as _models_access  # noqa: F401 - registers its tables
from vault.storage import models_tokens as _models_tokens  # noqa: F401 - registers its tables
from vault.storage._bulk import bulk_insert, db_time
from vault.storage._engine import Database, make_engine, normalize_url
from vault.storage._migrate import (
    current_revision,
    database_problem,
    head_revision,
    migrations_dir,
    schema_problem,
    upgrade,
)
from vault.storage._repo import (
    NewDataKey,
    NewIndex,
    NewRecord,
    NewValue,
    RecordRow,
    StoredValue,
    TenantKeyRow,
)
from vault.storage._roles import grant_runtime_role

__all__ = [
    "Database",
    "NewDataKey",
    "NewIndex",
    "NewRecord",
    "NewValue",
    "RecordRow",
    "StoredValue",
    "TenantKeyRow",
    "access_repo",
    "bulk_insert",
    "current_revision",
    "database_problem",
    "db_time",
    "grant_runtime_role",
    "head_revision",
    "keys_repo",
    "make_engine",
    "migrations_dir",
    "normalize_url",
    "repo",
    "restored",
    "schema_problem",
    "sync",
    "tokens_repo",
    "upgrade",
]
