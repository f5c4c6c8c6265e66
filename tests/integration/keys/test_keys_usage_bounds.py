"""AES-GCM usage bounds (issue 11, point 8), against the real OpenBao, on SQLite and PostgreSQL.

A tenant key wraps every data key of its (tenant, class) with a random 96-bit nonce, and a
record's data key seals its values and its linked tokens' values the same way: AES-GCM must stay
far below 2^32 encryptions per key. Before, nothing counted them, and any holder of
``token.create`` could seal chosen values under one customer's record key without end. Now each
tenant key's wraps are counted in the database (in blocks) and its next version starts past
``WRAP_LIMIT``; a record key seals at most ``MAX_LINKED_SEALS`` linked-token values. The bounds
are made small here to reach them.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.support import ADMIN, TEST_POLICY, make_wrapper, sample_record
from vault.audit import AuditLog, MemoryCheckpointStore
from vault.deadline import Deadline
from vault.errors import ResourceExhausted
from vault.keys import KeyManager
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.policy import PolicyHolder
from vault.schema import load_schema
from vault.service import Access, Core, RecordInput, RecordsService, Services
from vault.service import tokens as tokens_module
from vault.service._keyring import Keyring
from vault.service.tokens import TokenizeItem
from vault.storage import Database

pytestmark = pytest.mark.openbao


def _service(db: Database, openbao: OpenBaoDevServer, **bounds: int) -> RecordsService:
    keys = KeyManager(make_wrapper(openbao))
    audit = AuditLog(db, keys, checkpoint=MemoryCheckpointStore(), checkpoint_in_background=False)
    access = Access(PolicyHolder(TEST_POLICY), audit)
    keyring = Keyring(db, keys, **bounds)
    return RecordsService(Core(db, keys, load_schema(), access, keyring=keyring))


def _versions(db: Database, tenant: str) -> list[int]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT version FROM tenant_keys WHERE tenant = :t AND field_class = 'email'"
                " AND kind = 'data' ORDER BY version"
            ),
            {"t": tenant},
        )
        return [int(r[0]) for r in rows]


def test_a_tenant_key_past_its_bound_gets_a_new_version(
    database: Database, openbao: OpenBaoDevServer, tenant: str
) -> None:
    svc = _service(database, openbao, wrap_limit=10, wrap_block=4)
    dl = Deadline.after(60)
    records = [sample_record(i) for i in range(13)]
    svc.create(ADMIN, tenant, [RecordInput(r) for r in records[:6]], deadline=dl)
    assert _versions(database, tenant) == [1]
    svc.create(ADMIN, tenant, [RecordInput(r) for r in records[6:12]], deadline=dl)
    # 12 email data keys wrapped, counted in blocks of 4: past 10, the next write rotates
    svc.create(ADMIN, tenant, [RecordInput(records[12])], deadline=dl)
    assert _versions(database, tenant) == [1, 2]
    with database.engine.connect() as conn:
        wraps: dict[int, int] = dict(
            conn.execute(
                text(
                    "SELECT version, wraps FROM tenant_keys WHERE tenant = :t"
                    " AND field_class = 'email' AND kind = 'data'"
                ),
                {"t": tenant},
            ).all()
        )
    assert wraps[1] >= 12
    assert 1 <= wraps[2] <= 4  # the last record's key, one block reserved
    for i in (0, 12):  # both still read
        [rid] = svc.find(ADMIN, tenant, {"email": records[i]["email"]}, deadline=dl)
        assert svc.get(ADMIN, tenant, rid, deadline=dl).fields["email"].value


def test_a_record_key_seals_a_bounded_number_of_linked_values(
    database: Database, openbao: OpenBaoDevServer, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens_module, "MAX_LINKED_SEALS", 5)
    svc = _service(database, openbao)
    tokens = Services.over(svc.core).tokens
    dl = Deadline.after(60)
    [rec] = svc.create(ADMIN, tenant, [RecordInput(sample_record(1))], deadline=dl)

    def linked(n: int, start: int) -> list[TokenizeItem]:
        return [
            TokenizeItem(f"chosen{start + i}@example.org", "email", record_id=rec.record_id)
            for i in range(n)
        ]

    tokens.tokenize(ADMIN, tenant, linked(4, 0), deadline=dl)
    with pytest.raises(ResourceExhausted) as info:
        tokens.tokenize(ADMIN, tenant, linked(2, 10), deadline=dl)
    assert info.value.reason == "data_key_exhausted"
    with database.engine.connect() as conn:
        n = conn.execute(
            text("SELECT count(*) FROM tokens WHERE tenant = :t AND record_id IS NOT NULL"),
            {"t": tenant},
        ).scalar_one()
    assert n == 4  # the refused call wrote nothing
