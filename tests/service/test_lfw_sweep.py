"""The LFW equality sweep through the server's own pipeline (NodeA + NodeB in one process).

Every answer of the product path — CKKS preselection at A, B serving re-randomised candidate
copies, the exact stage on them, the winner's label opened — must equal plaintext 1:N over the
whole gallery (integer squared distances of the quantised, PCA-rotated unit vectors, the
collection's threshold). 500 enrolled LFW identities; a seeded 50 non-enrolled and 50 mated
probes (every one of the 975 probes with ``PURA_FULL_LFW=1``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from pura_client.datasets.embedded import EmbeddedIdentificationSet
from pura_client.encryptor import Encryptor

from pura.audit_log import AuditLog
from pura.crypto.encoding import l2_normalize, load_shipped_pca, quantize
from pura.crypto.params import FAST_PARAMETERS
from pura.gallery.copies import CopyStore
from pura.gallery.store import GalleryStore
from pura.keys import generate_key_set, load_a_keys, load_b_keys, load_public_keys
from pura.service.nodes import NodeA, NodeB, QueryUpload, TemplateUpload, loopback

ENC = FAST_PARAMETERS.encoding


@pytest.mark.slow
@pytest.mark.lfw
@pytest.mark.timeout(7200)
def test_product_pipeline_equals_plaintext_on_lfw(
    tmp_path: Path, lfw_identification_set: EmbeddedIdentificationSet
) -> None:
    s = lfw_identification_set
    generate_key_set(tmp_path / "k", FAST_PARAMETERS)
    pca = load_shipped_pca()
    node_b = NodeB(load_b_keys(tmp_path / "k" / "b"), CopyStore(tmp_path / "b" / "copies.db"))
    node_a = NodeA(load_a_keys(tmp_path / "k" / "a"), GalleryStore(tmp_path / "a.db"),
                   AuditLog(tmp_path / "audit.jsonl"), loopback(node_b), pca)
    try:
        coll = node_a.create_collection("lfw")
        enc = Encryptor(load_public_keys(tmp_path / "k" / "public"), pca)
        labels = list(s.gallery_labels)
        items = [TemplateUpload(labels[i], f"r{i}", ENC.model_id, ENC.dim, p.paillier,
                                p.ckks_head)
                 for i, p in enumerate(enc.template(v) for v in s.gallery)]
        for start in range(0, len(items), 64):
            assert all(o.error is None for o in node_a.enroll("lfw", items[start:start + 64],
                                                               "sweep"))
        q_gallery = quantize(pca.apply(l2_normalize(s.gallery, dim=ENC.dim)), ENC.scale_bits)
        n_mated = len(s.probe_labels)
        probes = np.vstack([s.probes, s.non_enrolled])
        mated, strangers = list(range(n_mated)), list(range(n_mated, len(probes)))
        if not os.environ.get("PURA_FULL_LFW"):
            mated = sorted(random.Random(0).sample(mated, 50))
            strangers = sorted(random.Random(1).sample(strangers, 50))
        indices = [*mated, *strangers]
        disagree, matched_non = [], 0
        for i in indices:
            q = quantize(pca.apply(l2_normalize(probes[i], dim=ENC.dim)), ENC.scale_bits)
            d = ((q_gallery.astype(np.int64) - q.astype(np.int64)) ** 2).sum(axis=1)
            best = int(d.argmin())
            want = labels[best] if int(d[best]) <= coll.threshold else None
            upload = enc.query(probes[i])
            got = node_a.identify("lfw", QueryUpload(ENC.model_id, ENC.dim, upload.paillier,
                                                     upload.ckks_head), "sweep")
            if got != want:
                disagree.append((i, got, want))
            matched_non += i >= n_mated and got is not None
        print(f"\nLFW sweep through the product pipeline: {len(indices)} probes, "
              f"{len(disagree)} disagreements, {matched_non} non-enrolled matched")
        assert not disagree, disagree[:5]
    finally:
        node_a.offline.stop()
        node_b.offline.stop()
        node_a.store.close()
