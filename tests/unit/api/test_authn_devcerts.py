"""The development PKI: parseable certificates, the right SANs, chains that verify, reuse."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from vault import devcerts
from vault.devcerts import DevPki, generate_dev_pki
from vault.errors import InvalidInput

ROLES = ("backend-service", "support-agent", "ai-pipeline", "fraud-analyst", "dpo", "key-admin")


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    return generate_dev_pki(tmp_path / "pki", roles=ROLES)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.pem"))}


def test_writes_the_expected_files_with_private_keys_0600(pki: DevPki) -> None:
    names = {"ca.pem", "ca-key.pem", "server.pem", "server-key.pem"}
    names |= {f"{r}.pem" for r in ROLES} | {f"{r}-key.pem" for r in ROLES}
    assert {p.name for p in pki.directory.iterdir()} == names
    for path in pki.directory.glob("*-key.pem"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert set(pki.clients) == set(ROLES)


def test_private_keys_are_unencrypted_pkcs8_p256(pki: DevPki) -> None:
    for pair in (pki.ca, pki.server, *pki.clients.values()):
        pem = pair.key.read_bytes()
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, not SEC1
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(key.curve, ec.SECP256R1)
        assert key.public_key() == _cert(pair.cert).public_key()


def test_ca_is_a_one_year_ca(pki: DevPki) -> None:
    ca = _cert(pki.ca.cert)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert dt.timedelta(days=364) < lifetime < dt.timedelta(days=366)
    ca.verify_directly_issued_by(ca)


def test_server_certificate_names_localhost_and_loopback(pki: DevPki) -> None:
    server = _cert(pki.server.cert)
    assert _sans(server) == [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize("role", ROLES)
def test_client_certificate_carries_the_role_as_spiffe_uri(pki: DevPki, role: str) -> None:
    cert = _cert(pki.clients[role].cert)
    assert _sans(cert) == [x509.UniformResourceIdentifier(f"spiffe://cvault.dev/{role}")]
    assert pki.principal(role) == f"spiffe://cvault.dev/{role}"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_server_chain_verifies_for_each_name(pki: DevPki) -> None:
    store = Store([_cert(pki.ca.cert)])
    server = _cert(pki.server.cert)
    for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        verifier = PolicyBuilder().store(store).build_server_verifier(name)
        chain = verifier.verify(server, [])
        assert chain[-1] == _cert(pki.ca.cert)


@pytest.mark.parametrize("role", ROLES)
def test_client_chain_verifies(pki: DevPki, role: str) -> None:
    verifier = PolicyBuilder().store(Store([_cert(pki.ca.cert)])).build_client_verifier()
    verified = verifier.verify(_cert(pki.clients[role].cert), [])
    assert verified.subjects == [x509.UniformResourceIdentifier(pki.principal(role))]


def test_client_chain_from_another_ca_does_not_verify(pki: DevPki, tmp_path: Path) -> None:
    other = generate_dev_pki(tmp_path / "other", roles=["dpo"])
    verifier = PolicyBuilder().store(Store([_cert(pki.ca.cert)])).build_client_verifier()
    with pytest.raises(x509.verification.VerificationError):
        verifier.verify(_cert(other.clients["dpo"].cert), [])


def test_custom_trust_domain_and_server_names(tmp_path: Path) -> None:
    pki = generate_dev_pki(
        tmp_path, roles=["dpo"], server_names=("vault.internal", "::1"), trust_domain="acme.test"
    )
    assert _sans(_cert(pki.server.cert)) == [
        x509.DNSName("vault.internal"),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    assert _sans(_cert(pki.clients["dpo"].cert)) == [
        x509.UniformResourceIdentifier("spiffe://acme.test/dpo")
    ]


def test_second_run_reuses_every_file(pki: DevPki) -> None:
    before = _snapshot(pki.directory)
    again = generate_dev_pki(pki.directory, roles=ROLES)
    assert again == pki
    assert _snapshot(pki.directory) == before


def test_adding_a_role_keeps_the_ca_and_existing_certificates(pki: DevPki) -> None:
    before = _snapshot(pki.directory)
    generate_dev_pki(pki.directory, roles=(*ROLES, "auditor"))
    after = _snapshot(pki.directory)
    assert {k: after[k] for k in before} == before
    _cert(pki.directory / "auditor.pem").verify_directly_issued_by(_cert(pki.ca.cert))


def test_a_missing_key_regenerates_only_that_pair(pki: DevPki) -> None:
    before = _snapshot(pki.directory)
    pki.clients["dpo"].key.unlink()
    generate_dev_pki(pki.directory, roles=ROLES)
    after = _snapshot(pki.directory)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"dpo.pem", "dpo-key.pem"}


def test_a_mismatched_key_regenerates_that_pair(pki: DevPki) -> None:
    pki.clients["dpo"].key.write_bytes(pki.clients["key-admin"].key.read_bytes())
    generate_dev_pki(pki.directory, roles=ROLES)
    key = serialization.load_pem_private_key(pki.clients["dpo"].key.read_bytes(), None)
    assert key.public_key() == _cert(pki.clients["dpo"].cert).public_key()


def test_changed_server_names_replace_the_server_certificate(pki: DevPki) -> None:
    generate_dev_pki(pki.directory, roles=ROLES, server_names=("localhost",))
    assert _sans(_cert(pki.server.cert)) == [x509.DNSName("localhost")]


def test_certificates_expiring_soon_are_replaced_all_of_them_with_the_ca(
    pki: DevPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _snapshot(pki.directory)
    # Everything now counts as "expiring within the renewal window".
    monkeypatch.setattr(devcerts, "RENEW_BEFORE", dt.timedelta(days=400))
    generate_dev_pki(pki.directory, roles=ROLES)
    after = _snapshot(pki.directory)
    assert all(before[k] != after[k] for k in before)


def test_a_new_ca_reissues_every_leaf(pki: DevPki) -> None:
    pki.ca.key.unlink()
    generate_dev_pki(pki.directory, roles=ROLES)
    ca = _cert(pki.ca.cert)
    for pair in (pki.server, *pki.clients.values()):
        _cert(pair.cert).verify_directly_issued_by(ca)


@pytest.mark.parametrize(
    "roles",
    [["server"], ["ca"], ["../etc"], ["Dpo"], ["dpo", "dpo"], ["a_b"], [""], "dpo"],
)
def test_bad_roles_are_refused(tmp_path: Path, roles: list[str]) -> None:
    with pytest.raises(InvalidInput) as err:
        generate_dev_pki(tmp_path / "pki", roles=roles)
    assert err.value.field == "roles"
    assert not (tmp_path / "pki").exists()


@pytest.mark.parametrize("names", [(), ("bad name",), ("-x",)])
def test_bad_server_names_are_refused(tmp_path: Path, names: tuple[str, ...]) -> None:
    with pytest.raises(InvalidInput) as err:
        generate_dev_pki(tmp_path, roles=["dpo"], server_names=names)
    assert err.value.field == "server_names"
