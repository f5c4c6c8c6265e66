"""Erasure and rotation reach every replica's memory (issue 15, second point).

The scenario as found: record R is erased on replica A; replica B has read R before. Then
``rotate-tenant``, ``rotate-field``, ``retire`` and ``trim`` for every class, and
``shred-report`` says complete. R's rows and its old tenant-key rows are then written back as a
whole-table restore would (its tombstones gone). A fresh process failed to decrypt them, as
promised; but both running replicas returned R in plain (A from its cached old tenant key, B
from its cached data keys) for up to their cache ages. Now each replica applies the key events
(``vault/service/_sync.py``) and ``shred-report`` waits until every live one has.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from tests.support import ADMIN, KEY_PREFIX, make_service, sample_record
from vault.deadline import Deadline
from vault.errors import VaultServiceError
from vault.keys import FieldKeyAdmin
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.service import EVICT_WITHIN_SECONDS, KeySync, RecordInput, RecordsService
from vault.service.operations import (
    ShredStatus,
    retire,
    rotate_field,
    rotate_tenant,
    shred_report,
    trim,
)
from vault.storage import Database

pytestmark = [pytest.mark.openbao, pytest.mark.postgres, pytest.mark.slow]

#: the tables a whole-table restore writes R's rows back into, parents first
RESTORED = ("tenant_keys", "records", "data_keys", "record_values", "blind_index")


@pytest.fixture
def db(private_postgres_url: str) -> Iterator[Database]:
    database = Database(private_postgres_url)
    yield database
    database.dispose()


def _dl() -> Deadline:
    return Deadline.after(60)


def _rows_of(db: Database, tenant: str, record_id: str) -> dict[str, list[dict[str, Any]]]:
    """R's rows and every tenant-key row of its tenant, as a backup holds them."""
    where = {
        "tenant_keys": ("tenant = :t", {"t": tenant}),
        "records": ("id = :r", {"r": record_id}),
        "data_keys": ("record_id = :r", {"r": record_id}),
        "record_values": ("record_id = :r", {"r": record_id}),
        "blind_index": ("record_id = :r", {"r": record_id}),
    }
    with db.engine.connect() as conn:
        return {
            table: [
                dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {table} WHERE {w}"), p)
            ]
            for table, (w, p) in where.items()
        }


def _restore(db: Database, record_id: str, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Write the rows back, tombstones gone (the erasure tables restored from before it)."""
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM erasures WHERE record_id = :r"), {"r": record_id})
        conn.execute(text("DELETE FROM erased_data_keys WHERE record_id = :r"), {"r": record_id})
        for table in RESTORED:
            for row in rows[table]:
                cols = ", ".join(row)
                values = ", ".join(f":{c}" for c in row)
                conn.execute(
                    text(f"INSERT INTO {table} ({cols}) VALUES ({values}) ON CONFLICT DO NOTHING"),
                    row,
                )


def _plain_or_none(svc: RecordsService, tenant: str, record_id: str) -> dict[str, str] | None:
    """R's plain values as this replica returns them; None when it cannot open them."""
    try:
        view = svc.get(ADMIN, tenant, record_id, deadline=Deadline.after(20))
    except VaultServiceError:
        return None
    plain = {n: f.value for n, f in view.fields.items() if f.output == "plain" and f.value}
    return plain or None


def _report(db: Database, bao: OpenBaoDevServer, record_id: str, since: datetime) -> ShredStatus:
    with FieldKeyAdmin(bao.url, bao.root_token, key_prefix=KEY_PREFIX) as admin:
        with db.engine.connect() as conn:
            classes = list(
                conn.execute(text("SELECT DISTINCT field_class FROM tenant_keys")).scalars()
            )
        infos = {c: admin.info(c) for c in classes}
    [status] = [s for s in shred_report(db, infos, since) if s.record_id == record_id]
    return status


def test_no_replica_returns_an_erased_record_from_restored_rows(
    bao: OpenBaoDevServer, db: Database
) -> None:
    a, b, operator = make_service(db, bao), make_service(db, bao), make_service(db, bao)
    syncs = [KeySync(db, s.core.keys, name, interval=0.2) for s, name in ((a, "a"), (b, "b"))]
    for s in syncs:
        s.start()
    try:
        tenant = f"t{uuid.uuid4().hex[:8]}"
        since = datetime.now(UTC) - timedelta(hours=1)
        [r, other] = a.create(
            ADMIN,
            tenant,
            [RecordInput(sample_record(1)), RecordInput(sample_record(2))],
            deadline=_dl(),
        )
        rid = r.record_id
        assert _plain_or_none(b, tenant, rid)  # B has R's data keys (and tenant keys) cached
        backup = _rows_of(db, tenant, rid)
        receipt = a.delete(ADMIN, tenant, rid, deadline=_dl())
        assert receipt.effective_everywhere_by == receipt.erased_at + timedelta(
            seconds=EVICT_WITHIN_SECONDS
        )
        # the key server dates versions to the second: rotate in the next one
        time.sleep(1.05 - datetime.now(UTC).microsecond / 1e6)
        classes = sorted({row["field_class"] for row in backup["tenant_keys"]})
        for c in classes:
            rotate_tenant(operator.core, tenant, c)
        with FieldKeyAdmin(bao.url, bao.root_token, key_prefix=KEY_PREFIX) as admin:
            for c in [*classes, "audit"]:
                rotate_field(db, admin, c)
                retire(db, admin, c)
                trim(db, admin, c)
        end = time.monotonic() + EVICT_WITHIN_SECONDS + 5
        while not (status := _report(db, bao, rid, since)).complete:
            assert time.monotonic() < end, status.pending
            time.sleep(0.2)
        _restore(db, rid, backup)
        assert _plain_or_none(make_service(db, bao), tenant, rid) is None  # a fresh process
        assert _plain_or_none(a, tenant, rid) is None, "replica A returned the erased record"
        assert _plain_or_none(b, tenant, rid) is None, "replica B returned the erased record"
        assert _plain_or_none(b, tenant, other.record_id)  # the live record reads on
    finally:
        for s in syncs:
            s.stop()


def test_shred_report_waits_for_a_live_replica_that_has_not_applied_the_erasure(
    bao: OpenBaoDevServer, db: Database
) -> None:
    """A replica that beats but has not polled since the erasure holds the report back; one
    silent for longer than the bound (its caches cleared, or gone) does not."""
    svc = make_service(db, bao)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    since = datetime.now(UTC) - timedelta(hours=1)
    [r] = svc.create(ADMIN, tenant, [RecordInput(sample_record(3))], deadline=_dl())
    lagging = KeySync(db, make_service(db, bao).core.keys, "lagging", interval=3600)
    lagging.sync_once()  # a heartbeat, then no poll
    svc.delete(ADMIN, tenant, r.record_id, deadline=_dl())
    pending = _report(db, bao, r.record_id, since).pending
    assert any(p.startswith("memory: 1 running server(s)") and "lagging" in p for p in pending)
    lagging.sync_once()
    assert not any(p.startswith("memory:") for p in _report(db, bao, r.record_id, since).pending)
