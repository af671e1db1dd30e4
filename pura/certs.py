"""A local certificate authority and mTLS certificates for A, B and each client role.

Why: every channel (client -> A, A -> B) is mutually authenticated TLS, and a caller's role is
taken from its certificate, never from request metadata (grpc's server_side_auth.md: the
AuthContext is the only reliable source of truth; threat T17). The role travels in a URI SAN
``urn:pura:role:<role>``; the principal (who, for budgets and the audit log) is the common name.

Keys are ECDSA P-256; certificates are short-lived (30 days by default) so a stolen client key
expires on its own. Private keys are written 0600 via :func:`pura.keys.write_secret_file`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pura.errors import ConfigError
from pura.keys import read_secret_file, write_public_file, write_secret_file

ROLE_URI_PREFIX = "urn:pura:role:"
CLIENT_ROLES = ("enroller", "identifier", "auditor", "admin")
#: Role of server A when it calls server B.
PEER_ROLE = "peer"
DEFAULT_VALIDITY = dt.timedelta(days=30)


@dataclass(frozen=True)
class CertPaths:
    """Where one certificate and its key live."""

    cert: Path
    key: Path

    def load(self) -> tuple[bytes, bytes]:
        """(certificate PEM, private key PEM); the key file must be private (0600)."""
        return self.cert.read_bytes(), read_secret_file(self.key)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Pura local CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _builder(
    subject: str, issuer: x509.Name, public: ec.EllipticCurvePublicKey, validity: dt.timedelta
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
    )


def make_ca(out: Path, *, validity: dt.timedelta = DEFAULT_VALIDITY) -> CertPaths:
    """Create ``ca.pem`` / ``ca.key`` in ``out``."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder("Pura local CA", _name("Pura local CA"), key.public_key(), validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    paths = CertPaths(out / "ca.pem", out / "ca.key")
    write_public_file(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
    write_secret_file(paths.key, _key_pem(key))
    return paths


def _load_ca(ca: CertPaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_pem, key_pem = ca.load()
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{ca.key} is not an EC private key")
    return x509.load_pem_x509_certificate(cert_pem), key


def issue(
    ca: CertPaths,
    out: Path,
    name: str,
    *,
    server_hosts: Iterable[str] = (),
    role: str | None = None,
    validity: dt.timedelta = DEFAULT_VALIDITY,
) -> CertPaths:
    """Issue ``<name>.pem`` / ``<name>.key`` signed by the CA.

    ``server_hosts`` (DNS names or IPs) make it a server certificate; ``role`` adds the role URI
    SAN and client-auth usage. A certificate may be both (server A is B's client).
    """
    ca_cert, ca_key = _load_ca(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in server_hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    usages = []
    if role is not None:
        sans.append(x509.UniformResourceIdentifier(ROLE_URI_PREFIX + role))
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if server_hosts:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if not usages:
        raise ConfigError("a certificate needs server hosts, a role, or both")
    cert = (
        _builder(name, ca_cert.subject, key.public_key(), validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = CertPaths(out / f"{name}.pem", out / f"{name}.key")
    write_public_file(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
    write_secret_file(paths.key, _key_pem(key))
    return paths


def role_of_certificate(pem: bytes) -> tuple[str, str | None]:
    """(common name, role or None) of a peer certificate presented over mTLS."""
    cert = x509.load_pem_x509_certificate(pem)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(cns[0].value) if cns else ""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return common_name, None
    roles = [
        uri[len(ROLE_URI_PREFIX):]
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(ROLE_URI_PREFIX)
    ]
    return common_name, roles[0] if len(roles) == 1 else None


def make_demo_pki(
    out: Path, *, hosts: Iterable[str] = ("localhost", "127.0.0.1")
) -> dict[str, CertPaths]:
    """CA + server A (also B's client, role peer) + server B + one client cert per role."""
    out.mkdir(parents=True, exist_ok=True)
    host_list = list(hosts)
    ca = make_ca(out)
    made = {"ca": ca}
    made["server-a"] = issue(ca, out, "server-a", server_hosts=host_list, role=PEER_ROLE)
    made["server-b"] = issue(ca, out, "server-b", server_hosts=host_list)
    for role in CLIENT_ROLES:
        made[role] = issue(ca, out, role, role=role)
    return made


__all__ = [
    "CLIENT_ROLES",
    "PEER_ROLE",
    "ROLE_URI_PREFIX",
    "CertPaths",
    "issue",
    "make_ca",
    "make_demo_pki",
    "role_of_certificate",
]
