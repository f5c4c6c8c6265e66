"""The backup-and-restore runbook, run as written (issue 12, part 6): PostgreSQL with
``pg_dump``/``pg_restore``, real OpenBao with the service's AppRole and the operator's admin
policy, and the operator commands as an operator types them.

Records are written (audited) and checkpointed, the database is dumped, more records move the
checkpoints on, the dump is restored: ``cvault audit verify`` fails with a truncated tail and
says how to re-anchor; ``cvault audit re-anchor --reason`` records the restore; verify then
passes and reports it, and keeps passing as the service writes on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support import (
    ADMIN,
    KEY_PREFIX,
    TEST_POLICY,
    create_tenants,
    private_postgres,
    sample_record,
)
from vault.audit import AuditLog
from vault.deadline import Deadline
from vault.keys import AppRoleAuth, KeyManager, KvCheckpointStore, TransitKeyWrapper
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.policy import PolicyHolder
from vault.schema import load_schema
from vault.service import Access, Core, RecordInput, RecordsService
from vault.storage import Database

pytestmark = [pytest.mark.postgres, pytest.mark.openbao, pytest.mark.slow]

REASON = "INC-4711 restore of the nightly dump"


@pytest.fixture
def restore_db_url() -> Iterator[str]:
    """A database of this test's own (``cvault_restore_<random>``), migrated; dropped after."""
    with private_postgres("cvault_restore") as url:
        yield url


class Service:
    """One server process: the records service over its own audit log (the runtime AppRole),
    checkpointing every 5 rows inline."""

    def __init__(
        self, url: str, openbao: OpenBaoDevServer, auth: AppRoleAuth, chain: str, kv: str
    ) -> None:
        self.db = Database(url)
        keys = KeyManager(TransitKeyWrapper(openbao.url, auth, key_prefix=KEY_PREFIX))
        self.log = AuditLog(
            self.db,
            keys,
            chain=chain,
            checkpoint=KvCheckpointStore(openbao.url, auth, path=kv),
            checkpoint_every=5,
            checkpoint_in_background=False,
        )
        access = Access(PolicyHolder(TEST_POLICY), self.log)
        self.records = RecordsService(Core(self.db, keys, load_schema(), access))

    def write(self, tenant: str, n: int, start: int) -> None:
        """``n`` records created and read back: two audit rows each."""
        deadline = Deadline.after(60)
        for i in range(start, start + n):
            [made] = self.records.create(
                ADMIN, tenant, [RecordInput(sample_record(i))], deadline=deadline
            )
            self.records.get(ADMIN, tenant, made.record_id, deadline=deadline)

    def stop(self) -> None:
        self.log.close()
        self.db.dispose()


def run(*argv: str, token: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CVAULT_OPENBAO_TOKEN=token) if token else None
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=180, env=env, check=False
    )


def cvault(token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "vault.cli", *args, token=token)


def restore(url: str, dump: Path) -> None:
    """The runbook's restore: the database dropped and made again, the dump loaded into it."""
    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    loaded = run("pg_restore", "--no-owner", "--exit-on-error", f"--dbname={url}", str(dump))
    assert loaded.returncode == 0, loaded.stderr


def test_restore_a_dump_re_anchor_and_verify(
    openbao: OpenBaoDevServer,
    runtime_auth: AppRoleAuth,
    admin_token: str,
    restore_db_url: str,
    chain: str,
    kv_prefix: str,
    tenant: str,
    tmp_path: Path,
) -> None:
    url = restore_db_url
    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        f'database_url = "{url}"\n'
        f'[openbao]\nurl = "{openbao.url}"\nkey_prefix = "{KEY_PREFIX}"\n'
        f'[audit]\nchain = "{chain}"\nkv_path = "{kv_prefix}"\n'
    )
    config = ("--config", str(cfg))
    db = Database(url)
    try:
        create_tenants(db, tenant)
    finally:
        db.dispose()
    service = Service(url, openbao, runtime_auth, chain, kv_prefix)
    service.write(tenant, 6, start=0)  # rows 1-12, checkpoints at 5 and 10
    service.stop()

    # the nightly backup
    dump = tmp_path / "cvault.dump"
    dumped = run("pg_dump", "--format=custom", f"--file={dump}", url)
    assert dumped.returncode == 0, dumped.stderr

    service = Service(url, openbao, runtime_auth, chain, kv_prefix)
    # rows 13-22, checkpoints at 17 and 22 (a new process counts afresh)
    service.write(tenant, 5, start=100)
    service.stop()
    ok = cvault(admin_token, "audit", "verify", "--chain", chain, *config)
    assert ok.returncode == 0, ok.stderr
    assert "the newest at seq 22" in ok.stdout  # (verify audits itself in ops_<host>)

    # the disaster, and the runbook: restore, migrate, verify, re-anchor, verify
    restore(url, dump)
    upgraded = cvault(admin_token, "db", "upgrade", *config)
    assert upgraded.returncode == 0, upgraded.stderr
    failed = cvault(admin_token, "audit", "verify", "--chain", chain, *config)
    assert failed.returncode == 1, failed.stdout
    assert "truncated tail" in failed.stderr
    assert "cvault audit re-anchor" in failed.stderr  # says what to do
    refused = cvault(admin_token, "audit", "re-anchor", *config)
    assert refused.returncode == 2  # --reason is required
    anchored = cvault(
        admin_token, "audit", "re-anchor", "--reason", REASON, "--chain", chain, *config
    )
    assert anchored.returncode == 0, anchored.stderr
    # rows 1-12 restored; the operator commands' own rows go to their chain, not this one
    assert "re-anchored at seq 13 (checkpoint epoch 1)" in anchored.stdout
    assert "restored chain ended at seq 12" in anchored.stdout
    assert "after seq 10 up to seq 22" in anchored.stdout
    assert REASON in anchored.stdout

    passed = cvault(admin_token, "audit", "verify", "--chain", chain, *config)
    assert passed.returncode == 0, passed.stderr
    assert f"audit chain {chain}: OK" in passed.stdout
    assert "re-anchored at seq 13" in passed.stdout
    assert "by operator:" in passed.stdout
    again = cvault(admin_token, "audit", "re-anchor", "--reason", REASON, "--chain", chain, *config)
    assert again.returncode == 1  # nothing left to re-anchor
    assert "there is no restore to re-anchor" in again.stderr

    # the servers start again and write on: checkpoints continue in epoch 1
    service = Service(url, openbao, runtime_auth, chain, kv_prefix)
    service.write(tenant, 6, start=200)
    service.stop()
    final = cvault(admin_token, "audit", "verify", "--chain", chain, "--json", *config)
    assert final.returncode == 0, final.stderr
    assert '"reanchors"' in final.stdout
    assert '"epoch": 1' in final.stdout
    newest = [line for line in final.stdout.splitlines() if '"checkpoint_seq"' in line]
    assert newest
    assert int(newest[0].split(":")[1].strip(" ,")) > 22
