"""`cvault audit verify` finds every kind of tampering and names the row; `cvault audit query`
answers who saw a customer's data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ADMIN, KEY_PREFIX, SAMPLE, TEST_POLICY, make_wrapper
from tests.unit.audit.audit_tamper import event, tamper
from vault.audit import AuditLog, operator_chain
from vault.deadline import Deadline
from vault.keys import KeyManager, KvCheckpointStore, TokenAuth
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.policy import PolicyHolder
from vault.schema import load_schema
from vault.service import Access, Core, RecordInput, RecordsService
from vault.storage import Database, upgrade

pytestmark = pytest.mark.openbao


def _config(tmp_path: Path, db_url: str, openbao: OpenBaoDevServer, chain: str) -> Path:
    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        f'database_url = "{db_url}"\n'
        f'[openbao]\nurl = "{openbao.url}"\nkey_prefix = "{KEY_PREFIX}"\n'
        f'[audit]\nchain = "main"\nkv_path = "cvault/audit/{chain}"\n'
    )
    return cfg


def _cvault(openbao: OpenBaoDevServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CVAULT_OPENBAO_TOKEN=openbao.root_token)
    return subprocess.run(
        [sys.executable, "-m", "vault.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.fixture
def private_db(tmp_path: Path) -> Iterator[tuple[Database, str]]:
    """A database of this test's own: tampering must not break other tests' chains."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    db = Database(url)
    yield db, url
    db.dispose()


@pytest.fixture
def audited(
    private_db: tuple[Database, str], openbao: OpenBaoDevServer, tenant: str
) -> tuple[RecordsService, list[str]]:
    """Some audited activity (writes and reads), with the chain head checkpointed to the
    same OpenBao KV entry the CLI reads."""
    db, _ = private_db
    keys = KeyManager(make_wrapper(openbao))
    checkpoint = KvCheckpointStore(
        openbao.url, TokenAuth(openbao.root_token, renew=False), path=f"cvault/audit/{tenant}"
    )
    audit = AuditLog(db, keys, checkpoint=checkpoint, checkpoint_in_background=False)
    svc = RecordsService(Core(db, keys, load_schema(), Access(PolicyHolder(TEST_POLICY), audit)))
    dl = Deadline.after(60)
    recs = svc.create(ADMIN, tenant, [RecordInput(dict(SAMPLE))] * 3, deadline=dl)
    for r in recs:
        svc.get(ADMIN, tenant, r.record_id, deadline=dl)
    return svc, [r.record_id for r in recs]


def _last_seq(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT max(seq) FROM audit_events").scalar_one())


@pytest.mark.parametrize("attack", ["edit", "delete", "insert", "reorder", "truncate"])
def test_verify_names_the_tampered_row(
    audited: tuple[RecordsService, list[str]],
    private_db: tuple[Database, str],
    openbao: OpenBaoDevServer,
    tmp_path: Path,
    tenant: str,
    attack: str,
) -> None:
    svc, _ = audited
    database, db_url = private_db
    cfg = _config(tmp_path, db_url, openbao, chain=tenant)
    ok = _cvault(openbao, "audit", "verify", "--config", str(cfg))
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    # checkpoint the head outside the database, as the service does periodically
    assert _cvault_checkpoint(svc)
    last = _last_seq(database)
    target = last - 2
    if attack == "edit":
        tamper(database, f"UPDATE audit_events SET role = 'dpo' WHERE seq = {target}")
        expected = f"seq {target}"
    elif attack == "delete":
        tamper(database, f"DELETE FROM audit_events WHERE seq = {target}")
        expected = f"seq {target}"
    elif attack == "insert":  # a forged copy of an earlier row, added after the head
        tamper(
            database,
            "INSERT INTO audit_events (chain, seq, time, principal, role, action, purpose, "
            "tenant, record_ref, field_classes, outcome, reason, request_id, audit_key_id, mac) "
            f"SELECT chain, {last + 1}, time, principal, role, action, purpose, tenant, "
            "record_ref, field_classes, outcome, reason, request_id, audit_key_id, mac "
            f"FROM audit_events WHERE seq = {target}",
        )
        expected = "seq"
    elif attack == "reorder":
        tamper(
            database,
            f"UPDATE audit_events SET seq = -1 WHERE seq = {target}",
            f"UPDATE audit_events SET seq = {target} WHERE seq = {target + 1}",
            f"UPDATE audit_events SET seq = {target + 1} WHERE seq = -1",
        )
        expected = f"seq {target}"
    else:  # truncate the tail, and rewrite the head to match, as a careful attacker would
        tamper(
            database,
            f"DELETE FROM audit_events WHERE seq > {target}",
            (
                "UPDATE audit_chain_heads SET seq = :s, mac = (SELECT mac FROM audit_events "
                "WHERE seq = :s) WHERE chain = 'main'",
                {"s": target},
            ),
        )
        expected = "truncated tail"
    bad = _cvault(openbao, "audit", "verify", "--config", str(cfg))
    assert bad.returncode == 1, bad.stdout
    assert "FAILED" in bad.stderr
    assert expected in bad.stderr, bad.stderr
    for value in SAMPLE.values():
        assert value not in bad.stderr + bad.stdout


def _cvault_checkpoint(svc: RecordsService) -> bool:
    return svc.core.audit.checkpoint_now(deadline=Deadline.after(60)).ok


def test_query_answers_who_saw_the_record(
    audited: tuple[RecordsService, list[str]],
    private_db: tuple[Database, str],
    openbao: OpenBaoDevServer,
    tmp_path: Path,
    tenant: str,
) -> None:
    _, ids = audited
    _, db_url = private_db
    cfg = _config(tmp_path, db_url, openbao, chain=tenant)
    done = _cvault(openbao, "audit", "query", ids[0], "--tenant", tenant, "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    events = json.loads(done.stdout)
    assert [e["action"] for e in events] == ["record.read", "record.write"]  # newest first
    assert {e["principal"] for e in events} == {"apikey:test-admin"}
    assert events[0]["purpose"] == "testing"
    assert ids[0] not in done.stdout  # the log keeps a pseudonym, never the raw id


def test_verify_walks_every_chain(
    private_db: tuple[Database, str], openbao: OpenBaoDevServer, tmp_path: Path, tenant: str
) -> None:
    """Per-process chains share the kv_path prefix, each with its own checkpoints; the operator
    verifies them all (or one, with --chain) whatever chain its own settings name."""
    database, db_url = private_db
    keys = KeyManager(make_wrapper(openbao))
    store = KvCheckpointStore(
        openbao.url, TokenAuth(openbao.root_token, renew=False), path=f"cvault/audit/{tenant}"
    )
    dl = Deadline.after(60)
    for name in ("replica-a", "replica-b"):
        log = AuditLog(database, keys, chain=name, checkpoint=store, checkpoint_in_background=False)
        for i in range(4):
            log.record([event(i)], deadline=dl)
        assert log.checkpoint_now(deadline=dl).ok
    cfg = _config(tmp_path, db_url, openbao, chain=tenant)
    ok = _cvault(openbao, "audit", "verify", "--config", str(cfg))
    assert ok.returncode == 0, ok.stderr
    for name in ("replica-a", "replica-b"):
        assert (
            f"audit chain {name}: OK, 4 rows verified against 1 checkpoint(s), the newest at seq 4"
            in ok.stdout
        )
    # the operator's own rows (this verify's) go to its chain, never to a server's
    assert f"audit chain {operator_chain()}: OK" in ok.stdout
    tamper(database, "UPDATE audit_events SET role = 'dpo' WHERE chain = 'replica-b' AND seq = 2")
    bad = _cvault(openbao, "audit", "verify", "--config", str(cfg))
    assert bad.returncode == 1
    assert "audit chain replica-b: FAILED at row seq 2: edited" in bad.stderr
    assert "audit chain replica-a: OK" in bad.stdout
    one = _cvault(openbao, "audit", "verify", "--chain", "replica-a", "--config", str(cfg))
    assert one.returncode == 0, one.stderr
    assert "replica-b" not in one.stdout + one.stderr
