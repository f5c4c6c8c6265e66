"""Fail closed on the audit log: when audit rows cannot be written (the table refuses inserts,
or the audit key cannot be unwrapped), every reveal fails UNAVAILABLE and returns no value, and
no write, erasure, consent change or rate-limit count commits without its audit row."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from tests.integration.access.access_support import (
    audit_rows,
    rate_counters,
    table_counts,
    wait_for,
)
from tests.support import (
    ADMIN,
    ADMIN_KEY,
    TEST_POLICY,
    TEST_PURPOSE,
    TOKENS_KEY,
    TcpProxy,
    api_key_of,
    authenticator,
    make_service,
    sample_record,
)
from vault.api import RunningServer, start_server
from vault.audit import AUDIT_KEY_CLASS, AuditLog, MemoryCheckpointStore
from vault.client import VaultClient
from vault.deadline import Deadline
from vault.errors import KeyServerUnavailable, Unavailable
from vault.keys import KeyManager
from vault.keys._wrapper import UnwrapItem, WrapItem
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.policy import PolicyHolder
from vault.schema import load_schema
from vault.service import Access, Core, RecordInput, RecordsService, Services
from vault.storage import Database, upgrade
from vault.testing import InMemoryKeyWrapper

pytestmark = pytest.mark.openbao

TRIGGER = "cvault_test_audit_read_only"
DPO_PRINCIPAL = "apikey:dev-dpo"


@contextmanager
def audit_table_read_only(db: Database) -> Iterator[None]:
    """A BEFORE INSERT trigger that makes ``audit_events`` refuse every new row; always dropped."""
    with db.engine.begin() as conn:
        if db.dialect == "sqlite":
            conn.execute(
                text(
                    f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON audit_events "
                    "BEGIN SELECT RAISE(ABORT, 'read-only'); END"
                )
            )
        else:
            conn.execute(
                text(
                    f"CREATE FUNCTION {TRIGGER}() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'read-only' USING ERRCODE = 'insufficient_privilege'; "
                    "END; $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON audit_events "
                    f"FOR EACH ROW EXECUTE FUNCTION {TRIGGER}()"
                )
            )
    try:
        yield
    finally:
        with db.engine.begin() as conn:
            if db.dialect == "sqlite":
                conn.execute(text(f"DROP TRIGGER IF EXISTS {TRIGGER}"))
            else:
                conn.execute(text(f"DROP TRIGGER IF EXISTS {TRIGGER} ON audit_events"))
                conn.execute(text(f"DROP FUNCTION IF EXISTS {TRIGGER}()"))


def _fails_unavailable(
    call: Callable[[], object], values: Sequence[str], reason: str | None = "audit_unavailable"
) -> Unavailable:
    """Run ``call``: it must raise UNAVAILABLE (with ``reason``) and mention none of ``values``."""
    with pytest.raises(Unavailable) as info:
        call()
    exc = info.value
    if reason is not None:
        assert exc.reason == reason, (exc.reason, exc.message)
    for shown in (str(exc), repr(exc), exc.message):
        for value in values:
            assert value not in shown
    return exc


def _secret_values(fields: dict[str, str]) -> list[str]:
    canonical = load_schema().validate(fields)
    return sorted({*fields.values(), *canonical.values()})


def _chain_head(db: Database) -> tuple[int, bytes]:
    with db.engine.connect() as conn:
        seq, mac = conn.execute(
            text("SELECT seq, mac FROM audit_chain_heads WHERE chain = 'main'")
        ).one()
    return int(seq), bytes(mac)


def test_audit_table_refusing_inserts_fails_every_call_closed(
    database: Database, server: RunningServer, tenant: str
) -> None:
    fields = sample_record(11)
    values = _secret_values(fields)
    with (
        VaultClient(server.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=10) as admin,
        VaultClient(server.address, api_key=api_key_of("dpo"), purpose="dsar", timeout=10) as dpo,
        VaultClient(server.address, api_key=TOKENS_KEY, timeout=10) as tokens,
    ):
        created = admin.create_record(tenant, fields)
        rid = created.record_id
        before_values = admin.get_record(tenant, rid).values()  # caches warm: only audit fails
        # one value only: dev-dpo is a shared principal with a per-minute limit
        dpo_view = dpo.get_record(tenant, rid, fields=["email"])
        assert dpo_view.fields["email"].value == before_values["email"]
        counts = table_counts(database)
        head = _chain_head(database)
        dpo_counters = rate_counters(database, DPO_PRINCIPAL)
        assert dpo_counters  # the dpo role is limited: its reads are counted

        with audit_table_read_only(database):
            results: list[object] = []  # whatever a call that should have failed returned
            # reveals
            _fails_unavailable(lambda: results.append(admin.get_record(tenant, rid)), values)
            _fails_unavailable(
                lambda: results.append(admin.get_record(tenant, rid, fields=["email"])), values
            )
            _fails_unavailable(lambda: results.append(dpo.get_record(tenant, rid)), values)
            _fails_unavailable(
                lambda: results.append(admin.export_customer_data(tenant, rid)), values
            )
            _fails_unavailable(
                lambda: results.append(dpo.export_customer_data(tenant, rid)), values
            )
            # writes, erasure and consent: none may commit without its audit row
            _fails_unavailable(lambda: admin.create_record(tenant, sample_record(12)), values)
            _fails_unavailable(
                lambda: admin.batch_create_records(tenant, [sample_record(13), sample_record(14)]),
                values,
            )
            _fails_unavailable(
                lambda: admin.update_record(
                    tenant, rid, expected_version=1, set_fields={"email": "new@example.com"}
                ),
                values,
            )
            _fails_unavailable(lambda: admin.delete_record(tenant, rid), values)
            _fails_unavailable(
                lambda: admin.update_consent(
                    tenant, rid, ["marketing"], expected_version=0, source="test"
                ),
                values,
            )
            # reading the access history is audited as well
            _fails_unavailable(lambda: results.append(admin.query_access(tenant, rid)), values)
            # a denial that cannot be audited is not passed off as a plain denial either
            _fails_unavailable(lambda: tokens.create_record(tenant, sample_record(15)), values)
            assert results == []
            assert table_counts(database) == counts
            assert _chain_head(database) == head
            assert rate_counters(database, DPO_PRINCIPAL) == dpo_counters

        # the trigger is gone: nothing above took effect, the chain is intact, calls work again
        after = admin.get_record(tenant, rid)
        assert after.version == 1
        assert after.values() == before_values
        assert admin.get_consent(tenant, rid).version == 0
        # the chain goes on from the head the refused appends left untouched
        assert _chain_head(database)[0] == head[0] + 1


@pytest.fixture
def bao_proxy(openbao: OpenBaoDevServer) -> Iterator[TcpProxy]:
    parts = urlsplit(openbao.url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 8200)
    yield proxy
    proxy.close()


def test_audit_key_unreachable_fails_reveals_closed(
    database: Database,
    openbao: OpenBaoDevServer,
    admin_client: VaultClient,
    bao_proxy: TcpProxy,
    tenant: str,
) -> None:
    """A fresh replica whose record keys are cached but whose audit key is not yet unwrapped:
    with the key server cut, a reveal could decrypt but cannot audit, so it must fail."""
    fields = sample_record(21)
    values = _secret_values(fields)
    rid = admin_client.create_record(tenant, fields).record_id
    expected = admin_client.get_record(tenant, rid).values()

    replica = make_service(database, openbao, url=f"http://{bao_proxy.address}")
    with database.engine.connect() as conn:
        tenant_key_ids = {
            str(r[0])
            for r in conn.execute(
                # an untyped parameter: record_id is uuid on PostgreSQL, not VARCHAR
                text("SELECT tenant_key_id FROM data_keys WHERE record_id = :r"),
                {"r": rid},
            )
        }
    assert tenant_key_ids
    # warm exactly the record's tenant keys in the replica (one key-server call, through the
    # proxy); the audit key stays wrapped
    replica.core.keyring.by_ids(tenant, tenant_key_ids, deadline=Deadline.after(10))
    running = start_server(
        Services.over(replica.core), "127.0.0.1:0", authenticator=authenticator()
    )
    try:
        with VaultClient(
            running.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=10
        ) as vc:
            counts = table_counts(database)
            bao_proxy.cut()
            results: list[object] = []
            _fails_unavailable(lambda: results.append(vc.get_record(tenant, rid)), values)
            _fails_unavailable(
                lambda: results.append(vc.get_record(tenant, rid, fields=["email"])), values
            )
            # the export reads the access history first, which needs the audit key too
            _fails_unavailable(
                lambda: results.append(vc.export_customer_data(tenant, rid)), values, reason=None
            )
            assert results == []
            assert table_counts(database) == counts  # not a single audit row, nothing counted

            bao_proxy.restore()
            assert wait_for(lambda: _reads(vc, tenant, rid) == expected)
    finally:
        running.stop(grace=0)


def _reads(vc: VaultClient, tenant: str, rid: str) -> dict[str, str] | None:
    try:
        return vc.get_record(tenant, rid).values()
    except Unavailable:
        return None


class AuditKeyOutage(InMemoryKeyWrapper):
    """The in-memory key server, except that the ``audit`` key fails while ``audit_down``."""

    def __init__(self) -> None:
        super().__init__()
        self.audit_down = False

    def _check(self, field_class: str) -> None:
        if self.audit_down and field_class == AUDIT_KEY_CLASS:
            raise KeyServerUnavailable(f"key server unavailable: fake-{field_class}")

    def wrap(
        self, field_class: str, items: Sequence[WrapItem], *, deadline: Deadline | None = None
    ) -> list[str]:
        self._check(field_class)
        return super().wrap(field_class, items, deadline=deadline)

    def unwrap(
        self, field_class: str, items: Sequence[UnwrapItem], *, deadline: Deadline | None = None
    ) -> list[bytes]:
        self._check(field_class)
        return super().unwrap(field_class, items, deadline=deadline)


def _in_memory_service(db: Database, wrapper: AuditKeyOutage) -> RecordsService:
    """A fresh process: new key caches over the same (in-memory) key server."""
    keys = KeyManager(wrapper)
    audit = AuditLog(db, keys, checkpoint=MemoryCheckpointStore(), checkpoint_in_background=False)
    return RecordsService(Core(db, keys, load_schema(), Access(PolicyHolder(TEST_POLICY), audit)))


@pytest.fixture
def fresh_sqlite(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'audit-outage.db'}"
    upgrade(url)
    db = Database(url)
    yield db
    db.dispose()


def test_only_the_audit_key_down_fails_writes_and_reveals(fresh_sqlite: Database) -> None:
    wrapper = AuditKeyOutage()
    wrapper.audit_down = True
    service = _in_memory_service(fresh_sqlite, wrapper)
    fields = sample_record(31)
    values = _secret_values(fields)
    # the very first write of a database must create the audit key: it cannot, so no write
    _fails_unavailable(
        lambda: service.create(ADMIN, "t-mem", [RecordInput(fields)], deadline=Deadline.after(10)),
        values,
    )
    assert table_counts(fresh_sqlite, ("records", "record_values", "audit_events")) == {
        "records": 0,
        "record_values": 0,
        "audit_events": 0,
    }

    # with the audit key up, a record is written (and the audit key created) ...
    wrapper.audit_down = False
    [stored] = service.create(ADMIN, "t-mem", [RecordInput(fields)], deadline=Deadline.after(10))
    rid = stored.record_id
    # ... then a fresh process, while only the audit key is down, over real gRPC
    wrapper.audit_down = True
    fresh = _in_memory_service(fresh_sqlite, wrapper)
    running = start_server(Services.over(fresh.core), "127.0.0.1:0", authenticator=authenticator())
    try:
        with (
            VaultClient(running.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=10) as vc,
            VaultClient(running.address, api_key=TOKENS_KEY, timeout=10) as tokens,
        ):
            counts = table_counts(fresh_sqlite)
            results: list[object] = []
            _fails_unavailable(lambda: results.append(vc.get_record("t-mem", rid)), values)
            _fails_unavailable(
                lambda: results.append(vc.export_customer_data("t-mem", rid)), values, reason=None
            )
            _fails_unavailable(lambda: vc.create_record("t-mem", sample_record(32)), values)
            _fails_unavailable(
                lambda: vc.update_record(
                    "t-mem", rid, expected_version=1, set_fields={"email": "x@example.com"}
                ),
                values,
            )
            _fails_unavailable(lambda: vc.delete_record("t-mem", rid), values)
            # a refusal must be audited too: unaudited, it turns into UNAVAILABLE
            _fails_unavailable(lambda: tokens.create_record("t-mem", sample_record(33)), values)
            # tokens only: nothing revealed, nothing to audit, so it still works
            assert tokens.get_record("t-mem", rid).fields["email"].output == "token"
            assert results == []
            assert table_counts(fresh_sqlite) == counts

            # the key is back: the same process reveals again, with its audit row
            wrapper.audit_down = False
            assert vc.get_record("t-mem", rid).fields["email"].value == fields["email"]
            rows = audit_rows(fresh_sqlite, action="record.read")
            assert len(rows) == 1
    finally:
        running.stop(grace=0)
