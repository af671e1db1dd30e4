"""bench/preselect_recall.py: the recall model on known answers, and against real CKKS."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bench.preselect_recall import (
    LFWDescriptors,
    StudyConfig,
    galleries,
    markdown_table,
    recommend,
    slot_layout,
    squared_distances,
    study_probes,
    summarise,
    synthetic_strangers,
    verify_with_ckks,
)
from pura.crypto.encoding import load_shipped_pca
from pura.crypto.params import CKKS_8192
from pura.errors import ConfigError, DimensionError

S = 11


def _unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return out


def _config(head_dim: int, ks: tuple[int, ...] = (1, 2, 4), view_k: int = 256) -> StudyConfig:
    return StudyConfig(head_dim, S, tau=int(0.115 * 4**S), view_k=view_k, ks=ks)


def test_full_head_finds_the_nearest_neighbour_at_k1() -> None:
    """head_dim = dim: the head inner product ranks exactly like the full distance."""
    gen = np.random.default_rng(1)
    gallery = _unit(gen.normal(size=(300, 128)))
    probes = _unit(gallery[:40] + 0.02 * gen.normal(size=(40, 128)))
    probes = np.vstack([probes, _unit(gen.normal(size=(20, 128)))])
    decoys = _unit(gen.normal(size=(100, 128)))
    batch = study_probes(gallery, decoys, probes, _config(128), random.Random(0))
    assert batch.hits[1].all() and (batch.decided[1] == batch.wanted).all()
    assert (batch.head_rank == 1).all()
    assert (batch.nearest[:40] == np.arange(40)).all()


def test_known_answer_head_ranking_misses_the_mate() -> None:
    """head_dim 1: g1 outranks the exact mate g0 on coordinate 0; k=1 loses the match."""
    gallery = np.array([[0.6, 0.8, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    probe = np.array([[0.6, 0.8, 0.0, 0.0]])
    config = _config(1, ks=(1, 2, 3))
    batch = study_probes(gallery, np.zeros((0, 1)), probe, config, random.Random(0))
    assert int(batch.nearest[0]) == 0 and int(batch.nearest_d[0]) == 0
    assert int(batch.head_rank[0]) == 2
    assert [bool(batch.hits[k][0]) for k in (1, 2, 3)] == [False, True, True]
    assert [int(batch.decided[k][0]) for k in (1, 2, 3)] == [-1, 0, 0]
    assert int(batch.wanted[0]) == 0
    assert batch.ordered[0].tolist() == [1, 0, 2]
    summary = summarise(batch, config, np.array([0]))
    one = summary["per_k"]["1"]
    assert one["disagree_mated"] == one["disagree_correct_match_lost"] == 1
    assert one["disagree_match_lost"] == 1 and one["mated_correct_match"] == 0
    assert summary["per_k"]["2"]["mated_correct_match"] == 1
    assert summary["smallest_k_full_agreement"] == 2
    assert summary["head_rank_of_target"]["within_threshold"]["max"] == 2
    result = {"ks": [1, 2, 3], "galleries": {"3": summary}}
    assert recommend(result) == 2
    assert "| 1 | 0.00% / 0.00% / 0.00% |" in markdown_table(result)


def test_decoys_crowding_view_force_padding() -> None:
    """Decoys that beat every real head fill B's view: A pads with random templates."""
    gen = np.random.default_rng(2)
    gallery = _unit(gen.normal(size=(50, 8)))
    probes = gallery[:5]
    decoys = np.tile(probes[0, :4] * 10.0, (8, 1))  # score 10 ≫ any unit-vector score
    config = _config(4, ks=(2,), view_k=8)
    batch = study_probes(gallery, decoys, probes[:1], config, random.Random(3))
    assert int(batch.padded[2][0]) == 2 and (batch.ordered[0] == -1).all()
    assert int(batch.view_rank[0]) == 8 + int(batch.head_rank[0])  # all 8 decoys rank above


def test_squared_distances_are_exact_integers() -> None:
    a = np.array([[2048, -2048, 0]], dtype=np.int64)
    b = np.array([[2048, 2048, 1], [-2048, -2048, -1]], dtype=np.int64)
    assert squared_distances(a, b).tolist() == [[4096**2 + 1, 2048 * 2048 * 4 + 1]]


def test_slot_layout() -> None:
    assert slot_layout(1000, 4096) == (1, 3096)
    assert slot_layout(4749, 4096) == (2, 3443)
    assert slot_layout(4096, 4096) == (1, 0)


@pytest.mark.parametrize("ks", [(), (0, 1), (2, 1), (1, 1)])
def test_bad_ks_rejected(ks: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError):
        StudyConfig(32, S, tau=1, ks=ks)


def test_bad_shapes_rejected() -> None:
    gallery = _unit(np.ones((3, 4)))
    with pytest.raises(DimensionError):
        study_probes(gallery, np.zeros((0, 8)), gallery, _config(8), random.Random(0))
    with pytest.raises(DimensionError):
        study_probes(gallery, np.zeros((2, 3)), gallery, _config(2), random.Random(0))


def test_plaintext_model_matches_real_ckks_preselection() -> None:
    """The product's own CKKS preselection returns the candidates the model predicts."""
    gen = np.random.default_rng(4)
    head_dim, n = 4, 12
    gallery = _unit(gen.normal(size=(n, 16)))
    probes = _unit(gallery[:3] + 0.05 * gen.normal(size=(3, 16)))
    decoys = 0.01 * _unit(gen.normal(size=(CKKS_8192.slot_count - n, head_dim)))
    config = _config(head_dim, ks=(1, 2, 4))
    batch = study_probes(gallery, decoys, probes, config, random.Random(0))
    check = verify_with_ckks(gallery, decoys, probes, batch.ordered, config, CKKS_8192, seed=1)
    assert check["all_sets_identical"] and check["same_order_to_depth"] == 3, check
    assert check["same_top_k_set"] == {"1": 3, "2": 3, "4": 3}


def test_galleries_map_probes_to_their_own_rows() -> None:
    """Mated probes identical to their enrolled image: every gallery finds its own row."""
    gen = np.random.default_rng(5)
    multi = _unit(gen.normal(size=(30, 128)))
    owner = np.repeat(np.arange(30), 2)
    data = LFWDescriptors(multi, multi[owner], owner.astype(np.int64),
                          _unit(gen.normal(size=(7, 128))), _unit(gen.normal(size=(4, 128))), "m")
    gals = galleries(data, seed=3, subset_size=10)
    assert [g.name for g in gals] == ["10", "30", "37"]
    assert [len(g.probes) for g in gals] == [24, 64, 64]
    config = _config(128, ks=(1,))
    for g in gals:
        batch = study_probes(g.vectors, np.zeros((0, 128)), g.probes, config, random.Random(0))
        mated = g.truth >= 0
        assert (batch.nearest[mated] == g.truth[mated]).all()
        summary = summarise(batch, config, g.truth)
        assert summary["plaintext_full_search"]["mated_correct_match"] == int(mated.sum())
    with pytest.raises(ConfigError):
        galleries(data, seed=3, subset_size=31)


def test_synthetic_strangers_follow_the_face_model() -> None:
    """Unit vectors whose rotated mean is the model's (the decoys' distribution, full dim)."""
    pca = load_shipped_pca()
    x = synthetic_strangers(pca, 2000, random.Random(6))
    assert x.shape == (2000, 128)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0)
    rotated_mean = pca.apply(x).mean(axis=0)
    assert abs(rotated_mean[0] - pca.mean[0]) < 0.02
    assert not np.allclose(x[0], synthetic_strangers(pca, 1, random.Random(7))[0])
