"""Tenant-key rotation: data keys re-wrapped locally under a new tenant-key version, old
versions destroyed, resumable after a stop part-way; records and tokens read back after it,
and an erased record's keys are gone from a backup once field keys are rotated and trimmed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support import ADMIN, FIELD_CLASSES, KEY_PREFIX, make_service, sample_record
from vault.deadline import Deadline
from vault.errors import VaultServiceError
from vault.keys import FieldKeyAdmin
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.service import RecordInput, RecordsService
from vault.service._keyring import DATA
from vault.service.operations import (
    ShredStatus,
    key_status,
    retire,
    rotate_field,
    rotate_tenant,
    shred_report,
    trim,
)
from vault.service.services import Services
from vault.service.tokens import TokenizeItem
from vault.storage import Database, upgrade

pytestmark = pytest.mark.openbao


def _dl() -> Deadline:
    return Deadline.after(60)


def _values(svc: RecordsService, tenant: str, rid: str) -> dict[str, str]:
    return {n: f.value for n, f in svc.get(ADMIN, tenant, rid, deadline=_dl()).fields.items()}


class _Stop(Exception):
    pass


def test_rotate_tenant_rewraps_locally_and_resumes(bao: OpenBaoDevServer, tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    upgrade(f"sqlite:///{path}")
    db = Database(f"sqlite:///{path}")
    svc = make_service(db, bao)
    tenant, other = f"t{uuid.uuid4().hex[:8]}", f"u{uuid.uuid4().hex[:8]}"
    recs = [sample_record(i) for i in range(5)]
    stored = svc.create(ADMIN, tenant, [RecordInput(r) for r in recs], deadline=_dl())
    svc.create(ADMIN, other, [RecordInput(sample_record(7))], deadline=_dl())
    tokens = Services.over(svc.core).tokens
    [token] = tokens.tokenize(
        ADMIN, tenant, [TokenizeItem("pool@example.org", "email")], deadline=_dl()
    )

    report = rotate_tenant(svc.core, tenant, "email", batch=2)
    assert (report.version, report.started, report.rewrapped, report.destroyed) == (2, True, 6, 1)

    # stopped part-way through the next rotation, then run again: it resumes at version 3
    def stop_after_first(done: int) -> None:
        raise _Stop

    with pytest.raises(_Stop):
        rotate_tenant(svc.core, tenant, "email", batch=2, progress=stop_after_first)
    resumed = rotate_tenant(svc.core, tenant, "email", batch=2)
    assert (resumed.version, resumed.started, resumed.rewrapped, resumed.destroyed) == (
        3,
        False,
        4,
        1,
    )

    with bao_admin(bao) as admin:
        status = key_status(db, {"email": admin.info("email")})
    by = {(t.tenant, t.field_class): t for t in status.tenants}
    assert by[(tenant, "email")].data_keys_by_version == {3: 6}
    assert by[(other, "email")].data_keys_by_version == {1: 1}

    fresh = make_service(db, bao)
    for rec, s in zip(recs, stored, strict=True):
        assert _values(fresh, tenant, s.record_id) == fresh.core.schema.validate(rec)
    again = Services.over(fresh.core).tokens
    assert again.reveal(ADMIN, tenant, [token], deadline=_dl())[0].value == "pool@example.org"
    db.dispose()


def bao_admin(bao: OpenBaoDevServer) -> FieldKeyAdmin:
    return FieldKeyAdmin(bao.url, bao.root_token, key_prefix=KEY_PREFIX)


def test_backup_of_an_erased_record_is_dead_after_tenant_then_field_rotation(
    bao: OpenBaoDevServer, tmp_path: Path
) -> None:
    path = tmp_path / "live.db"
    upgrade(f"sqlite:///{path}")
    db = Database(f"sqlite:///{path}")
    svc = make_service(db, bao)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    recs = [sample_record(20 + i) for i in range(3)]
    stored = svc.create(ADMIN, tenant, [RecordInput(r) for r in recs], deadline=_dl())
    backup = tmp_path / "backup.db"
    shutil.copy(path, backup)
    erased = stored[0].record_id
    svc.delete(ADMIN, tenant, erased, deadline=_dl())
    since = datetime.now(UTC) - timedelta(hours=1)

    def report() -> ShredStatus:
        with bao_admin(bao) as admin:
            infos = {c: admin.info(c) for c in FIELD_CLASSES}
        [status] = [s for s in shred_report(db, infos, since) if s.record_id == erased]
        return status

    # the key server dates key versions to the second: start the rotations in the next one, so
    # that "made after the erasure" is unambiguous
    time.sleep(1.05 - datetime.now(UTC).microsecond / 1e6)
    before = report()
    assert not before.complete
    assert any("rotate-tenant" in p for p in before.pending)
    assert any("trim" in p for p in before.pending)

    with db.engine.connect() as conn:
        classes = sorted(
            conn.execute(
                text("SELECT DISTINCT field_class FROM tenant_keys WHERE tenant = :t"),
                {"t": tenant},
            ).scalars()
        )
    for c in classes:
        rotate_tenant(svc.core, tenant, c)
    halfway = report()
    assert not halfway.complete
    assert not any("rotate-tenant" in p for p in halfway.pending)
    with bao_admin(bao) as admin:
        for c in [*classes, "audit"]:
            rotate_field(db, admin, c)
            retire(db, admin, c)
            trim(db, admin, c)

    after = report()
    assert after.complete, after.pending
    # the backup's tenant keys no longer unwrap: the erased record (and everything else in
    # that copy) is unreadable, while the live database reads every live record
    old = Database(f"sqlite:///{backup}")
    from_backup = make_service(old, bao)
    for s in stored:
        with pytest.raises(VaultServiceError):
            _values(from_backup, tenant, s.record_id)
    old.dispose()
    fresh = make_service(db, bao)
    for rec, s in zip(recs[1:], stored[1:], strict=True):
        assert _values(fresh, tenant, s.record_id) == fresh.core.schema.validate(rec)
    with db.engine.connect() as conn:
        versions = set(
            conn.execute(
                text("SELECT version FROM tenant_keys WHERE tenant = :t AND kind = :k"),
                {"t": tenant, "k": DATA},
            ).scalars()
        )
    assert versions == {2}
    db.dispose()


def test_rotate_tenant_command(bao: OpenBaoDevServer, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(url)
    db = Database(url)
    svc = make_service(db, bao)
    record = sample_record(30)
    [s] = svc.create(ADMIN, "acme", [RecordInput(record)], deadline=_dl())
    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        f'database_url = "{url}"\n[openbao]\nurl = "{bao.url}"\nkey_prefix = "{KEY_PREFIX}"\n'
    )
    env = dict(os.environ, BAO_TOKEN=bao.root_token, CVAULT_OPENBAO_TOKEN=bao.root_token)
    done = subprocess.run(
        [sys.executable, "-m", "vault.cli", "keys", "rotate-tenant", "--all", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (
        "acme/email: rotated to v2; 1 data keys re-wrapped; 1 old tenant-key versions destroyed"
        in done.stdout
    )
    fresh = make_service(db, bao)
    assert _values(fresh, "acme", s.record_id) == fresh.core.schema.validate(record)
    svc.delete(ADMIN, "acme", s.record_id, deadline=_dl())
    shred = subprocess.run(
        [sys.executable, "-m", "vault.cli", "keys", "shred-report", "--json", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert shred.returncode == 0, shred.stderr
    out = json.loads(shred.stdout)
    assert out["complete"] is False
    assert [r["record_id"] for r in out["records"]] == [s.record_id]
    db.dispose()
