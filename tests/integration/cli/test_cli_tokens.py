"""`cvault tokens purge`: deletes only expired tokens, counts them with --dry-run, is audited;
`cvault tokens fingerprint`: fingerprints tokens made before fingerprints, audited."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support import ADMIN, KEY_PREFIX, TEST_POLICY, make_wrapper
from vault.audit import AuditLog
from vault.deadline import Deadline
from vault.keys import KeyManager
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.policy import PolicyHolder
from vault.schema import load_schema
from vault.service import Access
from vault.service.services import Services
from vault.service.tokens import TokenizeItem
from vault.storage import Database, upgrade

pytestmark = pytest.mark.openbao


def test_purge_deletes_expired_tokens_only(tmp_path: Path, openbao: OpenBaoDevServer) -> None:
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    upgrade(url)
    db = Database(url)
    keys = KeyManager(make_wrapper(openbao))
    audit = AuditLog(db, keys, checkpoint_in_background=False)
    service = Services.build(
        db, keys, load_schema(), Access(PolicyHolder(TEST_POLICY), audit)
    ).tokens
    tenant = f"t{uuid.uuid4().hex[:10]}"
    dl = Deadline.after(60)
    tokens = service.tokenize(
        ADMIN,
        tenant,
        [
            TokenizeItem(f"u{i}@example.org", "email", ttl_seconds=60 if i < 3 else 0)
            for i in range(5)
        ],
        deadline=dl,
    )
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE tokens SET expires_at = '2000-01-01 00:00:00' WHERE expires_at IS NOT NULL"
            )
        )
    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        f'database_url = "{url}"\n[openbao]\nurl = "{openbao.url}"\nkey_prefix = "{KEY_PREFIX}"\n'
    )
    env = dict(os.environ, CVAULT_OPENBAO_TOKEN=openbao.root_token)

    def cvault(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vault.cli", "tokens", "purge", "--config", str(cfg), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )

    dry = cvault("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "3 expired tokens would be purged" in dry.stdout
    done = cvault("--batch", "2")
    assert done.returncode == 0, done.stderr
    assert "purged 3 expired tokens" in done.stdout
    with db.engine.connect() as conn:
        left = set(conn.execute(text("SELECT token FROM tokens")).scalars())
        actions = list(conn.execute(text("SELECT action, reason FROM audit_events")).all())
    assert left == set(tokens[3:])
    assert ("admin.tokens.purge", "purged 3") in [tuple(a) for a in actions]
    db.dispose()


def test_fingerprint_fills_in_tokens_made_before_fingerprints(
    tmp_path: Path, openbao: OpenBaoDevServer
) -> None:
    url = f"sqlite:///{tmp_path / 'fp.db'}"
    upgrade(url)
    db = Database(url)
    keys = KeyManager(make_wrapper(openbao))
    audit = AuditLog(db, keys, checkpoint_in_background=False)
    service = Services.build(
        db, keys, load_schema(), Access(PolicyHolder(TEST_POLICY), audit)
    ).tokens
    tenant = f"t{uuid.uuid4().hex[:10]}"
    items = [TokenizeItem(f"u{i}@example.org", "email") for i in range(3)]
    service.tokenize(ADMIN, tenant, items, deadline=Deadline.after(60))
    with db.engine.begin() as conn:  # as rows made before migration 0007
        conn.execute(text("UPDATE tokens SET fingerprint = NULL, fingerprint_key_id = NULL"))
    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        f'database_url = "{url}"\n[openbao]\nurl = "{openbao.url}"\nkey_prefix = "{KEY_PREFIX}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "vault.cli", "tokens", "fingerprint", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, CVAULT_OPENBAO_TOKEN=openbao.root_token),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"{tenant}/email: 3 fingerprinted, 0 erased" in done.stdout
    with db.engine.connect() as conn:
        missing = conn.execute(
            text("SELECT count(*) FROM tokens WHERE fingerprint IS NULL")
        ).scalar_one()
        actions = list(conn.execute(text("SELECT action, reason FROM audit_events")).all())
    assert missing == 0
    assert ("admin.tokens.fingerprint", "fingerprinted 3") in [tuple(a) for a in actions]
    db.dispose()
