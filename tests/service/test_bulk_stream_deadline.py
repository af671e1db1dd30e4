"""A bulk enrolment has no fixed total deadline: it runs while it makes progress and fails
only after ``idle_timeout_s`` without any (issue 14: the first ``pura demo`` on a loaded 2-core
machine died of DEADLINE_EXCEEDED at a fixed 300 s). Real servers, real mTLS, real LFW faces.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from pura_client.client import PuraClient, RpcError
from pura_client.encryptor import EncryptedParts

from pura.keys import load_public_keys

from .conftest import Deployment


def _client(dep: Deployment, role: str, *, timeout_s: float, idle_s: float) -> PuraClient:
    return PuraClient.connect(dep.address, "idle", tls_dir=dep.tls, cert_name=role, pca=dep.pca,
                              timeout_s=timeout_s, idle_timeout_s=idle_s,
                              trusted_keys=load_public_keys(dep.keys / "public"))


@pytest.fixture(scope="module")
def idle_collection(deployment: Deployment) -> str:
    with deployment.client("admin", "idle") as admin:
        admin.create_collection()
    return "idle"


def _slow(items: list[tuple[str, EncryptedParts, str]], pause_s: float
          ) -> Iterator[tuple[str, EncryptedParts, str]]:
    for item in items:
        time.sleep(pause_s)
        yield item


def test_stream_longer_than_the_call_timeout_completes(
    deployment: Deployment, idle_collection: str
) -> None:
    faces = deployment.faces
    with _client(deployment, "enroller", timeout_s=2.0, idle_s=30.0) as enroller:
        enc = enroller.encryptor()
        items = [(f"slow-{i}", enc.template(faces.gallery[20 + i]), uuid.uuid4().hex)
                 for i in range(3)]
        t0 = time.monotonic()
        statuses = list(enroller.bulk_enroll_encrypted(_slow(items, 1.2)))
        elapsed = time.monotonic() - t0
    assert elapsed > 2.0  # longer than the unary timeout: a total deadline would have failed it
    assert [s.code for s in statuses] == ["enrolled"] * 3


def test_a_silent_stream_fails_after_the_idle_timeout(
    deployment: Deployment, idle_collection: str
) -> None:
    faces = deployment.faces
    with _client(deployment, "enroller", timeout_s=30.0, idle_s=1.0) as enroller:
        enc = enroller.encryptor()
        items = [("stuck", enc.template(faces.gallery[30]), uuid.uuid4().hex)]
        t0 = time.monotonic()
        with pytest.raises(RpcError) as info:
            list(enroller.bulk_enroll_encrypted(_slow(items, 6.0)))
        elapsed = time.monotonic() - t0
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "idle timeout" in str(info.value)
    assert elapsed < 5.0  # cancelled at ~1 s, not when the item finally came
