"""Alembic environment. On PostgreSQL, migrations take an advisory lock and short lock and
statement timeouts (as PyPI's warehouse does) so that running them against a live database
queues behind other migrators and never blocks traffic for long."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from vault.storage.models import Base

config = context.config
target_metadata = Base.metadata

_ADVISORY_LOCK_ID = 0x63766C74  # "cvlt"


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SET lock_timeout = '4s'"))
            connection.execute(text("SET statement_timeout = '60s'"))
            connection.execute(text(f"SELECT pg_advisory_lock({_ADVISORY_LOCK_ID})"))
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(text(f"SELECT pg_advisory_unlock({_ADVISORY_LOCK_ID})"))
                connection.commit()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
