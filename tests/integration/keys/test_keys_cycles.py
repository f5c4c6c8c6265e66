"""Field-key rotation cycle after cycle (issue 15, first point), the way a quarterly rotation
runs the README's commands: write records, ``rotate-field``, ``rotate-tenant``, ``retire``,
``trim``, read everything back and check ``keys status``; five times in a row for two classes,
on SQLite and PostgreSQL, against a private OpenBao (the test rotates and trims its keys).

Before the fix the second ``retire`` failed: the first ``trim`` had left the transit key's
``min_encryption_version`` at 2 and the key server refuses a ``min_decryption_version`` above
it (HTTP 400, which was also reported as a permission refusal)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support import ADMIN, KEY_PREFIX, make_service, sample_record
from vault.deadline import Deadline
from vault.errors import KeyServerPermissionDenied, KeyServerRejected
from vault.keys import FieldKeyAdmin
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.service import RecordInput, RecordsService
from vault.service.operations import key_status, retire, rotate_field, rotate_tenant, trim
from vault.storage import Database

pytestmark = [pytest.mark.openbao, pytest.mark.slow]

#: the two classes cycled: email (searchable: tenant and index keys) and national_id
CYCLED = ("email", "national_id")
CYCLES = 5


@pytest.fixture
def db(private_db_url: str) -> Iterator[Database]:
    database = Database(private_db_url)
    yield database
    database.dispose()


def _values(svc: RecordsService, tenant: str, rid: str) -> dict[str, str]:
    view = svc.get(ADMIN, tenant, rid, deadline=Deadline.after(60))
    return {n: f.value for n, f in view.fields.items()}


def test_five_full_cycles_for_two_classes(bao: OpenBaoDevServer, db: Database) -> None:
    svc = make_service(db, bao)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    written: dict[str, dict[str, str]] = {}
    with FieldKeyAdmin(bao.url, bao.root_token, key_prefix=KEY_PREFIX) as admin:
        for cycle in range(1, CYCLES + 1):
            recs = [sample_record(100 * cycle + i) for i in range(3)]
            stored = svc.create(
                ADMIN, tenant, [RecordInput(r) for r in recs], deadline=Deadline.after(60)
            )
            for rec, s in zip(recs, stored, strict=True):
                written[s.record_id] = svc.core.schema.validate(rec)
            for c in CYCLED:
                assert rotate_field(db, admin, c).version == cycle + 1
                assert rotate_tenant(svc.core, tenant, c).version == cycle + 1
                assert retire(db, admin, c) == cycle + 1, f"cycle {cycle}: retire {c}"
                assert trim(db, admin, c) == cycle + 1, f"cycle {cycle}: trim {c}"
            infos = {c: admin.info(c) for c in CYCLED}
            for info in infos.values():
                assert info.versions == (cycle + 1,), (cycle, info)
                assert info.min_decryption_version == cycle + 1
                # 0 (the newest) or at least the decryption floor: never below it
                assert info.min_encryption_version in (0, cycle + 1)
            status = key_status(db, infos)
            for f in status.field_keys:
                assert f.below_latest == 0, (cycle, f)
                assert set(f.wrapped_by_version) == {cycle + 1}, (cycle, f)
            for t in status.tenants:
                if t.tenant == tenant and t.field_class in CYCLED:
                    assert set(t.data_keys_by_version) == {cycle + 1}, (cycle, t)
                    assert t.oldest_in_use == cycle + 1
            # every record reads back, in this process and in a fresh one (empty caches)
            fresh = make_service(db, bao)
            for rid, values in written.items():
                assert _values(svc, tenant, rid) == values
                assert _values(fresh, tenant, rid) == values


def test_a_configuration_refusal_is_not_a_permission_refusal(bao: OpenBaoDevServer) -> None:
    """HTTP 400 from the key server is reported as rejected, with its message; 403 stays a
    permission refusal."""
    with FieldKeyAdmin(bao.url, bao.root_token, key_prefix=KEY_PREFIX) as admin:
        admin.rotate("phone")
        # a floor above the newest version: OpenBao answers 400
        with pytest.raises(KeyServerRejected) as rejected:
            admin.set_min_decryption_version("phone", 99)
        assert not isinstance(rejected.value, KeyServerPermissionDenied)
        assert rejected.value.reason == "key_server_rejected"
        assert "greater than" in rejected.value.message or "latest" in rejected.value.message
    with (
        FieldKeyAdmin(bao.url, "not-a-token", key_prefix=KEY_PREFIX) as denied,
        pytest.raises(KeyServerPermissionDenied) as refused,
    ):
        denied.info("phone")
    assert refused.value.reason == "key_server_permission_denied"
