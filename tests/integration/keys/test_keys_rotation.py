"""Field-key rotation against a real OpenBao (a private one: the test rotates and trims keys):
rotate-field rewraps every tenant, index and audit key by transit rewrap (and converts keys of
the earlier associated-data format), resumes instead of rotating twice, and retire / trim
refuse while anything is left below, then make an old backup unreadable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support import ADMIN, FIELD_CLASSES, KEY_PREFIX, make_service, sample_record
from vault.deadline import Deadline
from vault.errors import VaultServiceError
from vault.keys import FieldKeyAdmin, WrapItem
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.service import RecordInput, RecordsService
from vault.service._keyring import key_aad
from vault.service.operations import KeyOpRefused, key_status, retire, rotate_field, trim
from vault.service.services import Services
from vault.service.tokens import TokenizeItem
from vault.storage import Database, upgrade

pytestmark = pytest.mark.openbao

CLASSES = [*FIELD_CLASSES, "audit"]


def _dl() -> Deadline:
    return Deadline.after(60)


def _values(svc: RecordsService, tenant: str, rid: str) -> dict[str, str]:
    view = svc.get(ADMIN, tenant, rid, deadline=_dl())
    return {n: f.value for n, f in view.fields.items()}


def test_rotate_retire_trim_every_class(bao: OpenBaoDevServer, tmp_path: Path) -> None:
    path = tmp_path / "vault.db"
    upgrade(f"sqlite:///{path}")
    db = Database(f"sqlite:///{path}")
    svc = make_service(db, bao)
    tokens = Services.over(svc.core).tokens
    tenants = [f"t{uuid.uuid4().hex[:8]}" for _ in range(2)]
    written: dict[tuple[str, str], dict[str, str]] = {}
    for n, tenant in enumerate(tenants):
        recs = [sample_record(10 * n + i) for i in range(3)]
        for rec, stored in zip(
            recs,
            svc.create(ADMIN, tenant, [RecordInput(r) for r in recs], deadline=_dl()),
            strict=True,
        ):
            written[(tenant, stored.record_id)] = svc.core.schema.validate(rec)
    [token] = tokens.tokenize(
        ADMIN, tenants[0], [TokenizeItem("pool@example.org", "email")], deadline=_dl()
    )

    # one tenant key in the earlier format (bound as transit associated data)
    with db.engine.begin() as conn:
        row = conn.execute(
            text(
                "SELECT id, tenant, field_class, kind, version FROM tenant_keys WHERE field_class = 'email' LIMIT 1"
            )
        ).one()
    binding = key_aad(row.tenant, row.field_class, row.kind, row.version, row.id)
    key = svc.core.keys.tenant_keys.get(row.id)
    assert key is not None  # made by this process, so cached
    [legacy] = svc.core.keys.wrapper.wrap("email", [WrapItem(key, binding)])
    with db.engine.begin() as conn:
        conn.execute(
            text("UPDATE tenant_keys SET wrapped = :w WHERE id = :i"), {"w": legacy, "i": row.id}
        )
    backup = tmp_path / "backup.db"
    shutil.copy(path, backup)

    with FieldKeyAdmin(bao.url, bao.root_token, key_prefix=KEY_PREFIX) as admin:
        # a version made outside the command: retire and trim refuse, with the count
        assert admin.rotate("email") == 2
        with pytest.raises(KeyOpRefused) as refused:
            retire(db, admin, "email")
        assert refused.value.count == 4  # 2 tenants x (tenant key + index key)
        with pytest.raises(KeyOpRefused) as refused:
            trim(db, admin, "email")
        assert refused.value.count == 4
        # ... and rotate-field resumes to it rather than making a third version
        resumed = rotate_field(db, admin, "email", batch=3)
        assert (resumed.version, resumed.rotated, resumed.rewrapped, resumed.converted) == (
            2,
            False,
            4,
            1,
        )
        held = {
            f.field_class: sum(f.wrapped_by_version.values())
            for f in key_status(db, {c: admin.info(c) for c in CLASSES}).field_keys
        }
        for c in CLASSES:
            report = rotate_field(db, admin, c)
            assert report.rotated
            assert report.rewrapped == held[c], c  # every wrapped key of the class, once
        infos = {c: admin.info(c) for c in CLASSES}
        status = key_status(db, infos)
        assert all(f.below_latest == 0 for f in status.field_keys), status
        for c in CLASSES:
            retire(db, admin, c)
            trim(db, admin, c)
        after = {c: admin.info(c) for c in CLASSES}
        assert all(i.versions == (i.latest_version,) for i in after.values())

    # every record and token reads back in a fresh process (empty caches)
    fresh = make_service(db, bao)
    for (tenant, rid), values in written.items():
        assert _values(fresh, tenant, rid) == values
    again = Services.over(fresh.core).tokens
    assert again.reveal(ADMIN, tenants[0], [token], deadline=_dl())[0].value == "pool@example.org"

    # the copy taken before the rotations holds keys wrapped under trimmed versions only
    old = Database(f"sqlite:///{backup}")
    from_backup = make_service(old, bao)
    tenant, rid = next(iter(written))
    with pytest.raises(VaultServiceError):
        _values(from_backup, tenant, rid)
    old.dispose()
    db.dispose()


def test_key_commands(bao: OpenBaoDevServer, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(url)
    db = Database(url)
    svc = make_service(db, bao)
    record = sample_record(1)
    [stored] = svc.create(ADMIN, "acme", [RecordInput(record)], deadline=_dl())
    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        f'database_url = "{url}"\n[openbao]\nurl = "{bao.url}"\nkey_prefix = "{KEY_PREFIX}"\n'
    )
    env = dict(os.environ, BAO_TOKEN=bao.root_token, CVAULT_OPENBAO_TOKEN=bao.root_token)

    def cvault(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vault.cli", "keys", *args, "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )

    with FieldKeyAdmin(bao.url, bao.root_token, key_prefix=KEY_PREFIX) as admin:
        admin.rotate("email")  # email's keys are now below the newest version
    refused = cvault("trim", "--class", "email")
    assert refused.returncode == 1
    assert "2 wrapped keys are below version 2" in refused.stderr
    rotated = cvault("rotate-field", "--all", "--batch", "1")
    assert rotated.returncode == 0, rotated.stderr
    assert "email: resumed at v2; 2 keys rewrapped" in rotated.stdout
    assert "phone: rotated to v2" in rotated.stdout
    for step in ("retire", "trim"):
        done = cvault(step, "--all")
        assert done.returncode == 0, done.stderr
    with db.engine.connect() as conn:
        actions = [
            r.action for r in conn.execute(text("SELECT action FROM audit_events ORDER BY seq"))
        ]
    assert {"admin.keys.rotate-field", "admin.keys.retire", "admin.keys.trim"} <= set(actions)
    fresh = make_service(db, bao)
    assert _values(fresh, "acme", stored.record_id) == svc.core.schema.validate(record)
    db.dispose()
