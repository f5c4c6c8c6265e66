"""Many rows into one table in one statement's worth of work: COPY on PostgreSQL, one tuple
``executemany`` on SQLite (no per-row statement compilation or parameter dicts).

Rows are tuples in the order of ``columns``, in the database's form: as a statement would be
given them, except datetimes, which go through :func:`db_time` (once per distinct value: a
batch has one or two). Errors are
raised as SQLAlchemy's (``IntegrityError``, ``OperationalError``...) with the parameters
hidden, so callers and the engine's error mapping treat them as any other statement's, and no
value or key byte can reach a message or a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Table
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError


def db_time(conn: Connection, table: Table, column: str, when: datetime) -> Any:
    """``when`` as ``table.column``'s type stores it on this connection's database."""
    process = table.c[column].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return process(when) if process is not None else when


def bulk_insert(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert ``rows`` into ``table`` in the caller's transaction (nothing when empty)."""
    if not rows:
        return
    names = ", ".join(table.c[c].name for c in columns)  # only our own tables' columns
    if conn.dialect.name == "postgresql":
        _copy(conn, f"COPY {table.name} ({names}) FROM STDIN", rows)
    else:
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {table.name} ({names}) VALUES ({marks})"  # noqa: S608 - model names
        conn.exec_driver_sql(sql, list(rows))


def _copy(conn: Connection, statement: str, rows: Sequence[tuple[Any, ...]]) -> None:
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    try:
        with raw.cursor() as cur, cur.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as exc:
        lost = isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
        if lost:
            conn.invalidate()  # never hand a broken connection back to the pool
        raise DBAPIError.instance(
            statement,
            None,
            _without_data(exc),
            psycopg.Error,
            hide_parameters=True,
            connection_invalidated=lost,
            dialect=conn.dialect,
        ) from None


def _without_data(exc: psycopg.Error) -> psycopg.Error:
    """The same kind of error with only the server's primary message: COPY's context line
    quotes the whole row (ciphertexts, digests, ids) and a key violation's detail the key."""
    primary = exc.diag.message_primary or type(exc).__name__
    try:
        return type(exc)(primary)
    except TypeError:  # an error class that takes other arguments: keep only the kind
        return psycopg.Error(type(exc).__name__)
