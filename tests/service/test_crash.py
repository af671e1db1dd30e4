"""kill -9 of server A in the middle of a bulk enrolment, with real processes.

Invariants (issue 4, threat T24): no acknowledged template is lost, no half-written template
exists, ``PRAGMA integrity_check`` is ok, and after a restart the gallery is consistent (pending
heads written into their blocks, identification answers correctly, resent items are recognised
as already enrolled).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from pura_client.client import PuraClient, RpcError
from pura_client.datasets.embedded import EmbeddedIdentificationSet
from pura_client.encryptor import EncryptedParts, Encryptor

from pura.certs import make_demo_pki
from pura.crypto.encoding import load_shipped_pca
from pura.crypto.params import DLIB_FAST_PARAMETERS
from pura.demo import ServerProcess
from pura.gallery.store import GalleryStore
from pura.keys import generate_key_set, load_public_keys
from pura.protocols.messages import AdmittedTemplate

N = 24
KILL_AFTER = 7


def _start_a(root: Path, b_port: int) -> ServerProcess:
    return ServerProcess(
        ["--role", "a", "--keys", str(root / "keys" / "a"), "--tls", str(root / "tls"),
         "--insecure-shared-host",
         "--data", str(root / "data"), "--peer", f"localhost:{b_port}", "--bulk-batch", "3"],
        root / "a.port", root / "a.log",
    )


def _client(root: Path, port: int, role: str) -> PuraClient:
    return PuraClient.connect(f"localhost:{port}", "crash", tls_dir=root / "tls",
                              cert_name=role, pca=load_shipped_pca(), timeout_s=120)


@pytest.mark.slow
def test_sigkill_during_bulk_enroll_loses_nothing_acknowledged(
    tmp_path: Path, lfw_identification_set: EmbeddedIdentificationSet
) -> None:
    faces = lfw_identification_set
    make_demo_pki(tmp_path / "tls")
    generate_key_set(tmp_path / "keys", DLIB_FAST_PARAMETERS)
    enc = Encryptor(load_public_keys(tmp_path / "keys" / "public"), load_shipped_pca())
    items: list[tuple[str, EncryptedParts, str]] = [
        (faces.gallery_labels[i], enc.template(faces.gallery[i]), f"req-{i:03d}")
        for i in range(N)
    ]
    b = ServerProcess(["--role", "b", "--keys", str(tmp_path / "keys" / "b"),
                       "--tls", str(tmp_path / "tls")], tmp_path / "b.port", tmp_path / "b.log")
    a = _start_a(tmp_path, b.port)
    try:
        with _client(tmp_path, a.port, "admin") as admin:
            admin.create_collection()
        acked: list[str] = []
        with _client(tmp_path, a.port, "enroller") as enroller, pytest.raises(RpcError):
            for status in enroller.bulk_enroll_encrypted(iter(items)):
                assert status.code == "enrolled"
                acked.append(status.request_id)
                if len(acked) == KILL_AFTER:
                    os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(10)
        a.stop()
        assert len(acked) == KILL_AFTER

        store = GalleryStore(tmp_path / "data" / "gallery.db")
        assert store.integrity_check() == "ok"
        stored = store.request_ids("crash")
        assert set(acked) <= stored  # nothing acknowledged is lost
        key = enc.keys.paillier
        for record in store._records("collection=?", ("crash",)):  # nothing half-written
            AdmittedTemplate.from_bytes(key, record.paillier)
            if record.head is not None:
                enc.keys.ckks.ciphertext_from_bytes(record.head)
        store.close()

        a = _start_a(tmp_path, b.port)  # recovery refreshes the pending blocks
        with _client(tmp_path, a.port, "enroller") as enroller:
            statuses = list(enroller.bulk_enroll_encrypted(iter(items)))
        codes = {s.request_id: s.code for s in statuses}
        assert all(codes[r] == "already-enrolled" for r in stored)
        assert all(codes[r] == "enrolled" for _, _, r in items if r not in stored)
        with _client(tmp_path, a.port, "admin") as admin:
            stats = admin.stats()
            assert (stats.templates, stats.pending_templates) == (N, 0)
        with _client(tmp_path, a.port, "identifier") as ident:
            assert ident.identify(faces.gallery[2]).subject == faces.gallery_labels[2]
    finally:
        a.stop()
        b.stop()
