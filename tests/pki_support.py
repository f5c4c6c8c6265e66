"""Client certificates with chosen SANs, signed by a development CA (``vault.devcerts``): for
tests of how principals are read from certificates (several SANs, SAN types)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vault.devcerts import DevPki


def issue(pki: DevPki, sans: Sequence[x509.GeneralName]) -> tuple[bytes, bytes]:
    """A client certificate with exactly these SANs, signed by ``pki``'s CA: (cert PEM, key PEM).

    The profile of vault.devcerts' client certificates (client-auth, not a CA), so that only the
    SANs differ from a role's certificate; the subject is not the identity.
    """
    ca_cert = x509.load_pem_x509_certificate(pki.ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not-the-identity")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def spiffe(role: str, trust_domain: str = "cvault.dev") -> x509.UniformResourceIdentifier:
    """The URI SAN of a role's certificate, as vault.devcerts writes it."""
    return x509.UniformResourceIdentifier(f"spiffe://{trust_domain}/{role}")
