"""Write-once audit checkpoints against a real OpenBao (issue 11, point 6).

The attacker of the outside review: an insider with write access to the database AND the
service's own key-server credential (an AppRole token of ``deploy/openbao/runtime-policy.hcl``,
as ``cvault dev`` sets it up). With it they can unwrap the audit key, so they can edit rows and
re-MAC the whole chain; what they must not be able to do is make the checkpoints in KV agree.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.audit.conftest import bao, kv_secrets
from tests.support import KEY_PREFIX, make_wrapper
from tests.unit.audit.audit_tamper import event, remac, tamper
from vault.audit import MISSING_CHECKPOINT, AuditLog
from vault.deadline import Deadline
from vault.keys import (
    AppRoleAuth,
    KeyManager,
    KeyServerAuth,
    KvCheckpointStore,
    TokenAuth,
    TransitKeyWrapper,
    setup_approle,
    write_policy,
)
from vault.keys.openbao_dev import OpenBaoDevServer, audit_request_paths
from vault.storage import Database

pytestmark = pytest.mark.openbao

FORGED_MAC = "00" * 32
#: deploy/openbao/runtime-policy.hcl as the previous version shipped it
PREVIOUS_RUNTIME_POLICY = """
path "transit/encrypt/cvault-*" { capabilities = ["update"] }
path "transit/decrypt/cvault-*" { capabilities = ["update"] }
path "secret/data/cvault/audit/*" { capabilities = ["create", "update", "read"] }
"""
REWRITABLE = "may rewrite or delete the audit checkpoints"


def service_log(
    db: Database, openbao: OpenBaoDevServer, auth: KeyServerAuth, chain: str, kv_prefix: str
) -> AuditLog:
    """The audit log as the server builds it: one credential for transit and the checkpoints."""
    keys = KeyManager(TransitKeyWrapper(openbao.url, auth, key_prefix=KEY_PREFIX))
    checkpoint = KvCheckpointStore(openbao.url, auth, path=kv_prefix)
    return AuditLog(db, keys, chain=chain, checkpoint=checkpoint, checkpoint_in_background=False)


def checkpointed(log: AuditLog, batches: int = 3, rows: int = 5) -> None:
    """``batches`` checkpoints, ``rows`` rows apart (at 5, 10, 15 by default)."""
    deadline = Deadline.after(60)
    for b in range(batches):
        for i in range(rows):
            log.record([event(b * rows + i)], deadline=deadline)
        assert log.checkpoint_now(deadline=deadline).ok


def read_secret(openbao: OpenBaoDevServer, path: str) -> tuple[dict[str, str], int]:
    """(data, version) of a KV secret, read with the root token."""
    response = bao(openbao, openbao.root_token, "GET", f"secret/data/{path}")
    response.raise_for_status()
    body: dict[str, Any] = response.json()["data"]
    return body["data"], int(body["metadata"]["version"])


def cvault_verify(
    openbao: OpenBaoDevServer,
    tmp_path: Path,
    db_url: str,
    chain: str,
    kv_prefix: str,
    *,
    token: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``cvault audit verify`` as an operator runs it, with the settings' chain and kv_path."""
    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        f'database_url = "{db_url}"\n'
        f'[openbao]\nurl = "{openbao.url}"\nkey_prefix = "{KEY_PREFIX}"\n'
        f'[audit]\nchain = "{chain}"\nkv_path = "{kv_prefix}"\n'
    )
    env = dict(os.environ, CVAULT_OPENBAO_TOKEN=token or openbao.root_token)
    return subprocess.run(
        [sys.executable, "-m", "vault.cli", "audit", "verify", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


@pytest.fixture
def sqlite_db(sqlite_url: str) -> Database:
    return Database(sqlite_url)


# --- what the runtime credential can do to a checkpoint --------------------------------------


def test_the_runtime_credential_cannot_overwrite_a_checkpoint(
    openbao: OpenBaoDevServer,
    sqlite_db: Database,
    runtime_auth: AppRoleAuth,
    runtime_token: str,
    chain: str,
    kv_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="vault.audit"):
        checkpointed(service_log(sqlite_db, openbao, runtime_auth, chain, kv_prefix))
    assert REWRITABLE not in caplog.text
    paths = kv_secrets(openbao, kv_prefix)
    assert paths
    for path in paths:
        before, version = read_secret(openbao, path)
        forged = {**before, "mac": FORGED_MAC}
        attempts: list[tuple[str, dict[str, Any]]] = [
            ("POST", {"data": forged}),
            ("PUT", {"data": forged}),
            ("POST", {"options": {"cas": version}, "data": forged}),
            ("PATCH", {"data": {"mac": FORGED_MAC}}),
        ]
        for method, body in attempts:
            answer = bao(openbao, runtime_token, method, f"secret/data/{path}", body)
            assert answer.status_code == 403, (method, body.get("options"), path)
        assert read_secret(openbao, path) == (before, version)


def test_the_runtime_credential_cannot_delete_destroy_or_expire_a_checkpoint(
    openbao: OpenBaoDevServer,
    sqlite_db: Database,
    runtime_auth: AppRoleAuth,
    runtime_token: str,
    chain: str,
    kv_prefix: str,
) -> None:
    checkpointed(service_log(sqlite_db, openbao, runtime_auth, chain, kv_prefix), batches=1)
    (path,) = kv_secrets(openbao, kv_prefix)
    before = read_secret(openbao, path)
    for method, where, body in [
        ("DELETE", f"secret/data/{path}", None),
        ("POST", f"secret/delete/{path}", {"versions": [1]}),
        ("POST", f"secret/destroy/{path}", {"versions": [1]}),
        ("DELETE", f"secret/metadata/{path}", None),
        ("POST", f"secret/metadata/{path}", {"delete_version_after": "1s"}),
        ("POST", f"secret/metadata/{path}", {"max_versions": 1, "cas_required": False}),
        ("POST", "secret/config", {"delete_version_after": "1s"}),
    ]:
        answer = bao(openbao, runtime_token, method, where, body)
        assert answer.status_code == 403, (method, where, body)
    assert read_secret(openbao, path) == before


# --- the attack, end to end ------------------------------------------------------------------


def test_a_re_macd_chain_fails_verify_whatever_the_runtime_credential_writes(
    openbao: OpenBaoDevServer,
    runtime_auth: AppRoleAuth,
    runtime_token: str,
    chain: str,
    kv_prefix: str,
    private_db_url: str,
    tmp_path: Path,
) -> None:
    db = Database(private_db_url)
    try:
        checkpointed(service_log(db, openbao, runtime_auth, chain, kv_prefix))  # 5, 10, 15
        ok = cvault_verify(openbao, tmp_path, private_db_url, chain, kv_prefix)
        assert ok.returncode == 0, ok.stderr
        # the insider edits row 7 and re-MACs the chain with the audit key, which the
        # service's credential unwraps; the head table is rewritten to match
        tamper(
            db,
            (
                "UPDATE audit_events SET principal = 'spiffe://acme/nobody' "
                "WHERE chain = :c AND seq = 7",
                {"c": chain},
            ),
        )
        insider = KeyManager(
            TransitKeyWrapper(
                openbao.url, TokenAuth(runtime_token, renew=False), key_prefix=KEY_PREFIX
            )
        )
        macs = remac(db, insider, chain, deadline=Deadline.after(30))
        # ... then rewrites every checkpoint it finds with the forged MACs ...
        statuses: dict[str, int] = {}
        for path in kv_secrets(openbao, kv_prefix):
            doc, _ = read_secret(openbao, path)
            forged = {**doc, "mac": macs[int(doc["seq"])].hex()}
            answer = bao(openbao, runtime_token, "POST", f"secret/data/{path}", {"data": forged})
            statuses[path] = answer.status_code
        # ... and adds one of its own at a new path, which the policy allows
        own = {
            "format": "2",
            "chain": chain,
            "seq": "7",
            "mac": macs[7].hex(),
            "prev": "5",
            "time": datetime.now(UTC).isoformat(),
        }
        added = bao(
            openbao,
            runtime_token,
            "POST",
            f"secret/data/{kv_prefix}/{chain}/7",
            {"options": {"cas": 0}, "data": own},
        )
        assert added.status_code == 200
        bad = cvault_verify(openbao, tmp_path, private_db_url, chain, kv_prefix)
        assert bad.returncode == 1, bad.stdout
        assert f"audit chain {chain}: FAILED at row seq 10: checkpoint mismatch" in bad.stderr
        assert "0193a1b2-0000-7000-8000" not in bad.stdout + bad.stderr  # no record ids
        assert set(statuses.values()) == {403}, statuses
    finally:
        db.dispose()


# --- the checkpoint thread's cost ------------------------------------------------------------


def test_a_checkpoint_is_one_kv_write(
    openbao: OpenBaoDevServer, sqlite_db: Database, chain: str, kv_prefix: str
) -> None:
    root = TokenAuth(openbao.root_token, renew=False)
    log = AuditLog(
        sqlite_db,
        KeyManager(make_wrapper(openbao)),
        chain=chain,
        checkpoint=KvCheckpointStore(openbao.url, root, path=kv_prefix),
        checkpoint_in_background=False,
    )
    checkpointed(log, batches=1)
    assert openbao.audit_log_path is not None
    start = len(audit_request_paths(openbao.audit_log_path))
    checkpointed(log, batches=1)
    kv_requests = [
        p for p in audit_request_paths(openbao.audit_log_path)[start:] if p.startswith("secret/")
    ]
    assert kv_requests == [f"secret/data/{kv_prefix}/{chain}/10"]


# --- the operator's view ---------------------------------------------------------------------


def test_the_admin_policy_verifies_every_checkpoint_and_rewrites_none(
    openbao: OpenBaoDevServer,
    runtime_auth: AppRoleAuth,
    admin_token: str,
    chain: str,
    kv_prefix: str,
    private_sqlite_url: str,
    tmp_path: Path,
) -> None:
    db = Database(private_sqlite_url)
    try:
        checkpointed(service_log(db, openbao, runtime_auth, chain, kv_prefix))
    finally:
        db.dispose()
    done = cvault_verify(openbao, tmp_path, private_sqlite_url, chain, kv_prefix, token=admin_token)
    assert done.returncode == 0, done.stderr
    assert f"audit chain {chain}: OK, " in done.stdout
    assert "against 3 checkpoint(s), the newest at seq 15" in done.stdout
    path = f"secret/data/{kv_prefix}/{chain}/15"
    assert bao(openbao, admin_token, "POST", path, {"data": {"mac": FORGED_MAC}}).status_code == 403
    assert bao(openbao, admin_token, "DELETE", path).status_code == 403


def test_a_checkpoint_deleted_with_more_rights_is_missing(
    openbao: OpenBaoDevServer,
    sqlite_db: Database,
    runtime_auth: AppRoleAuth,
    chain: str,
    kv_prefix: str,
) -> None:
    log = service_log(sqlite_db, openbao, runtime_auth, chain, kv_prefix)
    checkpointed(log, batches=4)  # 5, 10, 15, 20
    root, deadline = openbao.root_token, Deadline.after(60)
    # a soft delete keeps the name listed, with no readable version
    assert bao(openbao, root, "DELETE", f"secret/data/{kv_prefix}/{chain}/15").ok
    report = log.verify(deadline=deadline)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 15, MISSING_CHECKPOINT)
    # deleting the metadata removes the name too, but the next checkpoint still names it
    undeleted = bao(
        openbao, root, "POST", f"secret/undelete/{kv_prefix}/{chain}/15", {"versions": [1]}
    )
    assert undeleted.ok
    assert log.verify(deadline=deadline).ok
    assert bao(openbao, root, "DELETE", f"secret/metadata/{kv_prefix}/{chain}/10").ok
    report = log.verify(deadline=deadline)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 10, MISSING_CHECKPOINT)


# --- deployments checkpointed by the previous version ----------------------------------------


def test_a_single_checkpoint_of_the_previous_version_keeps_verifying(
    openbao: OpenBaoDevServer,
    runtime_auth: AppRoleAuth,
    runtime_token: str,
    chain: str,
    kv_prefix: str,
    private_db_url: str,
    tmp_path: Path,
) -> None:
    db = Database(private_db_url)
    try:
        log = service_log(db, openbao, runtime_auth, chain, kv_prefix)
        for i in range(10):
            log.record([event(i)], deadline=Deadline.after(30))
        # what the previous version wrote, and overwrote, at the kv_path itself
        with db.engine.connect() as conn:
            mac = conn.exec_driver_sql(
                f"SELECT mac FROM audit_events WHERE chain = '{chain}' AND seq = 8"
            ).scalar_one()
        legacy = {
            "format": "1",
            "chain": chain,
            "seq": "8",
            "mac": bytes(mac).hex(),
            "time": datetime.now(UTC).isoformat(),
        }
        put = bao(openbao, openbao.root_token, "POST", f"secret/data/{kv_prefix}", {"data": legacy})
        put.raise_for_status()
        done = cvault_verify(openbao, tmp_path, private_db_url, chain, kv_prefix)
        assert done.returncode == 0, done.stderr
        assert "against 1 checkpoint(s), the newest at seq 8" in done.stdout
        # the upgraded service carries on from it, into write-once paths (rows 9 and 10; the
        # operator's own row of the verify above is in the operator's chain)
        report = log.checkpoint_now(deadline=Deadline.after(30))
        assert (report.ok, report.checked, report.last_seq) == (True, 2, 10)
        assert kv_secrets(openbao, kv_prefix) == [kv_prefix, f"{kv_prefix}/{chain}/10"]
        assert read_secret(openbao, kv_prefix)[0] == legacy
        # nobody with the runtime credential rewrites the old document any more
        forged = {**legacy, "mac": FORGED_MAC}
        answer = bao(openbao, runtime_token, "POST", f"secret/data/{kv_prefix}", {"data": forged})
        assert answer.status_code == 403
        tamper(
            db,
            (
                "UPDATE audit_events SET role = 'dpo' WHERE chain = :c AND seq = 3",
                {"c": chain},
            ),
        )
        insider = KeyManager(
            TransitKeyWrapper(
                openbao.url, TokenAuth(runtime_token, renew=False), key_prefix=KEY_PREFIX
            )
        )
        remac(db, insider, chain, deadline=Deadline.after(30))
        bad = cvault_verify(openbao, tmp_path, private_db_url, chain, kv_prefix)
        assert bad.returncode == 1, bad.stdout
        assert f"audit chain {chain}: FAILED at row seq 8: checkpoint mismatch" in bad.stderr
    finally:
        db.dispose()


def test_code_upgraded_before_its_policy_still_checkpoints_and_says_to_apply_it(
    openbao: OpenBaoDevServer,
    sqlite_db: Database,
    chain: str,
    kv_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the previous runtime policy (update but no list) checkpoints go on, each to a new
    path, and the log says the policy is not write-once."""
    root = openbao.root_token
    write_policy(openbao.url, root, "cvault-runtime-previous-test", PREVIOUS_RUNTIME_POLICY)
    previous = AppRoleAuth(
        *setup_approle(
            openbao.url,
            root,
            role_name="cvault-audit-previous-test",
            policies=["cvault-runtime-previous-test"],
            token_ttl=600,
            token_max_ttl=1200,
        )
    )
    with caplog.at_level(logging.WARNING, logger="vault.audit"):
        checkpointed(service_log(sqlite_db, openbao, previous, chain, kv_prefix), batches=2)
    assert REWRITABLE in caplog.text
    assert "cannot list the audit checkpoints" in caplog.text
    assert sorted(kv_secrets(openbao, kv_prefix)) == [
        f"{kv_prefix}/{chain}/10",
        f"{kv_prefix}/{chain}/5",
    ]
