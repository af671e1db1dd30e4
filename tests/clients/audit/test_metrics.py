"""Known-answer and property tests of the shared audit metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pura_client.audit.metrics import (
    AuditError,
    SearchOutcomes,
    auto_bins,
    bootstrap_d_sys,
    chi_square_uniform,
    det_curve,
    error_rates,
    fnir_at_fpir,
    fnmr_at_fmr,
    fpir_fnir,
    identification_det,
    local_linkability,
    null_d_sys,
    rank1_rate,
    rule_of_three,
    threshold_at_fmr,
    trials_for_bound,
    unlinkability,
    upper_bound,
)

from pura.errors import PuraError


def test_threshold_at_fmr_known_answer() -> None:
    impostor = np.arange(1000) / 1000.0
    tau = threshold_at_fmr(impostor, 0.01)
    assert 0.989 < tau <= 0.990  # accepts 0.990 ... 0.999: exactly 10 of 1000
    assert error_rates([1.0], impostor, tau)[0] == pytest.approx(0.01)


def test_threshold_with_too_few_impostors_is_strictest() -> None:
    tau = threshold_at_fmr([0.1, 0.5, 0.3], 0.001)
    assert tau > 0.5
    assert error_rates([1.0], [0.1, 0.5, 0.3], tau)[0] == 0.0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=200),
    st.floats(0.0, 1.0),
)
def test_threshold_never_exceeds_target_fmr(scores: list[float], fmr: float) -> None:
    tau = threshold_at_fmr(scores, fmr)
    achieved = float(np.mean(np.asarray(scores) >= tau))
    assert achieved <= fmr + 1e-12


def test_det_curve_and_fnmr_known_answer() -> None:
    genuine, impostor = [3.0, 4.0, 0.5], [1.0, 2.0]
    det = det_curve(genuine, impostor)
    at3 = int(np.searchsorted(det.thresholds, 3.0))
    assert det.fmr[at3] == 0.0 and det.fnmr[at3] == pytest.approx(1 / 3)
    assert det.fmr[0] == 1.0 and det.fnmr[0] == 0.0  # lowest threshold accepts everything
    assert det.fmr[-1] == 0.0 and det.fnmr[-1] == 1.0  # +inf rejects everything
    assert np.all(np.diff(det.fmr) <= 0) and np.all(np.diff(det.fnmr) >= 0)
    assert fnmr_at_fmr(genuine, impostor, 0.0) == pytest.approx(1 / 3)


def test_identification_rates_known_answer() -> None:
    out = SearchOutcomes(
        mated_best=np.array([0.9, 0.8, 0.95, 0.3]),
        mated_correct=np.array([True, True, False, True]),
        nonmated_best=np.array([0.1, 0.2, 0.85, 0.4]),
    )
    assert rank1_rate(out) == 0.75
    assert fpir_fnir(out, 0.5) == (0.25, 0.5)  # miss: wrong candidate, and 0.3 below threshold
    fnir, tau = fnir_at_fpir(out, 0.0)
    assert tau > 0.85 and fnir == 0.75  # only 0.9 is a hit: 0.8 below, 0.95 wrong, 0.3 below
    det = identification_det(out)
    assert det.fnmr[0] == 0.25  # the wrong-candidate search is a miss at every threshold


def test_rule_of_three_and_exact_bound() -> None:
    assert rule_of_three(3000) == pytest.approx(0.001)
    assert trials_for_bound(0.001) == 3000
    exact = upper_bound(0, 3000)
    assert exact == pytest.approx(1 - 0.05 ** (1 / 3000))
    assert exact < rule_of_three(3000) < 1.01 * exact
    assert 0.5 < upper_bound(5, 10) < 0.9
    assert upper_bound(10, 10) == 1.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: threshold_at_fmr([], 0.1),
        lambda: threshold_at_fmr([1.0, math.nan], 0.1),
        lambda: threshold_at_fmr([1.0], 1.5),
        lambda: rule_of_three(0),
        lambda: upper_bound(4, 3),
        lambda: trials_for_bound(0.0),
        lambda: unlinkability([0.1], [0.2], bins=0),
        lambda: chi_square_uniform([0, 5], 3),
        lambda: SearchOutcomes(np.zeros(2), np.zeros(3, dtype=bool), np.zeros(1)),
    ],
)
def test_bad_input_raises_audit_error(call: object) -> None:
    with pytest.raises(AuditError) as info:
        call()  # type: ignore[operator]
    assert isinstance(info.value, PuraError)


def test_unlinkability_identical_distributions_is_zero() -> None:
    scores = np.random.default_rng(0).normal(size=5000)
    assert unlinkability(scores, scores).d_sys == 0.0


def test_unlinkability_disjoint_distributions_is_one() -> None:
    rng = np.random.default_rng(1)
    result = unlinkability(rng.uniform(2, 3, 500), rng.uniform(0, 1, 5000))
    assert result.d_sys == pytest.approx(1.0)
    assert np.all(result.local[result.mated_density > 0] == 1.0)


def test_unlinkability_constructed_likelihood_ratio() -> None:
    # bin 0: P(m)=0.75, P(nm)=0.25 -> LR 3 -> D = 2*3/4 - 1 = 0.5; bin 1: LR 1/3 -> D = 0
    mated = [0.0] * 75 + [1.0] * 25
    nonmated = [0.0] * 25 + [1.0] * 75
    result = unlinkability(mated, nonmated, bins=2)
    assert result.local.tolist() == pytest.approx([0.5, 0.0])
    assert result.d_sys == pytest.approx(0.75 * 0.5)
    # prior odds ω = 3: bin 0 -> ωLR 9 -> D = 0.8; bin 1 -> ωLR = 1, not > 1 -> 0
    assert unlinkability(mated, nonmated, bins=2, omega=3.0).d_sys == pytest.approx(0.75 * 0.8)


def test_local_linkability_edge_cases() -> None:
    local = local_linkability(np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5]), 1.0)
    assert local.tolist() == [1.0, 0.0, 0.0]


def test_null_and_bootstrap_bracket_the_estimate() -> None:
    rng = np.random.default_rng(2)
    mated, nonmated = rng.random(300), rng.random(3000)
    bins = auto_bins(300)
    assert bins == 30
    null = null_d_sys(mated, nonmated, rng, rounds=30, bins=bins)
    measured = unlinkability(mated, nonmated, bins=bins).d_sys
    assert np.all(null >= 0) and measured <= np.percentile(null, 100) + 0.05
    lo, hi = bootstrap_d_sys(rng.normal(1, 1, 300), rng.normal(0, 1, 3000), rng, rounds=50)
    linked = unlinkability(rng.normal(1, 1, 300), rng.normal(0, 1, 3000)).d_sys
    assert lo < hi and 0.2 < linked < 0.8


def test_chi_square_uniform() -> None:
    flat = chi_square_uniform(np.repeat(np.arange(10), 50), 10)
    assert flat.statistic == 0.0 and flat.p_value == pytest.approx(1.0) and flat.dof == 9
    skewed = chi_square_uniform([0] * 400 + list(range(10)) * 10, 10)
    assert skewed.p_value < 1e-6
