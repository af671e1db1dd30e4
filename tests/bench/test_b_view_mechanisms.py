"""bench.b_view_mechanisms on crafted views: the projections compute what they say."""

from __future__ import annotations

import numpy as np
from pura_client.audit import view_attacks as va

from bench import b_view_mechanisms as bvm

SLOTS, DIM = 256, 24


def _recorded(queries: int = 60, seed: int = 0) -> bvm.Recorded:
    """Rank-DIM views under per-query masks and rotations; half the probes have a mate."""
    rng = np.random.default_rng(seed)
    heads = rng.standard_normal((SLOTS, DIM))
    views, rows, mate_pos, held = [], [], [], []
    live = np.zeros(SLOTS, bool)
    live[: SLOTS // 2] = True
    for i in range(queries):
        mated = i % 2 == 0
        q = rng.standard_normal(DIM)
        if mated:
            q = heads[i]  # slot i (live) is its mate: |h|² ≈ DIM against h·h' ~ N(0, DIM)
        rot = int(rng.integers(SLOTS))
        scores = np.roll(heads @ q, -rot)  # view position p holds slot (p + rot) mod SLOTS
        a, c = float(rng.uniform(1e3, 2e3)), float(rng.uniform(-1e4, 1e4))
        v = a * scores + c
        views.append(va.QueryView([v], (0,), (rot,), 0, mated, (0,), (rot,)))
        rows.append(v)
        mate_pos.append((i - rot) % SLOTS if mated else -1)
        held.append(np.roll(live, -rot))
    return bvm.Recorded(views, np.stack(rows), np.array([q.mated for q in views]),
                        np.zeros(queries, np.int64), np.array(mate_pos), held, {0: heads}, DIM,
                        SLOTS)


def test_epoch_curve_falls_to_random_as_epochs_shrink() -> None:
    rec = _recorded()
    curve = {p["E"]: p for p in bvm.epoch_curve(rec.queries, rec.heads[0], DIM, (1, 2, 4, 32),
                                                 draws=4, seed=1)}
    assert curve[32]["cosine_mean"] > 0.999  # E ≥ head_dim: the exact span
    assert curve[1]["cosine_mean"] < curve[2]["cosine_mean"] < curve[4]["cosine_mean"]
    for e in (1, 2, 4):  # B knows E directions, the rest is a guess: ≈ r + (E/DIM)(1 − r)
        r = curve[e]["random_mean"]
        assert abs(curve[e]["cosine_mean"] - (r + e / DIM * (1 - r))) < 0.1
    largest = bvm.largest_meeting(list(curve.values()), "cosine_mean")
    assert largest is None or largest < DIM


def test_padded_keeps_what_b_found() -> None:
    rng = np.random.default_rng(0)
    found, _ = np.linalg.qr(rng.standard_normal((SLOTS, 3)))
    basis = va.complete_basis(found, DIM, rng)
    assert basis.shape == (SLOTS, DIM)
    assert np.allclose(basis.T @ basis, np.eye(DIM), atol=1e-9)
    assert va.mean_principal_cosine(found, basis) > 1 - 1e-9


def test_noise_hides_matches_and_costs_recall() -> None:
    rec = _recorded()
    clean, loud = bvm.noise_curve(rec, (0.0, 1e6), draws=2, top_k=2, view_k=64, seed=0)
    assert clean["auc_audit"] > 0.9 and clean["recall"] == 1.0
    assert loud["auc_strongest"] < 0.85 and loud["recall"] < 0.5


def test_planted_decoys_take_top_k_places() -> None:
    rec = _recorded()
    rng = np.random.default_rng(0)
    levels = bvm.decoy_levels(rec)
    same, planted = bvm.plant(rec, np.zeros(len(rec.queries), np.int64), levels, "empty", rng)
    assert np.array_equal(same, rec.values) and not any(p.any() for p in planted)
    point = bvm.decoy_point(rec, "3", lambda r, n: np.full(n, 3), levels, "empty", draws=2,
                            top_k=2, view_k=64, seed=0)
    assert point["baseline_recall"] == 1.0
    assert point["decoys_in_top_k"] > 1.0  # decoys at mate level fill most of a top_k of 2
    assert point["top_k_needed_max"] >= 3 and point["pushed_out"] > 0
