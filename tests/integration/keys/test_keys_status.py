"""`cvault keys status`: field-key versions from the key server, and what the database has
wrapped under each, per tenant and class. A private OpenBao, since the test rotates keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support import (
    ADMIN,
    FIELD_CLASSES,
    KEY_PREFIX,
    make_service,
    private_openbao,
    sample_record,
)
from vault.deadline import Deadline
from vault.keys import field_key_info, wrapped_version
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.service import RecordInput
from vault.service.operations import format_status, key_status
from vault.service.services import Services
from vault.service.tokens import TokenizeItem
from vault.storage import Database, upgrade

pytestmark = pytest.mark.openbao

NAMES = [*FIELD_CLASSES, "audit"]


@pytest.fixture(scope="module")
def bao() -> Iterator[OpenBaoDevServer]:
    """One private key server for this module (its tests rotate keys)."""
    with private_openbao() as server:
        yield server


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[Database, str]]:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    upgrade(url)
    database = Database(url)
    yield database, url
    database.dispose()


def test_status_counts_what_each_version_wraps(
    bao: OpenBaoDevServer, db: tuple[Database, str]
) -> None:
    database, _ = db
    records = make_service(database, bao)
    tokens = Services.over(records.core).tokens
    dl = Deadline.after(60)
    t1, t2 = f"a{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    records.create(ADMIN, t1, [RecordInput(sample_record(i)) for i in range(3)], deadline=dl)
    records.create(ADMIN, t2, [RecordInput(sample_record(9))], deadline=dl)
    tokens.tokenize(ADMIN, t2, [TokenizeItem("x@example.org", "email")], deadline=dl)

    info = field_key_info(bao.url, bao.root_token, key_prefix=KEY_PREFIX, names=NAMES)
    status = key_status(database, info)
    email = next(f for f in status.field_keys if f.field_class == "email")
    # one tenant key and one index key per (tenant, class) used: 2 tenants x email
    assert email.wrapped_by_version == {1: 4}
    assert email.below_latest == 0
    audit = next(f for f in status.field_keys if f.field_class == "audit")
    assert audit.wrapped_by_version == {1: 1}
    by = {(t.tenant, t.field_class): t for t in status.tenants}
    assert by[(t1, "email")].data_keys_by_version == {1: 3}  # one per record
    assert by[(t2, "email")].data_keys_by_version == {1: 2}  # the record's and the token pool's
    assert by[(t1, "email")].index_versions == (1,)
    assert status.orphans == 0

    # a new field-key version: everything stored is now below it, until a rewrap
    requests.post(
        f"{bao.url}/v1/transit/keys/{KEY_PREFIX}-email/rotate",
        headers={"X-Vault-Token": bao.root_token},
        timeout=10,
    ).raise_for_status()
    info = field_key_info(bao.url, bao.root_token, key_prefix=KEY_PREFIX, names=NAMES)
    rotated = next(f for f in key_status(database, info).field_keys if f.field_class == "email")
    assert (rotated.latest_version, rotated.available_versions) == (2, (1, 2))
    assert rotated.oldest_in_use == 1
    assert rotated.below_latest == 4
    assert "email" in format_status(key_status(database, info))


def test_status_command(bao: OpenBaoDevServer, db: tuple[Database, str], tmp_path: Path) -> None:
    database, url = db
    records = make_service(database, bao)
    records.create(ADMIN, "acme", [RecordInput(sample_record(1))], deadline=Deadline.after(60))
    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        f'database_url = "{url}"\n[openbao]\nurl = "{bao.url}"\nkey_prefix = "{KEY_PREFIX}"\n'
    )
    env = dict(os.environ, BAO_TOKEN=bao.root_token, CVAULT_OPENBAO_TOKEN=bao.root_token)
    done = subprocess.run(
        [sys.executable, "-m", "vault.cli", "keys", "status", "--config", str(cfg), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    classes = {f["class"]: f for f in out["field_keys"]}
    assert set(classes) == set(NAMES)
    assert classes["email"]["latest_version"] >= 1
    assert {t["tenant"] for t in out["tenants"]} == {"acme"}
    assert out["orphans"] == 0


def test_wrapped_version_parses_only_transit_blobs() -> None:
    assert wrapped_version("vault:v12:abc") == 12
    for bad in ("vault:v:abc", "vault:vx:abc", "fake:v1:abc", "vault:v3", ""):
        assert wrapped_version(bad) is None
