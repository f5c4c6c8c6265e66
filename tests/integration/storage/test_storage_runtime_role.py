"""The runtime PostgreSQL role (issue 11, point 6): the service runs as a role that may read and
write its tables but only append to the audit log. Before, the service's user owned
``audit_events``: with its credential an insider ran ``ALTER TABLE ... DISABLE TRIGGER`` and
deleted the log. Now the tables belong to the migration role, and the runtime role's attempts
to delete, edit, truncate the log or switch its triggers off are refused by PostgreSQL."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.support import ADMIN, SAMPLE, make_service, private_postgres
from vault.app import upgrade_database
from vault.deadline import Deadline
from vault.errors import ConfigError
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.service import RecordInput
from vault.storage import Database, grant_runtime_role

pytestmark = [pytest.mark.postgres, pytest.mark.openbao]

ATTACKS = (
    "DELETE FROM audit_events",
    "UPDATE audit_events SET reason = 'edited'",
    "TRUNCATE audit_events",
    "ALTER TABLE audit_events DISABLE TRIGGER ALL",
    "DROP TABLE audit_events",
)


def _as(url: str, role: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{role}@{rest.partition('@')[2]}"


def test_the_runtime_role_serves_but_cannot_rewrite_the_audit_log(
    openbao: OpenBaoDevServer,
) -> None:
    role = f"cvault_rt_{uuid.uuid4().hex[:8]}"
    with private_postgres() as owner_url:
        upgrade_database(owner_url, role)
        upgrade_database(owner_url, role)  # again after an upgrade: idempotent
        runtime = Database(_as(owner_url, role))
        try:
            svc = make_service(runtime, openbao)
            [made] = svc.create(ADMIN, "acme", [RecordInput(SAMPLE)], deadline=Deadline.after(30))
            got = svc.get(ADMIN, "acme", made.record_id, deadline=Deadline.after(30))
            assert got.record_id == made.record_id
        finally:
            runtime.dispose()
        with psycopg.connect(_as(owner_url, role), autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM audit_events").fetchone()
            assert row is not None
            assert row[0] >= 2
            for statement in ATTACKS:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
    server = owner_url.rpartition("/")[0] + "/postgres"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_a_runtime_role_needs_postgresql_and_a_plain_name() -> None:
    with pytest.raises(ConfigError, match="PostgreSQL"):
        grant_runtime_role("sqlite://", "cvault_runtime")
    with pytest.raises(ConfigError, match="plain name"):
        grant_runtime_role("postgresql://x@127.0.0.1/y", 'bad"; DROP TABLE x; --')
