"""The new face models through the product's exact encrypted stage (pura.protocols objects).

* SFace (128-d, the default candidate): on the issue-15 LFW 1:N split (1,000 enrolled, seed 0),
  with the PCA fitted on DevTrain people only, a seeded sample of mated and non-mated probes gets
  the same answer encrypted (k = 6 candidates by the 64-d head, as the product) as plaintext
  search over the *whole* gallery at the FPIR-1 % threshold.
* d = 512 (EdgeFace's width): the exact stage gives the plaintext answer unchanged and its CPU
  cost is measured against d = 128 (printed; speed is not asserted; 2048-bit fast keys so the
  test stays affordable — the ratio, not the absolute time, is the point).

Embeddings come through the on-disk cache that ``pura-eval compare`` fills.
"""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from pura_client.audit.metrics import fnir_at_fpir
from pura_client.datasets.lfw import LFWDataset
from pura_client.embedding.aligned import AlignedEmbedder
from pura_client.embedding.batch import embed_files
from pura_client.embedding.cache import EmbeddingCache
from pura_client.embedding.registry import SFACE_MODEL_ID
from pura_client.embedding.types import FaceResult, MultiFacePolicy
from pura_client.evaluate import compare_data, search_outcomes

from pura.crypto.encoding import PCARotation, l2_normalize, quantize
from pura.crypto.paillier import KeyShare, PublicKey, RandomnessPool
from pura.engine.local import SERIAL
from pura.protocols.enroll import encrypt_query, encrypt_template
from pura.protocols.identify import (
    BytesChannel,
    ExactConfig,
    MatchResult,
    ServerA,
    ServerB,
    threshold_units,
)

Keys = tuple[PublicKey, KeyShare, KeyShare]
S = 11
HEAD, TOP_K = 64, 6
pytestmark = [pytest.mark.slow, pytest.mark.lfw, pytest.mark.timeout(3600)]


def _servers(keys: Keys, dim: int, seed: int) -> ServerA:
    pk, s1, s2 = keys
    config = ExactConfig.for_key(pk, dim, S)
    b = ServerB(s2, config, RandomnessPool(pk, rng=random.Random(seed + 1)), SERIAL)
    return ServerA(s1, config, BytesChannel.loopback(b), engine=SERIAL, rng=random.Random(seed))


def _rows(results: list[FaceResult]) -> np.ndarray:
    return np.stack([r.descriptor if r.descriptor is not None else np.full(128, np.nan)
                     for r in results])


def _equal_answers(keys: Keys, gallery: np.ndarray, labels: list[str], probes: np.ndarray,
                   tau: float, seed: int) -> tuple[int, int]:
    """Encrypted (top-k by head) vs plaintext (whole gallery); returns (matches, probes)."""
    pk = keys[0]
    qg = quantize(gallery, S).astype(np.int64)
    qp = quantize(probes, S).astype(np.int64)
    tau_units = threshold_units(tau, S)
    a = _servers(keys, gallery.shape[1], seed)
    client = RandomnessPool(pk, rng=random.Random(seed + 7), window=6)
    stored = {}
    matches = 0
    for i in range(len(qp)):
        dist = ((qg - qp[i]) ** 2).sum(axis=1)
        best = int(dist.argmin())
        want = MatchResult(True, labels[best]) if dist[best] <= tau_units else MatchResult(False)
        heads = ((probes[i, :HEAD] - gallery[:, :HEAD]) ** 2).sum(1)
        cands = [int(j) for j in np.argsort(heads)[:TOP_K]]
        for j in cands:
            if j not in stored:
                stored[j] = a.prepare([encrypt_template(qg[j].tolist(), a.config.template, pk,
                                                        client)])[0]
        query = encrypt_query(qp[i].tolist(), a.config.template, pk, client)
        got = a.match(query, [(labels[j], stored[j]) for j in cands], tau_units)
        assert got == want, f"probe {i}: encrypted {got} != plaintext {want}"
        matches += got.matched
    return matches, len(qp)


def test_sface_encrypted_equals_plaintext_on_lfw(
    lfw_dataset: LFWDataset, paillier_fast_keys: Keys
) -> None:
    data = compare_data(lfw_dataset, 0, view2=False)
    engine = AlignedEmbedder(SFACE_MODEL_ID, device="cpu", policy=MultiFacePolicy.CENTER)
    split = data.split
    items = [*split.gallery, *split.probes, *split.non_enrolled]
    dev = sorted({p.first.path for p in data.dev_pairs} | {p.second.path for p in data.dev_pairs})
    cache = EmbeddingCache()
    vec = l2_normalize(_rows(embed_files(engine, [i.path for i in items], cache=cache)), dim=128)
    dev_vec = _rows(embed_files(engine, dev, cache=cache))
    pca = PCARotation.fit(dev_vec[~np.isnan(dev_vec[:, 0])], model_id=SFACE_MODEL_ID)
    n_g, n_p = len(split.gallery), len(split.probes)
    gallery, mated, strangers = vec[:n_g], vec[n_g : n_g + n_p], vec[n_g + n_p :]
    labels = [g.label for g in split.gallery]
    outcomes = search_outcomes(mated, [p.label for p in split.probes], gallery, labels, strangers)
    fnir, neg_dist = fnir_at_fpir(outcomes, 0.01)
    tau = float(neg_dist) ** 2  # squared-distance threshold at FPIR 1 % (plaintext)
    rng = random.Random(15)
    chosen = np.vstack([mated[rng.sample(range(n_p), 60)], strangers[rng.sample(range(1000), 40)]])
    matches, total = _equal_answers(paillier_fast_keys, pca.apply(gallery), labels,
                                    pca.apply(chosen), tau, seed=40)
    print(f"SFace encrypted == plaintext on {total} LFW probes (FNIR@FPIR1% {fnir:.4f}, "
          f"{matches} matched)")
    assert matches > 40


def test_exact_stage_at_512_dimensions(paillier_fast_keys: Keys) -> None:
    """CPU seconds (process time: this runs on a shared machine) per query, serial engine."""
    rng = np.random.default_rng(512)
    timings = {}
    for dim in (128, 512):
        gallery = l2_normalize(rng.normal(size=(TOP_K, dim)), dim=dim)
        probes = l2_normalize(gallery[:2] + 0.02 * rng.normal(size=(2, dim)), dim=dim)
        probes = np.vstack([probes, l2_normalize(rng.normal(size=(1, dim)), dim=dim)])
        start = time.process_time()
        matches, total = _equal_answers(paillier_fast_keys, gallery,
                                        [f"p{i}" for i in range(TOP_K)], probes, 0.5, seed=dim)
        timings[dim] = (time.process_time() - start) / total
        assert (matches, total) == (2, 3)
    print(f"exact stage incl. template prep, 2048-bit fast profile, k={TOP_K}, CPU: "
          f"d=128 {timings[128]:.2f} s/query, d=512 {timings[512]:.2f} s/query")
