"""Retention: the schema's periods decide what `cvault records purge --expired` crypto-shreds:
whole records not written for `records_days`, and per class that class's values."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support import ADMIN, KEY_PREFIX, TEST_POLICY, make_service, sample_record
from vault import errors
from vault.deadline import Deadline
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.schema import load_schema
from vault.service import RecordInput
from vault.service.services import Services
from vault.service.tokens import TokenizeItem
from vault.storage import Database, upgrade

pytestmark = pytest.mark.openbao


def _schema(tmp_path: Path) -> Path:
    base = (Path(__file__).resolve().parents[3] / "vault" / "schema" / "default.yaml").read_text()
    path = tmp_path / "schema.yaml"
    path.write_text(base + "retention:\n  records_days: 365\n  classes:\n    card_number: 30\n")
    return path


def _age(db: Database, record_id: str, days: int) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            text("UPDATE records SET updated_at = :t WHERE id = :i"),
            {"t": datetime.now(UTC) - timedelta(days=days), "i": record_id},
        )


def test_purge_expired(openbao: OpenBaoDevServer, tmp_path: Path) -> None:
    schema = _schema(tmp_path)
    assert load_schema(schema).class_retention_days
    url = f"sqlite:///{tmp_path / 'p.db'}"
    upgrade(url)
    db = Database(url)
    svc = make_service(db, openbao, schema=schema)
    dl = Deadline.after(60)
    fresh_rec, card_rec, old_rec = sample_record(70), sample_record(71), sample_record(72)
    fresh, card, old = svc.create(
        ADMIN, "acme", [RecordInput(r) for r in (fresh_rec, card_rec, old_rec)], deadline=dl
    )
    tokens = Services.over(svc.core).tokens
    [card_token] = tokens.tokenize(
        ADMIN,
        "acme",
        [TokenizeItem(card_rec["card_number"], "card_number", record_id=card.record_id)],
        deadline=dl,
    )
    _age(db, card.record_id, 40)  # past card_number's 30 days, not the record's 365
    _age(db, old.record_id, 400)  # past both

    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        f'database_url = "{url}"\nschema = "{schema}"\npolicy = "{TEST_POLICY}"\n'
        f'[openbao]\nurl = "{openbao.url}"\nkey_prefix = "{KEY_PREFIX}"\n'
    )
    env = dict(os.environ, CVAULT_OPENBAO_TOKEN=openbao.root_token)

    def purge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vault.cli", "records", "purge", *args, "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )

    dry = purge("--expired", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would erase 1 records and shred 2 class keys" in dry.stdout  # old's and card's
    assert svc.get(ADMIN, "acme", old.record_id, deadline=dl).fields  # nothing happened
    done = purge("--expired", "--batch", "1")
    assert done.returncode == 0, done.stderr
    assert "erased 1 records; shredded 1 values past retention" in done.stdout

    latest = make_service(db, openbao, schema=schema)
    with pytest.raises(errors.Erased):
        latest.get(ADMIN, "acme", old.record_id, deadline=dl)
    view = latest.get(ADMIN, "acme", card.record_id, deadline=dl)
    expected = latest.core.schema.validate(card_rec)
    expected.pop("card_number")
    assert {n: f.value for n, f in view.fields.items()} == expected
    assert view.version == 2
    again = Services.over(latest.core).tokens
    assert again.reveal(ADMIN, "acme", [card_token], deadline=dl)[0].error is not None
    untouched = latest.get(ADMIN, "acme", fresh.record_id, deadline=dl)
    assert {n: f.value for n, f in untouched.fields.items()} == latest.core.schema.validate(
        fresh_rec
    )
    with db.engine.connect() as conn:
        actions = sorted(
            conn.execute(
                text("SELECT action FROM audit_events WHERE action LIKE 'retention.%'")
            ).scalars()
        )
    assert actions == ["retention.erase", "retention.shred.card_number"]
    assert purge("--expired").stdout.startswith("erased 0 records; shredded 0 values")
    db.dispose()


def test_retention_in_the_schema_is_checked(tmp_path: Path) -> None:
    base = (Path(__file__).resolve().parents[3] / "vault" / "schema" / "default.yaml").read_text()
    for bad, message in (
        ("retention:\n  records_days: 0\n", "records_days must be a whole number of days"),
        ("retention:\n  classes:\n    cards: 3\n", "unknown class 'cards'"),
        ("retention:\n  forever: 1\n", "unknown retention key 'forever'"),
    ):
        path = tmp_path / "s.yaml"
        path.write_text(base + bad)
        with pytest.raises(errors.ConfigError, match=message):
            load_schema(path)
