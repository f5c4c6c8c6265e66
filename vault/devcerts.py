"""A throwaway development PKI for ``make dev`` and tests: a CA, a server cert, one cert per role.

DEVELOPMENT ONLY. Private keys (the CA's included) are written unencrypted (PKCS#8 PEM, mode
0600) so the dev server and the CLI can read them without a passphrase. Never point a production
deployment at these files: anyone who can read ``ca-key.pem`` can mint any principal.

Layout of ``out_dir``::

    ca.pem, ca-key.pem                 the dev CA (EC P-256, one year, CA:TRUE pathlen 0)
    server.pem, server-key.pem         TLS server cert (SANs: ``server_names``, DNS or IP)
    <role>.pem, <role>-key.pem         client cert per role, URI SAN spiffe://<domain>/<role>

The CA key is kept (0600) so that adding a role later does not replace the CA that other tools
already trust.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vault.errors import InvalidInput

#: Certificates expiring sooner than this are replaced instead of reused.
RENEW_BEFORE = dt.timedelta(days=7)
#: Validity of a fresh CA; leaf certificates end when their CA does.
CA_VALIDITY = dt.timedelta(days=365)
#: Start validity a little in the past so a peer whose clock lags slightly still accepts it.
_BACKDATE = dt.timedelta(minutes=5)

# Roles become file names and URI path segments: keep them to a safe alphabet, and keep them
# from colliding with the CA's and the server's files.
_ROLE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_RESERVED_ROLES = frozenset({"ca", "server"})
_TRUST_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")

_KeyType = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class CertKeyPair:
    """Paths of one PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class DevPki:
    """Where :func:`generate_dev_pki` put everything."""

    directory: Path
    trust_domain: str
    ca: CertKeyPair
    server: CertKeyPair
    clients: Mapping[str, CertKeyPair]

    def principal(self, role: str) -> str:
        """The principal name a client presenting ``role``'s certificate authenticates as."""
        return _spiffe_id(self.trust_domain, role)


def generate_dev_pki(
    out_dir: Path,
    *,
    roles: Sequence[str],
    server_names: Sequence[str] = ("localhost", "127.0.0.1"),
    trust_domain: str = "cvault.dev",
) -> DevPki:
    """Create (or reuse) a development CA, a server certificate and one client cert per role.

    Idempotent: an existing file set is reused when it parses, was issued by the current CA,
    has the expected SANs, matches its key and does not expire within :data:`RENEW_BEFORE`;
    anything else is replaced. A replaced CA replaces every certificate. Files are written
    atomically (temporary file, then rename); key files get mode 0600.

    DEVELOPMENT ONLY: private keys are stored unencrypted.

    Args:
        out_dir: directory to write to (created with mode 0700 if missing).
        roles: one client certificate per role; ``[a-z0-9][a-z0-9-]{0,62}``, not ``ca``/``server``.
        server_names: SANs of the server certificate; IP literals become IP SANs.
        trust_domain: the host part of the clients' ``spiffe://`` URI SANs.

    Returns:
        The paths written or reused.

    Raises:
        InvalidInput: a role, server name or trust domain is not acceptable.
    """
    _check_inputs(roles, server_names, trust_domain)
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    ca_pair = CertKeyPair(out_dir / "ca.pem", out_dir / "ca-key.pem")
    ca = _load_ca(ca_pair, now)
    if ca is None:
        ca = _new_ca(now, trust_domain)
        _write_pair(ca_pair, *ca)
        reuse_leaves = False
    else:
        reuse_leaves = True
    ca_cert, ca_key = ca

    server_pair = CertKeyPair(out_dir / "server.pem", out_dir / "server-key.pem")
    server_sans = [_server_san(n) for n in server_names]
    _ensure_leaf(
        server_pair,
        reuse_leaves,
        ca_cert,
        ca_key,
        now,
        common_name=server_names[0],
        sans=server_sans,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    clients: dict[str, CertKeyPair] = {}
    for role in roles:
        pair = CertKeyPair(out_dir / f"{role}.pem", out_dir / f"{role}-key.pem")
        _ensure_leaf(
            pair,
            reuse_leaves,
            ca_cert,
            ca_key,
            now,
            common_name=role,
            sans=[x509.UniformResourceIdentifier(_spiffe_id(trust_domain, role))],
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        clients[role] = pair
    return DevPki(out_dir, trust_domain, ca_pair, server_pair, clients)


def _spiffe_id(trust_domain: str, role: str) -> str:
    return f"spiffe://{trust_domain}/{role}"


def _check_inputs(roles: Sequence[str], server_names: Sequence[str], trust_domain: str) -> None:
    if isinstance(roles, str):
        raise InvalidInput("roles", "must be a sequence of role names, not one string")
    seen: set[str] = set()
    for role in roles:
        if not _ROLE.fullmatch(role) or role in _RESERVED_ROLES:
            raise InvalidInput("roles", f"{role!r} must match [a-z0-9][a-z0-9-]{{0,62}}")
        if role in seen:
            raise InvalidInput("roles", f"{role!r} is listed twice")
        seen.add(role)
    if not server_names:
        raise InvalidInput("server_names", "at least one name is needed")
    for name in server_names:
        _server_san(name)
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise InvalidInput("trust_domain", "must be a lower-case DNS-style name")


def _server_san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", name):
        raise InvalidInput("server_names", f"{name!r} is neither an IP address nor a DNS name")
    return x509.DNSName(name)


# --- building ---------------------------------------------------------------------------------


def _new_key() -> _KeyType:
    return ec.generate_private_key(ec.SECP256R1())


def _new_ca(now: dt.datetime, trust_domain: str) -> tuple[x509.Certificate, _KeyType]:
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "customer-vault development"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"cvault dev CA ({trust_domain})"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_leaf(
    ca_cert: x509.Certificate,
    ca_key: _KeyType,
    now: dt.datetime,
    *,
    common_name: str,
    sans: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
) -> tuple[x509.Certificate, _KeyType]:
    key = _new_key()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        # A leaf never outlives its CA.
        .not_valid_after(ca_cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        # The SAN carries the identity; the subject is only a label, so the SAN is not critical.
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _ensure_leaf(
    pair: CertKeyPair,
    reuse: bool,
    ca_cert: x509.Certificate,
    ca_key: _KeyType,
    now: dt.datetime,
    *,
    common_name: str,
    sans: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
) -> None:
    if reuse and _leaf_reusable(pair, ca_cert, now, sans):
        return
    cert, key = _new_leaf(ca_cert, ca_key, now, common_name=common_name, sans=sans, usage=usage)
    _write_pair(pair, cert, key)


# --- reuse checks -----------------------------------------------------------------------------


def _load_pair(pair: CertKeyPair) -> tuple[x509.Certificate, _KeyType] | None:
    """The certificate and key, or None if either is missing, unreadable or they do not match."""
    try:
        cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
        key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if key.public_key() != cert.public_key():
        return None
    return cert, key


def _fresh(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - RENEW_BEFORE > now


def _load_ca(pair: CertKeyPair, now: dt.datetime) -> tuple[x509.Certificate, _KeyType] | None:
    loaded = _load_pair(pair)
    if loaded is None or not _fresh(loaded[0], now):
        return None
    try:
        bc = loaded[0].extensions.get_extension_for_class(x509.BasicConstraints).value
        loaded[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    return loaded if bc.ca else None


def _leaf_reusable(
    pair: CertKeyPair,
    ca_cert: x509.Certificate,
    now: dt.datetime,
    sans: Sequence[x509.GeneralName],
) -> bool:
    loaded = _load_pair(pair)
    if loaded is None:
        return False
    cert = loaded[0]
    if not _fresh(cert, now) or cert.issuer != ca_cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (InvalidSignature, ValueError, TypeError, x509.ExtensionNotFound):
        return False
    return list(have) == list(sans)


# --- files ------------------------------------------------------------------------------------


def _write_pair(pair: CertKeyPair, cert: x509.Certificate, key: _KeyType) -> None:
    # Key first: a crash in between leaves a key without its cert, which fails the reuse check
    # (key/cert mismatch) and is regenerated, rather than a cert whose key is lost.
    _write_atomic(
        pair.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        mode=0o600,
    )
    _write_atomic(pair.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    # mkstemp creates the file 0600 from the start, so a key is never readable by others, even
    # for a moment; the final mode is set before the rename makes the file visible.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
