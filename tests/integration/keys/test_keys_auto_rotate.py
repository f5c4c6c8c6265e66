"""`cvault keys auto-rotate`: the [rotation] schedule decides what is due; due tenant keys and
field keys are rotated (field keys retired and trimmed), the rest left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support import ADMIN, FIELD_CLASSES, KEY_PREFIX, make_service, sample_record
from vault.config import load_settings
from vault.deadline import Deadline
from vault.errors import ConfigError
from vault.keys import FieldKeyAdmin
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.service import RecordInput
from vault.service.operations import key_status
from vault.storage import Database, upgrade

pytestmark = pytest.mark.openbao


def test_auto_rotate_follows_the_schedule(bao: OpenBaoDevServer, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    upgrade(url)
    db = Database(url)
    svc = make_service(db, bao)
    record = sample_record(60)
    [stored] = svc.create(ADMIN, "acme", [RecordInput(record)], deadline=Deadline.after(60))
    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        f'database_url = "{url}"\n[openbao]\nurl = "{bao.url}"\nkey_prefix = "{KEY_PREFIX}"\n'
        "[rotation]\nfield_key_days = 90\ntenant_key_days = 30\n"
    )
    env = dict(os.environ, BAO_TOKEN=bao.root_token, CVAULT_OPENBAO_TOKEN=bao.root_token)

    def cvault(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vault.cli", "keys", "auto-rotate", *args, "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )

    now = datetime.now(UTC)
    nothing = cvault("--now", now.isoformat())
    assert nothing.returncode == 0, nothing.stderr
    assert "due: 0 tenant keys, 0 field keys" in nothing.stdout
    in_40_days = (now + timedelta(days=40)).isoformat()
    tenants_only = cvault("--now", in_40_days, "--dry-run")
    assert "due: 5 tenant keys, 0 field keys (dry run)" in tenants_only.stdout  # 5 classes used
    in_100_days = (now + timedelta(days=100)).isoformat()
    done = cvault("--now", in_100_days)
    assert done.returncode == 0, done.stderr
    assert f"due: 5 tenant keys, {len(FIELD_CLASSES) + 1} field keys" in done.stdout
    with FieldKeyAdmin(bao.url, bao.root_token, key_prefix=KEY_PREFIX) as admin:
        infos = {c: admin.info(c) for c in [*FIELD_CLASSES, "audit"]}
    assert all(i.versions == (2,) for i in infos.values())  # rotated, retired, trimmed
    status = key_status(db, infos)
    assert all(f.below_latest == 0 for f in status.field_keys)
    assert {t.current_version for t in status.tenants} == {2}
    fresh = make_service(db, bao)
    view = fresh.get(ADMIN, "acme", stored.record_id, deadline=Deadline.after(60))
    assert {n: f.value for n, f in view.fields.items()} == fresh.core.schema.validate(record)
    db.dispose()


def test_rotation_settings_are_checked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[rotation]\nfield_key_days = -1\n")
    with pytest.raises(ConfigError, match="rotation"):
        load_settings(bad, env={})
    typo = tmp_path / "typo.toml"
    typo.write_text("[rotation]\nfield_keys_days = 9\n")
    with pytest.raises(ConfigError, match="unknown"):
        load_settings(typo, env={})
