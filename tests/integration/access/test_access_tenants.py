"""Tenant scoping (issue 11, point 1), over gRPC against the real OpenBao, on SQLite and
PostgreSQL, under the sample policy (its dev principals widened to every tenant by
``tests.support``, except ``dev-other-backend-service``, which reaches tenant "other" only).

Before: a backend-service key of tenant B found tenant A's customers by email and read them in
plain; a write to an unknown tenant created it on the spot, with its keys on the key server
(2,000 tenants in 11.5 s). Now another tenant is PERMISSION_DENIED (``tenant_not_allowed``), and
a write to a tenant that does not exist is NOT_FOUND (``tenant_unknown``) unless the role holds
``tenant.create``; both audited, nothing written. Tenants come from ``cvault tenants create``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.integration.access.access_support import audit_rows
from tests.integration.access.matrix_support import start_policy_server
from tests.support import (
    KEY_PREFIX,
    OTHER_TENANT_KEY_ID,
    SAMPLE,
    SAMPLE_POLICY,
    api_key_of,
    create_tenants,
)
from vault import errors
from vault.api import RunningServer
from vault.client import TokenItem, VaultClient
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.storage import Database, upgrade

pytestmark = pytest.mark.openbao

BACKEND = "backend-service"
OTHER_PRINCIPAL = f"apikey:{OTHER_TENANT_KEY_ID}"


@pytest.fixture
def sample_server(database: Database, openbao: OpenBaoDevServer) -> Iterator[RunningServer]:
    server = start_policy_server(database, openbao, SAMPLE_POLICY)
    yield server
    server.stop(grace=0)


def _client(server: RunningServer, role: str, purpose: str = "") -> VaultClient:
    return VaultClient(server.address, api_key=api_key_of(role), purpose=purpose, timeout=30)


def _count(db: Database, table: str, tenant: str) -> int:
    with db.engine.connect() as conn:
        sql = text(f"SELECT count(*) FROM {table} WHERE tenant = :t")
        return int(conn.execute(sql, {"t": tenant}).scalar_one())


def test_a_principal_of_tenant_b_cannot_find_or_read_tenant_a(
    sample_server: RunningServer, database: Database
) -> None:
    tenant_a = f"ta-{uuid.uuid4().hex[:10]}"
    create_tenants(database, tenant_a)
    with _client(sample_server, BACKEND, "account-management") as owner:
        record = owner.create_record(tenant_a, SAMPLE)
        assert owner.find_records(tenant_a, {"email": SAMPLE["email"]}) == [record.record_id]
    with _client(sample_server, "other-backend-service", "account-management") as intruder:
        calls = (
            lambda: intruder.find_records(tenant_a, {"email": SAMPLE["email"]}),
            lambda: intruder.get_record(tenant_a, record.record_id),
            lambda: intruder.tokenize(tenant_a, [TokenItem(SAMPLE["email"], "email")]),
            lambda: intruder.delete_record(tenant_a, record.record_id),
        )
        for call in calls:
            with pytest.raises(errors.PermissionDenied) as info:
                call()
            assert info.value.reason == "tenant_not_allowed"
    refused = audit_rows(
        database, tenant=tenant_a, principal=OTHER_PRINCIPAL, reason="tenant_not_allowed"
    )
    assert len(refused) == len(calls)
    assert {r["outcome"] for r in refused} == {"denied"}
    assert _count(database, "records", tenant_a) == 1


def test_a_write_does_not_create_a_tenant(sample_server: RunningServer, database: Database) -> None:
    unknown = f"tu-{uuid.uuid4().hex[:10]}"
    with _client(sample_server, BACKEND, "account-management") as writer:
        for call in (
            lambda: writer.create_record(unknown, SAMPLE),
            lambda: writer.batch_create_records(unknown, [SAMPLE, SAMPLE]),
            lambda: writer.tokenize(unknown, [TokenItem(SAMPLE["email"], "email")]),
            lambda: writer.tokenize_text(
                unknown, [f"mail {SAMPLE['email']}"], scope="backend-chat"
            ),
        ):
            with pytest.raises(errors.NotFound) as info:
                call()
            assert info.value.reason == "tenant_unknown"
        for table in ("tenant_keys", "records", "tokens"):
            assert _count(database, table, unknown) == 0
        with database.engine.connect() as conn:
            made = conn.execute(
                text("SELECT count(*) FROM tenants WHERE name = :t"), {"t": unknown}
            )
            assert made.scalar_one() == 0
        assert {r["reason"] for r in audit_rows(database, tenant=unknown)} == {"tenant_unknown"}

        create_tenants(database, unknown)  # what `cvault tenants create` does
        record = writer.create_record(unknown, SAMPLE)
        assert writer.get_record(unknown, record.record_id).record_id == record.record_id


def test_a_role_with_tenant_create_makes_the_tenant_audited(
    admin_client: VaultClient, database: Database, tenant: str
) -> None:
    """The test policy's test-admin holds ``tenant.create``: its first write creates the
    tenant, with a ``tenant.create`` audit row."""
    admin_client.create_record(tenant, SAMPLE)
    [made] = audit_rows(database, tenant=tenant, action="tenant.create")
    assert (made["outcome"], made["principal"]) == ("allowed", "apikey:test-admin")
    admin_client.create_record(tenant, SAMPLE)
    assert len(audit_rows(database, tenant=tenant, action="tenant.create")) == 1


def test_cvault_tenants_create_and_list(openbao: OpenBaoDevServer, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tenants.db'}"
    upgrade(url)
    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        f'database_url = "{url}"\n[openbao]\nurl = "{openbao.url}"\nkey_prefix = "{KEY_PREFIX}"\n'
    )
    env = dict(os.environ, CVAULT_OPENBAO_TOKEN=openbao.root_token)

    def cvault(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vault.cli", "tenants", *argv, "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )

    made = cvault("create", "acme", "globex")
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines() == ["acme: created", "globex: created"]
    assert cvault("create", "acme").stdout.strip() == "acme: exists already"
    bad = cvault("create", "no tenant")
    assert bad.returncode == 2
    assert "not a tenant name" in bad.stderr
    listed = cvault("list")
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["acme", "globex"]
    db = Database(url)
    try:
        created = audit_rows(db, action="admin.tenants.create")
        assert sorted(str(r["tenant"]) for r in created) == ["acme", "globex"]
    finally:
        db.dispose()
