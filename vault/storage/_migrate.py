"""Run the Alembic migrations in ``migrations/`` programmatically (``cvault db upgrade``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, select, text
from sqlalchemy.exc import DBAPIError

from vault.storage._engine import Database, normalize_url
from vault.storage.models import SchemaCompat


def migrations_dir() -> Path:
    """The migration scripts: packaged in the wheel, or the source tree's top-level folder."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("migrations folder not found")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # '%' is Alembic's interpolation character; a password may contain it.
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from sqlalchemy import create_engine

    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    return _lineage()[0]


@cache
def _lineage() -> tuple[str, ...]:
    """This server's migrations, newest first (read once: they do not change while it runs)."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return tuple(r.revision for r in script.walk_revisions())


def schema_problem(conn: Connection) -> str:
    """Why this server cannot run against the database's schema; "" when it can.

    At this server's newest migration: fine. Older: ``cvault db upgrade`` first. Newer (a
    rolling upgrade migrated before this server was replaced): fine when ``schema_compat`` says
    a server of this revision still works with it (the migrations since were additive).
    """
    lineage = _lineage()
    # a plain SELECT: Alembic's MigrationContext logs two INFO lines per use (every probe)
    try:
        current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        conn.rollback()
        current = None
    if current == lineage[0]:
        return ""
    if current is None or current in lineage:
        return (
            f"database schema is at {current or 'nothing'}, this server needs {lineage[0]}:"
            " run `cvault db upgrade`"
        )
    min_server = conn.execute(select(SchemaCompat.min_server)).scalar()
    if min_server in lineage:
        return ""
    return (
        f"database schema is at {current}, newer than this server ({lineage[0]}), and needs a"
        f" server of at least {min_server}: deploy that server"
    )


def database_problem(db: Database) -> tuple[str, str]:
    """Why this server cannot use the database: (reachability, schema), "" for each part that
    is fine; the schema is "" too when the database cannot be reached. Never raises."""
    try:
        with db.engine.connect() as conn:
            return "", schema_problem(conn)
    except Exception as exc:
        return f"unreachable or unreadable ({type(exc).__name__})", ""
