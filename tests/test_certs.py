"""Local CA: role SANs, key permissions."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509

from pura.certs import CLIENT_ROLES, make_demo_pki, role_of_certificate


def test_demo_pki_roles_and_permissions(tmp_path: Path) -> None:
    made = make_demo_pki(tmp_path)
    for role in CLIENT_ROLES:
        cn, got = role_of_certificate(made[role].cert.read_bytes())
        assert (cn, got) == (role, role)
        assert os.stat(made[role].key).st_mode & 0o077 == 0
    assert role_of_certificate(made["server-a"].cert.read_bytes()) == ("server-a", "peer")
    assert role_of_certificate(made["server-b"].cert.read_bytes()) == ("server-b", None)
    ca = x509.load_pem_x509_certificate(made["ca"].cert.read_bytes())
    leaf = x509.load_pem_x509_certificate(made["identifier"].cert.read_bytes())
    leaf.verify_directly_issued_by(ca)
