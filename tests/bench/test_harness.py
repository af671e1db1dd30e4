"""bench harness pieces: timing bookkeeping, data, FAISS floor, baselines (tiny, never timed)."""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.__main__ import _ints, parser
from bench._faiss import FlatIPIndex
from bench.baseline_ckks import MAX_SCORE_ERROR, run_baseline3
from bench.baseline_paillier import (
    BaselineServerA,
    BaselineServerB,
    ThresholdKeys,
    quantise,
    run_baseline2,
)
from bench.data import (
    MATED_NOISE_NORM,
    face_like_gallery,
    normalise,
    plaintext_answer,
    synthetic_gallery,
    synthetic_probes,
)
from bench.timing import Timing, machine_info, measure
from pura.crypto.ckks import CKKSContext
from pura.crypto.paillier import RandomnessPool, decrypt_with_shares, generate_keypair
from pura.crypto.params import CKKS_8192, PAILLIER_2048_FAST


@pytest.fixture(scope="module")
def keys() -> ThresholdKeys:
    return ThresholdKeys(*generate_keypair(PAILLIER_2048_FAST, random.Random(5)))


def _clock(ticks: list[float]) -> Iterator[float]:
    yield from ticks


def test_measure_uses_median_and_skips_warmup() -> None:
    calls: list[int] = []
    ticks = iter([0.0, 1.0, 1.0, 4.0, 4.0, 6.0])  # durations 1, 3, 2
    timing = measure(lambda: calls.append(1), repetitions=3, warmup=2,
                     clock=lambda: next(ticks))
    assert len(calls) == 5
    assert (timing.median_s, timing.min_s, timing.max_s) == (2.0, 1.0, 3.0)
    assert (timing.repetitions, timing.warmup) == (3, 2)
    assert timing.scaled(0.5).median_s == 1.0


@pytest.mark.parametrize(("reps", "warmup"), [(0, 1), (1, -1)])
def test_measure_rejects_bad_counts(reps: int, warmup: int) -> None:
    with pytest.raises(ValueError):
        measure(lambda: None, repetitions=reps, warmup=warmup)


def test_timing_needs_samples() -> None:
    with pytest.raises(ValueError):
        Timing.from_samples([], 0)


def test_machine_info_has_what_a_reader_needs() -> None:
    info = machine_info()
    assert info["logical_cpus"] >= 1 and "numpy" in info["libraries"]
    assert "shared" in info["note"]


@settings(max_examples=25, deadline=None)
@given(size=st.integers(1, 60), dim=st.integers(2, 40), seed=st.integers(0, 2**32 - 1))
def test_synthetic_gallery_is_seeded_unit_vectors(size: int, dim: int, seed: int) -> None:
    g = synthetic_gallery(size, dim, seed=seed)
    assert g.shape == (size, dim)
    assert np.allclose(np.linalg.norm(g, axis=1), 1.0)
    assert np.array_equal(g, synthetic_gallery(size, dim, seed=seed))


def test_synthetic_probes_know_their_answer() -> None:
    g = synthetic_gallery(200, 128, seed=3)
    probes = synthetic_probes(g, 10, 5, seed=4)
    assert len(probes) == 15
    for vec, expected in zip(probes.vectors, probes.expected, strict=True):
        assert plaintext_answer(g, vec, 0.6) == expected
    mated = probes.vectors[:10]
    dist = np.linalg.norm(mated - g[probes.expected[:10]], axis=1)
    assert np.all(dist < 1.5 * MATED_NOISE_NORM)


def test_bad_data_inputs() -> None:
    with pytest.raises(ValueError):
        synthetic_gallery(0)
    with pytest.raises(ValueError):
        normalise(np.zeros((1, 4)))


def test_faiss_floor_matches_numpy() -> None:
    g = synthetic_gallery(500, 32, seed=1)
    probes = synthetic_gallery(7, 32, seed=2)
    index = FlatIPIndex(g)
    scores, rows = index.search(probes, 3)
    assert len(index) == 500 and index.bytes_per_template() == 128
    assert list(rows[:, 0]) == list(np.argmax(probes @ g.T, axis=1))
    assert np.allclose(scores[:, 0], np.max(probes @ g.T, axis=1), atol=1e-5)
    with pytest.raises(ValueError):
        index.search(np.ones((1, 31)))
    with pytest.raises(ValueError):
        FlatIPIndex(np.zeros((0, 4)))


def test_baseline2_servers_known_answer(keys: ThresholdKeys) -> None:
    pk = keys.public_key
    client = RandomnessPool(pk, rng=random.Random(1))
    b = BaselineServerB(keys, RandomnessPool(pk, rng=random.Random(2)))
    a = BaselineServerA(keys, RandomnessPool(pk, rng=random.Random(3)), b, value_bits=13,
                        rng=random.Random(4))
    x, y = [3, -5, 7], [-1, 2, 7]
    d = a.squared_distance(pk.encrypt_many(x, client), pk.encrypt_many(y, client))
    assert decrypt_with_shares(keys.share_a, keys.share_b, d, signed=True) == 16 + 49 + 0
    values = [9, 4, 12, 4, 30]
    d_min, i_min = a.minimum(pk.encrypt_many(values, client),
                             pk.encrypt_many(range(len(values)), client))
    assert decrypt_with_shares(keys.share_a, keys.share_b, d_min, signed=True) == 4
    assert decrypt_with_shares(keys.share_a, keys.share_b, i_min, signed=True) in {1, 3}
    with pytest.raises(ValueError):
        a.squared_distance(pk.encrypt_many(x, client), pk.encrypt_many(y[:2], client))
    with pytest.raises(ValueError):
        a.minimum([], [])


def test_run_baseline2_verifies_its_subset(keys: ThresholdKeys) -> None:
    g = synthetic_gallery(4, 8, seed=0)
    result = run_baseline2(keys, g.tolist(), g[0].tolist(), scale_bits=11, templates_timed=1,
                           comparisons_timed=2, repetitions=1, rng=random.Random(9))
    assert result.verified
    out = result.to_dict([1000, 10])
    assert out["extrapolated"] is True and out["dim"] == 8
    assert out["total_s"]["1000"] > out["total_s"]["10"] > 0
    assert quantise([0.5, -0.25], 4) == [8, -4]


def test_run_baseline3_scores_match_plaintext() -> None:
    ctx = CKKSContext.generate(CKKS_8192)
    g = synthetic_gallery(3, 128, seed=0)
    result = run_baseline3(ctx, g, g[1], templates_timed=3, repetitions=1)
    assert result.max_error <= MAX_SCORE_ERROR
    assert result.to_dict([100])["verified_against_plaintext"] is True


def test_cli_parsing() -> None:
    assert _ints("1000,10_000") == [1000, 10000]
    for bad in ("", "ten", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            _ints(bad)
    args = parser().parse_args(["run", "--sizes", "50", "--preset", "fast"])
    assert args.sizes == [50] and args.repetitions >= 5


def test_face_like_gallery_matches_the_decoy_model() -> None:
    from pura.crypto.encoding import load_shipped_pca

    pca = load_shipped_pca()
    g = face_like_gallery(400, pca.mean, pca.cov, pca.matrix, seed=1)
    assert np.allclose(np.linalg.norm(g, axis=1), 1.0)
    assert np.array_equal(g, face_like_gallery(400, pca.mean, pca.cov, pca.matrix, seed=1))

    def head(x: np.ndarray) -> float:
        return float(np.linalg.norm(pca.apply(x)[:, :32], axis=1).mean())

    decoys = np.linalg.norm(pca.sample_decoy_heads(400, 32, random.Random(2)), axis=1).mean()
    # Same head energy as the decoys (within sampling noise), far above uniform vectors'.
    assert abs(head(g) - decoys) < 0.05
    assert head(g) > head(synthetic_gallery(400, 128, seed=1)) + 0.2
    with pytest.raises(ValueError):
        face_like_gallery(0, pca.mean, pca.cov, pca.matrix)
