"""Rotations over a restored backup (issue 15, third point): an erased record's data-key rows
written back into the table, tombstones kept, as restoring one table from an older backup does.

Before: ``rotate-tenant`` stopped on the ``refuse_erased_data_keys`` trigger with SQLAlchemy's
traceback (the statement, and from PostgreSQL's driver the trigger's context), and an operator
could not rotate until they found and deleted those rows by hand. Now the rotation completes:
the rows are counted and skipped (their old tenant-key version stays, and ``shred-report`` says
the erasure is not complete), or deleted with ``--purge-erased``; and no command prints a
wrapped key, a key id or SQL.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.support import ADMIN, KEY_PREFIX, make_service, sample_record
from vault.deadline import Deadline
from vault.keys import FieldKeyAdmin
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.service import RecordInput, RecordsService
from vault.service.operations import retire, rotate_field, rotate_tenant, trim
from vault.storage import Database

pytestmark = [pytest.mark.openbao, pytest.mark.slow]

_COLUMNS = "id, tenant, record_id, field_class, tenant_key_id, wrapped, created_at, seals"


@pytest.fixture
def db(private_db_url: str) -> Iterator[Database]:
    database = Database(private_db_url)
    yield database
    database.dispose()


def _dl() -> Deadline:
    return Deadline.after(60)


def _key_rows(db: Database, where: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        rows = conn.execute(text(f"SELECT {_COLUMNS} FROM data_keys WHERE {where}"), params)
        return [dict(r._mapping) for r in rows]


def _write_back(db: Database, rows: list[dict[str, Any]]) -> None:
    """Insert rows past the erasure triggers, as a restore does (pg_restore
    --disable-triggers; on SQLite the triggers are dropped and made again)."""
    insert = text(f"INSERT INTO data_keys ({_COLUMNS}) VALUES (:{_COLUMNS.replace(', ', ', :')})")
    with db.engine.begin() as conn:
        if db.engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(insert, rows)
            return
        triggers = conn.execute(
            text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
        ).all()
        for name, _ in triggers:
            conn.execute(text(f"DROP TRIGGER {name}"))
        conn.execute(insert, rows)
        for _, sql in triggers:
            conn.execute(text(sql))


def _erased_and_restored(db: Database, svc: RecordsService, tenant: str) -> tuple[str, list[str]]:
    """Three records, the first erased and its data-key rows written back; (its id, the ids
    of the other two)."""
    stored = svc.create(
        ADMIN, tenant, [RecordInput(sample_record(i)) for i in range(3)], deadline=_dl()
    )
    erased = stored[0].record_id
    rows = _key_rows(db, "record_id = :r", {"r": erased})
    svc.delete(ADMIN, tenant, erased, deadline=_dl())
    _write_back(db, rows)
    return erased, [s.record_id for s in stored[1:]]


def test_rotations_complete_past_restored_rows_then_purge_them(
    bao: OpenBaoDevServer, db: Database
) -> None:
    svc = make_service(db, bao)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    erased, kept = _erased_and_restored(db, svc, tenant)
    with FieldKeyAdmin(bao.url, bao.root_token, key_prefix=KEY_PREFIX) as admin:
        assert rotate_field(db, admin, "email").version == 2
        report = rotate_tenant(svc.core, tenant, "email")
        assert (report.version, report.rewrapped, report.erased, report.purged) == (2, 2, 1, False)
        assert report.destroyed == 0  # the restored row still references version 1
        assert retire(db, admin, "email") == 2
        trim(db, admin, "email")
        again = rotate_tenant(svc.core, tenant, "email", purge_erased=True)
    assert (again.version, again.started, again.erased, again.purged) == (2, False, 1, True)
    assert again.destroyed == 1
    assert _key_rows(db, "record_id = :r AND field_class = 'email'", {"r": erased}) == []
    assert _key_rows(db, "record_id = :r", {"r": erased})  # other classes: their own rotation
    fresh = make_service(db, bao)
    for rid in kept:
        assert fresh.get(ADMIN, tenant, rid, deadline=_dl()).fields["email"].value


def _cvault(cfg: Path, bao: OpenBaoDevServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, BAO_TOKEN=bao.root_token, CVAULT_OPENBAO_TOKEN=bao.root_token)
    return subprocess.run(
        [sys.executable, "-m", "vault.cli", *args, "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )


def _secrets(db: Database) -> set[str]:
    """What no command may print: every data-key and tenant-key id, and each wrapped key's
    bytes as hex, base64 and Python's repr (a prefix long enough to be unmistakable)."""
    found: set[str] = set()
    with db.engine.connect() as conn:
        for table in ("data_keys", "tenant_keys"):
            for key_id, wrapped in conn.execute(text(f"SELECT id, wrapped FROM {table}")):
                found.add(str(key_id))
                if isinstance(wrapped, str):  # transit's "vault:vN:<base64>"
                    found.add(wrapped.rpartition(":")[2][:16])
                    continue
                raw = bytes(wrapped)
                found |= {raw[:12].hex(), base64.b64encode(raw[:12]).decode()}
                found.add(repr(raw[:8])[2:-1])
    return found


def test_key_commands_complete_and_print_no_key_or_sql(
    bao: OpenBaoDevServer, private_sqlite_url: str, tmp_path: Path
) -> None:
    """On SQLite only: the commands are the same code on both backends, which the test above
    runs; nine cvault processes per backend would double its time for nothing new."""
    db = Database(private_sqlite_url)
    svc = make_service(db, bao)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    _erased_and_restored(db, svc, tenant)
    secrets = _secrets(db)
    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        f'database_url = "{private_sqlite_url}"\n'
        f'[openbao]\nurl = "{bao.url}"\nkey_prefix = "{KEY_PREFIX}"\n'
    )
    commands = [
        ("keys", "status"),
        ("keys", "rotate-field", "--all"),
        ("keys", "rotate-tenant", "--all"),
        ("keys", "retire", "--all"),
        ("keys", "trim", "--all"),
        ("keys", "shred-report"),
        ("keys", "rotate-tenant", "--all", "--purge-erased"),
        ("keys", "shred-report", "--json"),
        ("keys", "status", "--json"),
    ]
    outputs = {}
    for command in commands:
        done = _cvault(cfg, bao, *command)
        outputs[command] = done.stdout + done.stderr
        assert done.returncode == 0, f"{command}: {outputs[command][-2000:]}"
    skipped = outputs[("keys", "rotate-tenant", "--all")]
    assert f"{tenant}/email: 1 data-key rows of erased records skipped" in skipped
    assert "--purge-erased" in skipped
    purged = outputs[("keys", "rotate-tenant", "--all", "--purge-erased")]
    assert f"{tenant}/email: 1 data-key rows of erased records deleted" in purged
    secrets |= _secrets(db)
    for command, out in outputs.items():
        assert not [s for s in secrets if s in out], command
        for sql in ("SELECT ", "UPDATE ", "INSERT ", "[SQL", "parameters"):
            assert sql not in out, command
    db.dispose()
