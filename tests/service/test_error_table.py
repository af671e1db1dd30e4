"""The shared error table over RPC against the real servers: the SDK raises the server's class.

Unit round trip of every class: tests/test_rpc_errors.py. Here the errors come from the real
A and B of ``conftest.deployment`` (mTLS, real protocols) through ``PuraClient``.
"""

from __future__ import annotations

import pytest
from pura_client.encryptor import EncryptedParts

from pura.errors import (
    EmbeddingRangeError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from pura.protocols.enroll import encrypt_query

from .conftest import Deployment


def test_forged_query_arrives_as_embedding_range_error(deployment: Deployment) -> None:
    """Before the shared table this was a ProtocolError (INVALID_ARGUMENT read by code alone)."""
    with deployment.client("identifier") as client:
        enc = client.encryptor()
        probe = deployment.faces.probes[0]
        short = encrypt_query([v // 2 for v in enc._fixed(enc._rotate(probe))],
                              enc.layout, enc.keys.paillier, enc.pool)
        with pytest.raises(EmbeddingRangeError, match="unit"):
            client.identify_encrypted(EncryptedParts(short.to_bytes(), enc.query(probe).ckks_head))


def test_request_and_role_errors_keep_their_class(deployment: Deployment) -> None:
    face = deployment.faces.gallery[0]
    with deployment.client("enroller") as client, pytest.raises(InvalidArgumentError,
                                                                 match="subject id"):
        client.enroll("no/slashes", face)
    with deployment.client("identifier") as client, pytest.raises(PermissionDeniedError):
        client.enroll("mallory", face)  # refused by the auth interceptor (no class named)
    with deployment.client("identifier", collection="nope") as client, \
            pytest.raises(NotFoundError, match="unknown collection"):
        client.identify(face)
