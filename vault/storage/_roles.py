"""The runtime PostgreSQL role: what the service connects as, which cannot rewrite the audit log.

Migrations run as the owner of the tables (the migration role). The service runs as a role of
its own that may read and write the service's tables but, on ``audit_events``, only SELECT and
INSERT: not UPDATE, DELETE or TRUNCATE, and, not being the table's owner, not ALTER TABLE or
DISABLE TRIGGER either. So an insider with the service's database credential cannot delete or
edit audit rows, or switch off the triggers that refuse it (the review did exactly that with an
owning runtime user). ``cvault db upgrade --runtime-role NAME`` (re)applies the grants after
each migration, so tables added later are covered.
"""

from __future__ import annotations

import re
from typing import Final

from sqlalchemy import create_engine, text

from vault.errors import ConfigError
from vault.storage._engine import normalize_url

ROLE_RE: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: tables the runtime role may only read and append to
APPEND_ONLY: Final = ("audit_events",)


def grant_runtime_role(owner_url: str, role: str) -> None:
    """Create ``role`` (LOGIN, no password: set one, or use certificates, as you deploy) unless it
    exists, and give it the service's rights on every table of the schema, append-only on the
    audit log. Run as the tables' owner, after the migrations.

    Raises:
        ConfigError: not PostgreSQL, or a role name that is not a plain identifier.
    """
    if not ROLE_RE.fullmatch(role):
        raise ConfigError("runtime role: use a plain name (lower-case letters, digits, _)")
    engine = create_engine(normalize_url(owner_url))
    try:
        if engine.dialect.name != "postgresql":
            raise ConfigError("a runtime role is a PostgreSQL feature (SQLite has no roles)")
        with engine.begin() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}
            ).first()
            if exists is None:
                conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
            for statement in _grants(role):
                conn.execute(text(statement))
    finally:
        engine.dispose()


def _grants(role: str) -> list[str]:
    quoted = f'"{role}"'
    out = [
        f"GRANT USAGE ON SCHEMA public TO {quoted}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}",
        f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON alembic_version FROM {quoted}",
        f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON schema_compat FROM {quoted}",
    ]
    for table in APPEND_ONLY:
        out.append(f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {table} FROM {quoted}")
    return out
