"""The server as ``build_app`` wires it, over mTLS: the current policy picks the principal of a
certificate with several SANs, the SAN type is part of the principal, and a refusal is audited
like every other authentication failure."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from tests.pki_support import issue, spiffe
from vault.api._authn import channel_credentials
from vault.app import App, build_app
from vault.client import TokenItem, VaultClient
from vault.config import AuthSettings, OpenBaoSettings, ServerSettings, Settings
from vault.devcerts import DevPki, generate_dev_pki
from vault.errors import PermissionDenied, Unauthenticated, Unavailable
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.storage import upgrade
from vault.v1 import records_pb2, records_pb2_grpc

pytestmark = pytest.mark.openbao

TENANT = "demo"  # the deployed sample policy's dpo reaches it


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return generate_dev_pki(tmp_path_factory.mktemp("pki"), roles=())


@pytest.fixture
def app(openbao: OpenBaoDevServer, pki: DevPki, tmp_path: Path) -> Iterator[App]:
    url = f"sqlite:///{tmp_path / 'mtls.db'}"
    upgrade(url)
    settings = Settings(
        database_url=url,
        openbao=OpenBaoSettings(url=openbao.url, token=openbao.root_token),
        auth=AuthSettings(
            tls_cert_file=str(pki.server.cert),
            tls_key_file=str(pki.server.key),
            client_ca_file=str(pki.ca.cert),
        ),
    )
    built = build_app(settings)  # the deployed sample policy
    built.create_tenants([TENANT], created_by="test")
    try:
        yield built
    finally:
        built.close()


def tokenize_as(app: App, pki: DevPki, sans: Sequence[x509.GeneralName]) -> None:
    """Tokenize (an action the sample's dpo lacks) presenting a certificate with ``sans``."""
    cert, key = issue(pki, sans)
    creds = channel_credentials(ca=pki.ca.cert.read_bytes(), client_cert=cert, client_key=key)
    running = app.serve("127.0.0.1:0")
    try:
        with VaultClient(running.address, credentials=creds, timeout=10) as vc:
            vc.tokenize(TENANT, [TokenItem("a@example.com", "email")])
    finally:
        running.stop(grace=0)


def audit_rows(app: App) -> list[tuple[str, str, str, str, str]]:
    with app.db.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT action, outcome, principal, role, reason FROM audit_events"
            " WHERE action NOT LIKE 'admin.%' ORDER BY seq"
        ).all()
    return [tuple(r) for r in rows]


def test_two_sans_both_in_the_policy_are_refused_and_audited(app: App, pki: DevPki) -> None:
    with pytest.raises(Unauthenticated, match="ambiguous_identity"):
        tokenize_as(app, pki, [spiffe("dpo"), spiffe("backend-service")])
    assert audit_rows(app) == [("auth.authenticate", "denied", "", "", "ambiguous_identity")]


def test_of_two_sans_the_one_in_the_policy_is_the_principal(app: App, pki: DevPki) -> None:
    with pytest.raises(PermissionDenied):
        tokenize_as(app, pki, [spiffe("stranger"), spiffe("dpo")])
    [(_, outcome, principal, role, reason)] = audit_rows(app)
    assert (outcome, principal, role, reason) == (
        "denied",
        "spiffe://cvault.dev/dpo",
        "dpo",
        "action_not_allowed",
    )


def test_a_dns_san_spelled_like_a_spiffe_id_is_a_dns_principal(app: App, pki: DevPki) -> None:
    with pytest.raises(PermissionDenied):
        tokenize_as(app, pki, [x509.DNSName("spiffe://cvault.dev/dpo")])
    [(_, outcome, principal, role, reason)] = audit_rows(app)
    assert (outcome, principal, role, reason) == (
        "denied",
        "dns:spiffe://cvault.dev/dpo",
        "",
        "unknown_principal",
    )


def test_probes_reach_health_in_plaintext_and_nothing_else(
    openbao: OpenBaoDevServer, pki: DevPki, tmp_path: Path
) -> None:
    """Issue 12: Kubernetes' gRPC probes cannot speak mTLS, so on an mTLS-only server they
    failed. ``[server] health_listen`` serves grpc.health.v1 alone in plaintext."""
    url = f"sqlite:///{tmp_path / 'probes.db'}"
    upgrade(url)
    settings = Settings(
        database_url=url,
        openbao=OpenBaoSettings(url=openbao.url, token=openbao.root_token),
        auth=AuthSettings(
            tls_cert_file=str(pki.server.cert),
            tls_key_file=str(pki.server.key),
            client_ca_file=str(pki.ca.cert),
        ),
        server=ServerSettings(health_listen="127.0.0.1:0"),
    )
    app = build_app(settings)
    running = app.serve("127.0.0.1:0")
    try:
        probe = f"127.0.0.1:{running.probe_port}"
        with VaultClient(probe, timeout=10) as vc:
            assert vc.health() == "SERVING"
            assert vc.health("cvault.liveness") == "SERVING"
        channel = grpc.insecure_channel(probe)
        stub = records_pb2_grpc.RecordsStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetRecord(records_pb2.GetRecordRequest(tenant=TENANT, record_id="x"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        channel.close()
        with VaultClient(running.address, timeout=10) as plain, pytest.raises(Unavailable):
            plain.health()  # the real port stays mTLS-only
    finally:
        running.stop(grace=0)
        app.close()
