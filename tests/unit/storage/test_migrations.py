"""The Alembic migrations build exactly the tables the models describe, up and down."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from vault.storage import current_revision, head_revision, upgrade
from vault.storage._migrate import alembic_config
from vault.storage.models import Base


def test_sqlite_migration_matches_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    assert current_revision(url) == head_revision()
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_removes_everything(tmp_path: Path) -> None:
    from alembic import command

    url = f"sqlite:///{tmp_path / 'd.db'}"
    upgrade(url)
    command.downgrade(alembic_config(url), "base")
    engine = create_engine(url)
    names = set(inspect(engine).get_table_names())
    engine.dispose()
    assert names <= {"alembic_version"}
