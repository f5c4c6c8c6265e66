"""Engine set-up for SQLite (WAL) and PostgreSQL (psycopg 3), and database errors mapped to ours."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, TimeoutError

from vault.errors import ConfigError, DatabaseUnavailable

log = logging.getLogger("vault.storage")


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and pick psycopg 3; leave other URLs alone."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """Create an engine. SQLite gets WAL, a busy timeout and foreign keys; PostgreSQL a pool."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            hide_parameters=True,  # bind values (keys, digests, ids) never reach a message
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            # 8 MiB: every audited call writes, and a write makes the other connections drop
            # their cached pages, so more was never used (5.3 MB at most in the soak run)
            cur.execute("PRAGMA cache_size=-8192")
            cur.close()

        # pysqlite's own transaction handling defers BEGIN; take it over so that a write
        # transaction starts with BEGIN IMMEDIATE and concurrent writers queue instead of
        # failing with "database is locked" half way through.
        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            # No pre-ping: it cost a round trip per transaction. A connection the server
            # dropped fails its transaction with DatabaseUnavailable (retryable; clients
            # retry UNAVAILABLE), and the disconnect invalidates every older pooled
            # connection, so the next transaction gets a fresh one.
            pool_pre_ping=False,
            pool_timeout=10,
            connect_args={"connect_timeout": 5},
            hide_parameters=True,
        )
    raise ConfigError(f"unsupported database URL scheme: {parsed.get_backend_name()}")


_UNAVAILABLE = (OperationalError, InterfaceError, TimeoutError)


class Database:
    """The engine plus transaction scopes that turn connectivity failures into typed errors."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name

    def __repr__(self) -> str:
        return f"Database(dialect={self.dialect!r})"

    @contextmanager
    def begin(self, *, write: bool = True) -> Iterator[Connection]:
        """One transaction: commits on success, rolls back on any error.

        Raises:
            DatabaseUnavailable: the database could not be reached or timed out (retryable).
        """
        try:
            with self.engine.connect() as conn:
                conn.info["write"] = write
                with conn.begin():
                    yield conn
        except _UNAVAILABLE as exc:
            log.warning(
                "database unavailable: %s",
                type(exc.orig if isinstance(exc, DBAPIError) else exc).__name__,
            )
            raise DatabaseUnavailable("database unavailable") from None

    def ping(self) -> bool:
        """True when a trivial query succeeds. Never raises."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def dispose(self) -> None:
        self.engine.dispose()
