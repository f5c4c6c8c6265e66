"""The key server stays out of the hot path: OpenBao requests counted in its own audit log."""

from __future__ import annotations

import pytest

from tests.support import ADMIN_KEY, TEST_PURPOSE, authenticator, make_service, sample_record
from vault.api import start_server
from vault.client import VaultClient
from vault.keys.openbao_dev import OpenBaoDevServer, audit_request_paths
from vault.service import Services
from vault.storage import Database

pytestmark = [pytest.mark.openbao, pytest.mark.slow]


#: not a data call: the health probe of every server running in this session asks whether the
#: key server still accepts its credential, every 15 s (issue 12), whatever this test does
_PROBE = "auth/token/lookup-self"


def _requests(openbao: OpenBaoDevServer) -> int:
    """Every OpenBao request except those for the audit key (see _audit_key_requests) and the
    health probes' credential checks."""
    assert openbao.audit_log_path is not None
    return sum(
        1
        for p in audit_request_paths(openbao.audit_log_path)
        if not p.endswith("cvault-audit") and p != _PROBE
    )


def _audit_key_requests(openbao: OpenBaoDevServer) -> int:
    """The audit log's own key (one per database, made once, unwrapped once per process)."""
    assert openbao.audit_log_path is not None
    return sum(1 for p in audit_request_paths(openbao.audit_log_path) if p.endswith("cvault-audit"))


def test_openbao_requests_per_thousand_records(
    database: Database, openbao: OpenBaoDevServer, tenant: str
) -> None:
    service = make_service(database, openbao)
    running = start_server(
        Services.over(service.core), "127.0.0.1:0", authenticator=authenticator()
    )
    try:
        with VaultClient(
            running.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=120
        ) as vc:
            # 1,000 records x 5 sensitive fields (5 classes) for a new tenant
            start = _requests(openbao)
            first = vc.batch_create_records(tenant, [sample_record(i) for i in range(1000)])
            # at most 5 is the requirement; exactly 5 (one per class) also shows the count works
            assert _requests(openbao) - start == 5

            start = _requests(openbao)
            second = vc.batch_create_records(tenant, [sample_record(i) for i in range(1000, 2000)])
            assert _requests(openbao) - start == 0

            start = _requests(openbao)
            for rec in first + second:
                assert vc.get_record(tenant, rec.record_id).fields["email"].output == "plain"
            assert _requests(openbao) - start == 0
    finally:
        running.stop(grace=0)

    # A freshly started service process (cold caches, new key-server client) reads them back.
    fresh = make_service(database, openbao)
    running = start_server(Services.over(fresh.core), "127.0.0.1:0", authenticator=authenticator())
    try:
        with VaultClient(
            running.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=120
        ) as vc:
            start, audit_start = _requests(openbao), _audit_key_requests(openbao)
            for rec in first + second:
                got = vc.get_record(tenant, rec.record_id)
                assert len(got.fields) == 5
            assert _requests(openbao) - start == 5  # one batched unwrap per class
            # plus the audit key, unwrapped once by the new process for its audit rows
            assert _audit_key_requests(openbao) - audit_start <= 1
    finally:
        running.stop(grace=0)
