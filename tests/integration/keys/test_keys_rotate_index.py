"""rotate-index: FindRecords and deterministic tokens keep answering while a new index key
replaces the old one (checked between the rotation's batches), and after it; the command shows
its progress."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ADMIN, KEY_PREFIX, TEST_POLICY, make_service, sample_record
from vault.deadline import Deadline
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.service import RecordInput
from vault.service.operations import key_status, rotate_index
from vault.service.services import Services
from vault.service.tokens import TokenizeItem, TokenKind
from vault.storage import Database, upgrade

pytestmark = pytest.mark.openbao


def _dl() -> Deadline:
    return Deadline.after(60)


def test_find_and_deterministic_tokens_keep_working(
    openbao: OpenBaoDevServer, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'i.db'}"
    upgrade(url)
    db = Database(url)
    svc = make_service(db, openbao)
    tokens = Services.over(svc.core).tokens
    recs = [sample_record(80 + i) for i in range(7)]
    stored = svc.create(ADMIN, "acme", [RecordInput(r) for r in recs], deadline=_dl())
    det = [TokenizeItem(r["email"], "email", TokenKind.DETERMINISTIC, scope="s") for r in recs]
    before = tokens.tokenize(ADMIN, "acme", det, deadline=_dl())
    checks = 0

    def still_answering() -> None:
        nonlocal checks
        checks += 1
        for rec, s in zip(recs, stored, strict=True):
            assert svc.find(ADMIN, "acme", {"email": rec["email"]}, deadline=_dl()) == [s.record_id]
        assert tokens.tokenize(ADMIN, "acme", det, deadline=_dl()) == before

    # a record written mid-rotation is indexed under the new key and found too
    late = sample_record(99)
    [late_stored] = svc.create(ADMIN, "acme", [RecordInput(late)], deadline=_dl())
    report = rotate_index(svc.core, "acme", "email", batch=2, between_batches=still_answering)
    assert checks >= 3
    assert (report.version, report.started, report.indexed) == (2, True, 8)
    assert report.dropped == 8
    for rec, s in [*zip(recs, stored, strict=True), (late, late_stored)]:
        assert svc.find(ADMIN, "acme", {"email": rec["email"]}, deadline=_dl()) == [s.record_id]
    status = key_status(db, {})
    [email] = [t for t in status.tenants if t.tenant == "acme" and t.field_class == "email"]
    assert email.index_versions == (2,)
    # the old tokens still reveal; once the old key is gone, new deterministic tokens differ
    revealed = tokens.reveal(ADMIN, "acme", before, deadline=_dl())
    assert [r.value for r in revealed] == [r["email"] for r in recs]
    after = tokens.tokenize(ADMIN, "acme", det, deadline=_dl())
    assert not set(after) & set(before)

    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        f'database_url = "{url}"\npolicy = "{TEST_POLICY}"\n'
        f'[openbao]\nurl = "{openbao.url}"\nkey_prefix = "{KEY_PREFIX}"\n'
    )
    env = dict(os.environ, CVAULT_OPENBAO_TOKEN=openbao.root_token)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vault.cli",
            "keys",
            "rotate-index",
            "--class",
            "phone",
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
    assert (
        "acme/phone: index key rotated to v2; 8 index rows made, 8 old rows dropped" in done.stdout
    )
    # progress on stderr, in counts only: rows made of rows to make
    assert re.search(r"^  rotate-index acme/phone: 8/8 rows, [0-9]+ rows/s$", done.stderr, re.M)
    for rec, s in zip(recs, stored, strict=True):
        assert svc.find(ADMIN, "acme", {"phone": rec["phone"]}, deadline=_dl()) == [s.record_id]
    db.dispose()
