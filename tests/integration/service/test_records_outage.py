"""Fail closed: with OpenBao or PostgreSQL unreachable, calls fail UNAVAILABLE, nothing is
written, health says NOT_SERVING (for OpenBao: once no cached key serves; degraded but
SERVING while they do, issue 15); the service recovers by itself once they are back."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from tests.support import (
    ADMIN_KEY,
    TEST_PURPOSE,
    TcpProxy,
    authenticator,
    make_service,
    sample_record,
)
from vault.api import start_server
from vault.client import VaultClient
from vault.errors import Unavailable
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.service import Services
from vault.storage import Database

pytestmark = pytest.mark.openbao


def _wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _counts(db: Database) -> dict[str, int]:
    with db.engine.connect() as conn:
        return {
            t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
            for t in ("records", "data_keys", "record_values", "blind_index", "tenant_keys")
        }


@pytest.fixture
def bao_proxy(openbao: OpenBaoDevServer) -> Iterator[TcpProxy]:
    parts = urlsplit(openbao.url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 8200)
    yield proxy
    proxy.close()


def test_key_server_outage_fails_closed_and_recovers(
    database: Database, openbao: OpenBaoDevServer, bao_proxy: TcpProxy, tenant: str
) -> None:
    service = make_service(database, openbao, url=f"http://{bao_proxy.address}")
    running = start_server(
        Services.over(service.core),
        "127.0.0.1:0",
        authenticator=authenticator(),
        health_interval=0.1,
    )
    try:
        with VaultClient(running.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=5) as vc:
            before_outage = vc.create_record(tenant, sample_record(1))
            assert vc.health() == "SERVING"

            bao_proxy.cut()
            # issue 15: while its cached keys serve, the replica is degraded, not taken out
            time.sleep(0.5)  # several probe rounds
            assert vc.health() == "SERVING"
            rows = _counts(database)
            # a new tenant needs new keys from the key server
            with pytest.raises(Unavailable) as exc:
                vc.create_record(tenant + "-new", sample_record(2))
            assert exc.value.reason == "key_server_unavailable"
            # a fresh replica has nothing cached: reading needs the key server
            cold = make_service(database, openbao, url=f"http://{bao_proxy.address}")
            cold_server = start_server(
                Services.over(cold.core), "127.0.0.1:0", authenticator=authenticator()
            )
            try:
                with VaultClient(
                    cold_server.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=5
                ) as cold_vc:
                    with pytest.raises(Unavailable):
                        cold_vc.get_record(tenant, before_outage.record_id)
                    with pytest.raises(Unavailable):
                        cold_vc.create_record(tenant, sample_record(3))
            finally:
                cold_server.stop(grace=0)
            assert _counts(database) == rows  # nothing half-written

            bao_proxy.restore()
            assert _wait_for(lambda: vc.health() == "SERVING")
            fields = sample_record(2)
            after = vc.create_record(tenant + "-new", fields)
            got = vc.get_record(tenant + "-new", after.record_id)
            assert got.fields["email"].value == fields["email"]
    finally:
        running.stop(grace=0)


@pytest.mark.postgres
def test_database_outage_fails_closed_and_recovers(
    postgres_url: str, openbao: OpenBaoDevServer, tenant: str
) -> None:
    parts = urlsplit(postgres_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxied = postgres_url.replace(f"{parts.hostname}:{parts.port}", proxy.address)
    db = Database(proxied)
    service = make_service(db, openbao)
    running = start_server(
        Services.over(service.core),
        "127.0.0.1:0",
        authenticator=authenticator(),
        health_interval=0.1,
    )
    try:
        with VaultClient(
            running.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=10
        ) as vc:
            created = vc.create_record(tenant, sample_record(5))
            proxy.cut()
            assert _wait_for(lambda: vc.health() == "NOT_SERVING")
            for call in (
                lambda: vc.create_record(tenant, sample_record(6)),
                lambda: vc.get_record(tenant, created.record_id),
                lambda: vc.find_records(tenant, {"email": sample_record(5)["email"]}),
            ):
                with pytest.raises(Unavailable) as exc:
                    call()
                assert exc.value.reason == "database_unavailable"
            proxy.restore()
            assert _wait_for(lambda: vc.health() == "SERVING")
            assert vc.get_record(tenant, created.record_id).version == 1
    finally:
        running.stop(grace=0)
        db.dispose()
        proxy.close()
