"""Leakage statistics on known inputs."""

from __future__ import annotations

import numpy as np
import pytest
from pura_client.audit.harness import Message
from pura_client.audit.leakage import (
    auc,
    canary_hits,
    canary_patterns,
    position_bins,
    residue_test,
    view_statistic,
)


def test_position_bins_uniform_and_skewed() -> None:
    uniform = position_bins(list(range(0, 4096, 16)), 4096, bins=16)
    assert uniform.statistic == 0.0 and uniform.p_value == pytest.approx(1.0)
    skewed = position_bins([5] * 200, 4096, bins=16)
    assert skewed.p_value < 1e-10


def test_residue_test_detects_unmasked_values() -> None:
    rng = np.random.default_rng(0)
    masked = [int(x) for x in rng.integers(0, 1 << 52, 5000)]
    assert residue_test(masked, 11).p_value > 1e-3
    unmasked = [int(x) + (1 << 11) for x in rng.normal(0, 150, 5000).round()]
    assert residue_test(unmasked, 11).p_value < 1e-10


def test_view_statistic_and_auc() -> None:
    assert view_statistic(np.array([0.0, 1.0, 2.0, 10.0])) == pytest.approx(8.0 / 0.5)
    assert auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auc([1.0], [1.0]) == 0.5
    assert auc([], [1.0]) == 0.5


def test_canaries_found_only_where_present() -> None:
    q = np.array([5, -7, 300, 2, 9], dtype=np.int64)
    f = np.array([[0.125, -0.5, 0.25, 0.75]])
    patterns = canary_patterns([q], f)
    leak = Message("x", "A->B", b"hdr" + q[:4].astype("<i4").tobytes() + b"tail")
    clean = Message("x", "A->B", bytes(range(256)))
    assert canary_hits([clean], patterns) == 0
    assert canary_hits([clean, leak], patterns) == 1
