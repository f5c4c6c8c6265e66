"""Rekey: a record's values and its linked tokens re-encrypted under new data keys; the old
keys destroyed (a restored copy of an old key row is refused), FindRecords unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support import ADMIN, KEY_PREFIX, make_service, sample_record
from vault.deadline import Deadline
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.service import RecordInput
from vault.service.operations import rekey
from vault.service.services import Services
from vault.service.tokens import TokenizeItem
from vault.storage import Database, upgrade

pytestmark = pytest.mark.openbao


def _dl() -> Deadline:
    return Deadline.after(60)


def test_rekey_record_and_tenant(openbao: OpenBaoDevServer, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade(url)
    db = Database(url)
    svc = make_service(db, openbao)
    tokens = Services.over(svc.core).tokens
    recs = [sample_record(50 + i) for i in range(3)]
    stored = svc.create(ADMIN, "acme", [RecordInput(r) for r in recs], deadline=_dl())
    rid = stored[0].record_id
    [linked] = tokens.tokenize(
        ADMIN, "acme", [TokenizeItem(recs[0]["email"], "email", record_id=rid)], deadline=_dl()
    )
    with db.engine.connect() as conn:
        old = {
            r.id: r
            for r in conn.execute(text("SELECT * FROM data_keys WHERE record_id = :r"), {"r": rid})
        }

    new_ids = rekey(svc.core, "acme", rid, deadline=_dl())
    assert len(new_ids) == len(old)
    assert not set(new_ids) & set(old)
    fresh = make_service(db, openbao)
    view = fresh.get(ADMIN, "acme", rid, deadline=_dl())
    assert {n: f.value for n, f in view.fields.items()} == fresh.core.schema.validate(recs[0])
    assert view.version == 2
    again = Services.over(fresh.core).tokens
    assert again.reveal(ADMIN, "acme", [linked], deadline=_dl())[0].value == recs[0]["email"]
    assert fresh.find(ADMIN, "acme", {"email": recs[0]["email"]}, deadline=_dl()) == [rid]
    with db.engine.connect() as conn:
        values = {
            r.data_key_id
            for r in conn.execute(
                text("SELECT data_key_id FROM record_values WHERE record_id = :r"), {"r": rid}
            )
        }
        assert values <= set(new_ids)
        tombstoned = set(
            conn.execute(
                text("SELECT data_key_id FROM erased_data_keys WHERE record_id = :r"), {"r": rid}
            ).scalars()
        )
        assert tombstoned == set(old)
    # a restored copy of an old data-key row is refused
    any_old = next(iter(old.values()))
    with pytest.raises(Exception, match="erased"), db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO data_keys (id, tenant, record_id, field_class, tenant_key_id,"
                " wrapped, created_at) VALUES (:id, :t, :r, 'restored', :tk, :w, :c)"
            ),
            {
                "id": any_old.id,
                "t": any_old.tenant,
                "r": rid,
                "tk": any_old.tenant_key_id,
                "w": any_old.wrapped,
                "c": any_old.created_at,
            },
        )

    # the command, for every record of the tenant, audited
    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        f'database_url = "{url}"\n[openbao]\nurl = "{openbao.url}"\nkey_prefix = "{KEY_PREFIX}"\n'
    )
    env = dict(os.environ, CVAULT_OPENBAO_TOKEN=openbao.root_token)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vault.cli",
            "keys",
            "rekey",
            "--tenant",
            "acme",
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("new data keys") == 3
    latest = make_service(db, openbao)
    for rec, s in zip(recs, stored, strict=True):
        view = latest.get(ADMIN, "acme", s.record_id, deadline=_dl())
        assert {n: f.value for n, f in view.fields.items()} == latest.core.schema.validate(rec)
    with db.engine.connect() as conn:
        rekeyed = conn.execute(
            text("SELECT count(*) FROM audit_events WHERE action = 'admin.keys.rekey'")
        ).scalar_one()
    assert rekeyed == 3
    db.dispose()


def test_shred_pools_command(openbao: OpenBaoDevServer, tmp_path: Path) -> None:
    """``cvault keys shred-pools --since``: a pool still young is left (exit 1, the time it can
    go); once old enough its key is destroyed and the command says so, audited."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    upgrade(url)
    db = Database(url)
    svc = make_service(db, openbao)
    tokens = Services.over(svc.core).tokens
    rec = sample_record(60)
    [stored] = svc.create(ADMIN, "acme", [RecordInput(rec)], deadline=_dl())
    tokens.tokenize(ADMIN, "acme", [TokenizeItem(rec["email"], "email")], deadline=_dl())
    svc.delete(ADMIN, "acme", stored.record_id, deadline=_dl())
    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        f'database_url = "{url}"\n[openbao]\nurl = "{openbao.url}"\nkey_prefix = "{KEY_PREFIX}"\n'
    )
    env = dict(os.environ, CVAULT_OPENBAO_TOKEN=openbao.root_token)
    argv = [sys.executable, "-m", "vault.cli", "keys", "shred-pools", "--since", "2026-01-01"]
    argv += ["--config", str(cfg)]

    young = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert young.returncode == 1
    assert "can be destroyed from" in young.stderr
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE data_keys SET created_at = '2026-01-02 00:00:00.000000'"))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert "destroyed, 0 live tokens re-sealed" in done.stdout
    with db.engine.connect() as conn:
        audited = conn.execute(
            text("SELECT count(*) FROM audit_events WHERE action = 'admin.keys.shred-pool'")
        ).scalar_one()
    assert audited == 1
    db.dispose()
