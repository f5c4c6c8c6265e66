"""Denials cannot flood the audit log, and audit rows say where a call came from (issue 11,
point 3), over gRPC against the real OpenBao, on SQLite and PostgreSQL.

Before: unauthenticated callers added about 940 audit rows a second, and no row recorded the
peer's address. Now each peer host has a bound on denials audited one by one
(:class:`~vault.service.access.DenialLimiter`); past it calls are still refused, counted, and
the count is written in one ``audit.denials_suppressed`` row with the peer's next audited
denial. Every row made for a call carries its peer (``ipv4:127.0.0.1:<port>``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest

from tests.integration.access.access_support import audit_rows
from tests.support import API_KEYS, SAMPLE, TEST_POLICY, make_wrapper
from vault.api import ApiKeyStore, Authenticator, RunningServer, start_server
from vault.app import _audit_denial
from vault.audit import AuditLog, MemoryCheckpointStore
from vault.client import VaultClient
from vault.keys import KeyManager
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.policy import PolicyHolder
from vault.schema import load_schema
from vault.service import Access, Core, Services
from vault.service.access import DENIALS_SUPPRESSED, DenialLimiter
from vault.storage import Database
from vault.v1 import records_pb2, records_pb2_grpc

pytestmark = pytest.mark.openbao

BURST = 5
#: the guarded server's limiter clock (refills only when a test moves it)
CLOCK = [0.0]


@pytest.fixture
def guarded(database: Database, openbao: OpenBaoDevServer) -> Iterator[RunningServer]:
    """A server whose peers may have BURST denials audited, refilled one a second of CLOCK."""
    keys = KeyManager(make_wrapper(openbao))
    audit = AuditLog(
        database, keys, checkpoint=MemoryCheckpointStore(), checkpoint_in_background=False
    )
    access = Access(
        PolicyHolder(TEST_POLICY),
        audit,
        denials=DenialLimiter(rate=1.0, burst=BURST, clock=lambda: CLOCK[0]),
    )
    auth = Authenticator(
        api_keys=ApiKeyStore({k: v[1] for k, v in API_KEYS.items()}),
        allow_mtls=False,
        on_denied=_audit_denial(access),
    )
    core = Core(database, keys, load_schema(), access)
    server = start_server(Services.over(core), "127.0.0.1:0", authenticator=auth)
    yield server
    server.stop(grace=0)


def test_an_unauthenticated_flood_is_counted_not_written_row_by_row(
    guarded: RunningServer, database: Database
) -> None:
    marker = uuid.uuid4().hex
    before = len(audit_rows(database, action="auth.authenticate"))
    summaries = len(audit_rows(database, action=DENIALS_SUPPRESSED))
    with grpc.insecure_channel(guarded.address) as channel:
        stub = records_pb2_grpc.RecordsStub(channel)

        def refused() -> None:
            with pytest.raises(grpc.RpcError) as info:
                stub.GetRecord(
                    records_pb2.GetRecordRequest(tenant="t", record_id=marker),
                    metadata=(("x-api-key", "cvk_nobody_" + "x" * 40),),
                    timeout=10,
                )
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

        for _ in range(40):
            refused()
        rows = audit_rows(database, action="auth.authenticate")[before:]
        assert len(rows) == BURST  # not 40
        assert all(str(r["peer"]).startswith(("ipv4:127.0.0.1:", "ipv6:[::1]:")) for r in rows)
        CLOCK[0] += 1.0  # a second later: one more is audited, with the count held back
        refused()
    [summary] = audit_rows(database, action=DENIALS_SUPPRESSED)[summaries:]
    assert (summary["reason"], summary["outcome"]) == ("suppressed:35", "denied")
    assert len(audit_rows(database, action="auth.authenticate")[before:]) == BURST + 1


def test_the_held_back_count_is_written_with_the_next_audited_denial() -> None:
    clock = [0.0]
    limiter = DenialLimiter(rate=1.0, burst=2, clock=lambda: clock[0])
    peer = "ipv4:10.0.0.7:5000"
    assert [limiter.admit(peer) for _ in range(5)] == [
        (True, 0),
        (True, 0),
        (False, 0),
        (False, 0),
        (False, 0),
    ]
    clock[0] = 1.0  # one denial's worth refilled
    assert limiter.admit("ipv4:10.0.0.7:6000") == (True, 3)  # same host, another port
    assert limiter.admit("ipv4:10.0.0.8:5000") == (True, 0)  # another host: its own bound


def test_rows_of_a_call_record_its_peer(
    admin_client: VaultClient, database: Database, tenant: str
) -> None:
    admin_client.create_record(tenant, SAMPLE)
    [row] = audit_rows(database, tenant=tenant, action="record.write")
    assert str(row["peer"]).startswith(("ipv4:127.0.0.1:", "ipv6:[::1]:"))
