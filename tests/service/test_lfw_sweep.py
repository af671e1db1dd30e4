"""The LFW equality sweep through the server's own pipeline (NodeA + NodeB in one process), per
face model.

Every answer of the product path — CKKS preselection at A, B serving re-randomised candidate
copies, the exact stage on them, the winner's label opened — must equal plaintext 1:N over the
whole gallery (integer squared distances of the quantised, PCA-rotated unit vectors, the
collection's threshold: the model's default, ``SearchConfig.for_model``). 500 enrolled LFW
identities (seed-0 split), each model's own descriptors (client torch pipeline, cached) and
shipped PCA rotation, the fast profile of that model's preset:

* ``dlib``: dlib's ResNet, 128-d (the former default);
* ``sface``: SFace, 128-d, the product default;
* ``edgeface_xs``: EdgeFace XS, **512-d** (Paillier packs 4× the coordinates; the CKKS head is the
  first 64 of its own 512-d PCA rotation). Non-commercial weights: evaluation only.

CI (``make test-ci-slow``) runs a seeded 50 mated + 50 non-enrolled probes for dlib and SFace and,
to keep CI short, 25 + 25 over the first 100 enrolled identities for the 512-d EdgeFace (its
enrolment packs 4× the coordinates); ``PURA_FULL_LFW=1`` runs all 500 identities and every probe
for every model. Each run prints its figure and the median exact-stage
time (admission of the query, then the secure distances/argmin/threshold on the candidates).
"""

from __future__ import annotations

import os
import random
import statistics
from pathlib import Path

import numpy as np
import pytest
from pura_client.datasets.embedded import EmbeddedIdentificationSet, embedded_identification_set
from pura_client.datasets.lfw import LFWDataset
from pura_client.encryptor import Encryptor

from pura.audit_log import AuditLog
from pura.crypto.encoding import l2_normalize, load_shipped_pca, quantize
from pura.crypto.params import (
    DLIB_FAST_PARAMETERS,
    EDGEFACE_XS_FAST_PARAMETERS,
    FAST_PARAMETERS,
    ParameterSet,
)
from pura.gallery.copies import CopyStore
from pura.gallery.store import GalleryStore
from pura.keys import generate_key_set, load_a_keys, load_b_keys, load_public_keys
from pura.pipeline.config import SearchConfig
from pura.service.nodes import NodeA, NodeB, QueryUpload, TemplateUpload, loopback

MODELS: dict[str, ParameterSet] = {
    "dlib": DLIB_FAST_PARAMETERS,
    "sface": FAST_PARAMETERS,
    "edgeface_xs": EDGEFACE_XS_FAST_PARAMETERS,
}
#: CI sizes (without PURA_FULL_LFW): enrolled identities, mated and non-enrolled probes.
CI_SIZES: dict[str, tuple[int, int, int]] = {
    "dlib": (500, 50, 50), "sface": (500, 50, 50), "edgeface_xs": (100, 25, 25),
}


def _faces(
    name: str, params: ParameterSet, dlib_set: EmbeddedIdentificationSet, ds: LFWDataset
) -> EmbeddedIdentificationSet:
    """The seed-0 identification split embedded with the model's client pipeline (cached)."""
    if name == "dlib":
        return dlib_set
    from pura_client.embedding.aligned import pipeline_for

    return embedded_identification_set(
        n_identities=500, seed=0, n_non_enrolled=200, dataset=ds,
        pipeline=pipeline_for(params.encoding.model_id, device="cpu"),
    )


@pytest.mark.slow
@pytest.mark.lfw
@pytest.mark.timeout(7200)
@pytest.mark.parametrize("model", list(MODELS))
def test_product_pipeline_equals_plaintext_on_lfw(
    model: str, tmp_path: Path, lfw_identification_set: EmbeddedIdentificationSet,
    lfw_dataset: LFWDataset,
) -> None:
    params = MODELS[model]
    enc = params.encoding
    s = _faces(model, params, lfw_identification_set, lfw_dataset)
    assert s.gallery.shape[1] == enc.dim and s.dropped == 0, s
    full = bool(os.environ.get("PURA_FULL_LFW"))
    n_enrolled, ci_mated, ci_strangers = (len(s.gallery), 0, 0) if full else CI_SIZES[model]
    generate_key_set(tmp_path / "k", params)
    pca = load_shipped_pca(enc.model_id)
    node_b = NodeB(load_b_keys(tmp_path / "k" / "b"), CopyStore(tmp_path / "b" / "copies.db"))
    node_a = NodeA(load_a_keys(tmp_path / "k" / "a"), GalleryStore(tmp_path / "a.db"),
                   AuditLog(tmp_path / "audit.jsonl"), loopback(node_b), pca)
    try:
        coll = node_a.create_collection("lfw")
        assert coll.model_id == enc.model_id
        assert coll.threshold == SearchConfig.for_model(enc.model_id).tau_units(enc.scale_bits)
        keys = load_public_keys(tmp_path / "k" / "public")
        encryptor = Encryptor(keys, pca)
        labels = list(s.gallery_labels[:n_enrolled])
        items = [TemplateUpload(labels[i], f"r{i}", enc.model_id, enc.dim, p.paillier,
                                p.ckks_head)
                 for i, p in enumerate(encryptor.template(v) for v in s.gallery[:n_enrolled])]
        for start in range(0, len(items), 64):
            assert all(o.error is None for o in node_a.enroll("lfw", items[start:start + 64],
                                                               "sweep"))
        q_gallery = quantize(pca.apply(l2_normalize(s.gallery[:n_enrolled], dim=enc.dim)),
                             enc.scale_bits)
        n_mated = len(s.probe_labels)
        probes = np.vstack([s.probes, s.non_enrolled])
        enrolled = set(labels)
        mated = [j for j in range(n_mated) if s.probe_labels[j] in enrolled]
        strangers = list(range(n_mated, len(probes)))
        if not full:
            mated = sorted(random.Random(0).sample(mated, ci_mated))
            strangers = sorted(random.Random(1).sample(strangers, ci_strangers))
        indices = [*mated, *strangers]
        disagree, matched_non, mated_right = [], 0, 0
        exact, admit = [], []
        for i in indices:
            q = quantize(pca.apply(l2_normalize(probes[i], dim=enc.dim)), enc.scale_bits)
            d = ((q_gallery.astype(np.int64) - q.astype(np.int64)) ** 2).sum(axis=1)
            best = int(d.argmin())
            want = labels[best] if int(d[best]) <= coll.threshold else None
            upload = encryptor.query(probes[i])
            got = node_a.identify("lfw", QueryUpload(enc.model_id, enc.dim, upload.paillier,
                                                     upload.ckks_head), "sweep")
            stages = node_a.identifier.last_stages
            exact.append(stages["exact"] + stages.get("open", 0.0))
            admit.append(stages["admit_query"])
            if got != want:
                disagree.append((i, got, want))
            matched_non += i >= n_mated and got is not None
            mated_right += i < n_mated and got == s.probe_labels[i]
        print(f"\nLFW sweep through the product pipeline, {enc.model_id} ({enc.dim}-d, head "
              f"{enc.head_dim}, {params.paillier.name}): {len(indices)} probes, "
              f"{len(disagree)} disagreements with plaintext 1:N; {mated_right}/{len(mated)} "
              f"mated probes answered with their own subject, {matched_non}/{len(strangers)} "
              f"non-enrolled matched; median exact stage {statistics.median(exact):.3f} s, "
              f"query admission {statistics.median(admit):.3f} s")
        assert not disagree, disagree[:5]
    finally:
        node_a.offline.stop()
        node_b.offline.stop()
        node_a.store.close()
