"""kill -9 of server B in the middle of a bulk enrolment, with real processes (issue 11).

B now holds durable copies of every admitted template (the candidates it serves). Invariants:
nothing acknowledged is lost at A; once B is back (same data directory), A and B agree on the
gallery (B holds exactly one copy per template A stores, at its position) and identification
answers correctly.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from pura_client.client import PuraClient
from pura_client.datasets.embedded import EmbeddedIdentificationSet
from pura_client.encryptor import EncryptedParts, Encryptor

from pura.certs import make_demo_pki
from pura.crypto.encoding import load_shipped_pca
from pura.crypto.params import DLIB_FAST_PARAMETERS
from pura.demo import ServerProcess
from pura.errors import PeerUnavailableError, PuraError
from pura.gallery.copies import CopyStore
from pura.gallery.packing import HeadBlock
from pura.gallery.store import GalleryStore
from pura.keys import generate_key_set, load_public_keys
from pura.service.chunks import unpack_blobs

N = 18
KILL_AFTER = 6


def _start_b(root: Path, listen: str = "127.0.0.1:0") -> ServerProcess:
    return ServerProcess(["--role", "b", "--keys", str(root / "keys" / "b"),
                          "--tls", str(root / "tls"), "--data", str(root / "b-data"),
                          "--listen", listen], root / "b.port", root / "b.log")


def _client(root: Path, port: int, role: str) -> PuraClient:
    return PuraClient.connect(f"localhost:{port}", "crash", tls_dir=root / "tls",
                              cert_name=role, pca=load_shipped_pca(), timeout_s=120)


def _positions_at_a(root: Path) -> dict[tuple[int, int], str]:
    """(block, slot) → the tag B must hold there: the template id under the block's current
    layout epoch (issue 12's re-layout salts the tags B files copies under)."""
    store = GalleryStore(root / "data" / "gallery.db")
    try:
        blocks = {}
        for stored in store.blocks("crash"):
            meta, *cts = unpack_blobs(stored.data, what="stored block")
            blocks[stored.block_no] = HeadBlock.from_record(meta, cts)
        return {(r.block_no, r.slot): blocks[r.block_no].copy_tag(r.template_id)
                for r in store.all_templates("crash")}
    finally:
        store.close()


@pytest.mark.slow
def test_sigkill_of_b_during_bulk_enroll_then_a_and_b_agree(
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
    b = _start_b(tmp_path)
    b_port = b.port
    a = ServerProcess(
        ["--role", "a", "--keys", str(tmp_path / "keys" / "a"), "--tls", str(tmp_path / "tls"),
         "--data", str(tmp_path / "data"), "--peer", f"localhost:{b_port}",
         "--bulk-batch", "3", "--insecure-shared-host"],  # both servers on one host here
        tmp_path / "a.port", tmp_path / "a.log")
    try:
        with _client(tmp_path, a.port, "admin") as admin:
            admin.create_collection()
        acked: list[str] = []
        with _client(tmp_path, a.port, "enroller") as enroller, pytest.raises(PuraError):
            for status in enroller.bulk_enroll_encrypted(iter(items)):
                if status.code != "enrolled":  # B is gone: A refuses the items it cannot admit
                    raise PuraError(f"{status.request_id}: {status.code}")
                acked.append(status.request_id)
                if len(acked) == KILL_AFTER:
                    os.kill(b.proc.pid, signal.SIGKILL)
        b.proc.wait(10)
        b.stop()
        assert len(acked) >= KILL_AFTER

        b = _start_b(tmp_path, f"127.0.0.1:{b_port}")  # same port, same data directory
        # A answers UNAVAILABLE until its channel to B has reconnected: retry, as a client does.
        deadline = time.monotonic() + 120
        while True:
            try:
                with _client(tmp_path, a.port, "enroller") as enroller:
                    statuses = list(enroller.bulk_enroll_encrypted(iter(items)))
                break
            except PeerUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
        codes = {s.request_id: s.code for s in statuses}
        assert all(codes[r] == "already-enrolled" for r in acked)  # nothing acked is lost
        assert all(c in ("enrolled", "already-enrolled") for c in codes.values())
        with _client(tmp_path, a.port, "identifier") as ident:  # syncs copies that lagged
            for i in (0, KILL_AFTER + 1, N - 1):
                assert ident.identify(faces.gallery[i]).subject == faces.gallery_labels[i]
        at_a = _positions_at_a(tmp_path)
        assert len(at_a) == N
        copies = CopyStore(tmp_path / "b-data" / "copies.db")
        namespaces = {ns for (ns,) in copies._db.execute("SELECT DISTINCT namespace FROM copies")}
        assert len(namespaces) == 1
        held = copies.copies(namespaces.pop())
        assert {p: c.tag for p, c in held.items()} == at_a  # A and B agree on the gallery
        copies.close()
    finally:
        a.stop()
        b.stop()
