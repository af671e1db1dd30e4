"""Deletion removes every copy: template rows, the head in its packed block, and the bytes in
the database file and its WAL; the receipt matches the audit log, whose chain stays verifiable
and detects tampering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pura.crypto.encoding import l2_normalize
from pura.gallery.packing import HeadBlock
from pura.keys import load_b_keys
from pura.service.chunks import unpack_blobs

from .conftest import Deployment


def _slot_values(dep: Deployment, data: bytes, slot: int) -> np.ndarray:
    """Decrypt one slot of every ciphertext of a stored block (test-only use of B's key)."""
    secret = load_b_keys(dep.keys / "b").ckks_secret
    meta, *cts = unpack_blobs(data, what="block")
    block = HeadBlock.from_record(meta, cts)
    column = np.array([secret.decrypt(secret.ciphertext_from_bytes(c))[slot]
                       for c in block.ciphertexts])
    return np.roll(column, slot)  # diagonal layout: row r holds coordinate (slot + r) mod m


def _file_bytes(data_dir: Path) -> bytes:
    wal = data_dir / "gallery.db-wal"
    return (data_dir / "gallery.db").read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def test_delete_leaves_no_copy(deployment: Deployment, tmp_path: Path) -> None:
    handle = deployment.start_a(tmp_path / "data")
    faces = deployment.faces
    try:
        port = handle.running.port
        with deployment.client("admin", port=port) as admin:
            admin.create_collection()
        with deployment.client("enroller", port=port) as enroller:
            parts = [enroller.encryptor().template(faces.gallery[i]) for i in range(3)]
            for i, p in enumerate(parts):
                enroller.enroll_encrypted(faces.gallery_labels[i], p)
        victim = faces.gallery_labels[1]
        store = handle.node.store
        [record] = store.templates_of_subject("lfw", victim)
        [kept] = store.templates_of_subject("lfw", faces.gallery_labels[0])
        m = handle.node.params.encoding.head_dim
        head = deployment.pca.apply(l2_normalize(faces.gallery[1]))[:m]
        before = _slot_values(deployment, store.blocks("lfw")[0].data, record.slot)
        assert np.max(np.abs(before - head)) < 1e-3  # the head really is in the block

        with deployment.client("admin", port=port) as admin:
            receipt = admin.delete(victim)
            audit_ok = admin.verify_audit_log()
        assert receipt.templates_removed == 1 and receipt.blocks_refreshed == 1
        assert audit_ok.intact and audit_ok.head_hash == receipt.audit_entry_hash

        assert store.templates_of_subject("lfw", victim) == []
        after = _slot_values(deployment, store.blocks("lfw")[0].data, record.slot)
        assert np.max(np.abs(after - head)) > 0.05  # a decoy replaced it
        raw = _file_bytes(tmp_path / "data")
        assert parts[1].paillier[-200:] not in raw  # uploaded ciphertext bytes gone
        assert record.paillier[-200:] not in raw  # the stored (admitted) form gone from db+WAL
        # The head (derived by B from the sealed upload) lived only in its row until placed and
        # then in the block, whose slot now holds a decoy (checked above).
        assert record.head is None
        assert kept.paillier[-200:] in raw  # (the scan does see stored templates)
        wal = tmp_path / "data" / "gallery.db-wal"
        assert not wal.exists() or wal.stat().st_size == 0
        assert store.integrity_check() == "ok"
    finally:
        handle.stop()


def test_audit_tampering_is_reported(deployment: Deployment, tmp_path: Path) -> None:
    handle = deployment.start_a(tmp_path / "data")
    try:
        port = handle.running.port
        with deployment.client("admin", port=port) as admin:
            admin.create_collection()
        with deployment.client("enroller", port=port) as enroller:
            enroller.enroll("someone", deployment.faces.gallery[0])
        path = tmp_path / "data" / "audit.jsonl"
        lines = path.read_text().splitlines()
        entry = json.loads(lines[0])
        entry["principal"] = "somebody-else"
        lines[0] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
        path.write_text("\n".join(lines) + "\n")
        with deployment.client("auditor", port=port) as auditor:
            result = auditor.verify_audit_log()
        assert not result.intact and result.first_bad_index == 0
        # entries name who did what to which subject, never biometric payloads
        assert all(len(ln) < 1000 for ln in lines)
    finally:
        handle.stop()
