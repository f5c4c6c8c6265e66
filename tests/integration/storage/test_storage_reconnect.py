"""Without the pool's pre-ping (a round trip per transaction, issue 13), a connection the server
dropped costs one retryable failure, never a wrong answer or a stuck pool."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from vault.errors import DatabaseUnavailable
from vault.storage import Database


@pytest.mark.postgres
def test_a_dropped_connection_fails_once_then_reconnects(postgres_url: str) -> None:
    db = Database(postgres_url, pool_size=2)
    try:
        with db.begin(write=False) as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        admin_url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(DatabaseUnavailable), db.begin(write=False) as conn:
            conn.execute(text("SELECT 1"))
        with db.begin(write=False) as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        db.dispose()
