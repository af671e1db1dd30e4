"""Shared metrics of the audit evaluations.

Conventions, so that every evaluation reads the same way:

* **Scores are similarities** (higher = more alike). Distances are passed negated
  (:func:`similarity_from_distance`). A comparison *accepts* when ``score >= threshold``.
* Verification error rates follow ISO/IEC 19795-1: FMR = share of impostor comparisons accepted,
  FNMR = share of genuine comparisons rejected.
* Identification error rates follow ISO/IEC 19795-1 / NIST FRTE (rank 1, thresholded):
  FPIR = share of non-mated searches whose best candidate is accepted; FNIR = share of mated
  searches where the mate is not returned (best candidate is someone else, or below threshold).
* Unlinkability: the local measure D↔(s) and global D↔sys of Gomez-Barrero et al., "General
  framework to evaluate unlinkability in biometric template protection systems", IEEE TIFS 13(6),
  2018, re-derived here from the paper's definitions (not from any reference code).
* Zero-failure bounds: the "rule of three" (Jovanovic & Levy 1997; ISO/IEC 19795-1 guidance) and
  the exact one-sided Clopper-Pearson bound it approximates.

Why it matters for security: an audit claim such as "SAR ≤ 0.1%" is only as good as the statistic
behind it; a rate of 0 successes in 300 attempts proves nothing at the 0.1% level. Every evaluation
therefore reports the upper bound, not just the observed rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from pura.errors import PuraError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class AuditError(PuraError):
    """An audit input cannot be evaluated (empty or non-finite scores, bad rate, too few samples).

    One subclass of :class:`PuraError` for the whole audit package, so callers keep catching
    ``PuraError`` only.
    """


def _as_scores(values: npt.ArrayLike, what: str) -> FloatArray:
    """Validate a 1-D array of finite scores; an empty set would make every rate meaningless."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise AuditError(f"{what}: need at least one score, got none")
    if not np.all(np.isfinite(arr)):
        raise AuditError(f"{what}: scores must be finite")
    return arr


def _check_rate(rate: float, what: str) -> None:
    if not 0.0 <= rate <= 1.0:
        raise AuditError(f"{what} must lie in [0, 1], got {rate}")


def similarity_from_distance(distances: npt.ArrayLike) -> FloatArray:
    """Negate distances so that the "higher = more alike" convention holds everywhere."""
    return -np.asarray(distances, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Verification: thresholds and DET
# ---------------------------------------------------------------------------------------------


def threshold_at_fmr(impostor: npt.ArrayLike, fmr: float) -> float:
    """Smallest threshold whose empirical FMR is at most ``fmr``.

    Accept means ``score >= threshold``. The threshold is placed just above the impostor score
    that would otherwise push the FMR over the target, so the guarantee ``FMR <= fmr`` holds on
    the calibration set exactly (ties included). With fewer than ``1/fmr`` impostor scores the
    target cannot be resolved and the strictest threshold (above every impostor) is returned.
    """
    scores = _as_scores(impostor, "impostor")
    _check_rate(fmr, "fmr")
    ordered = np.sort(scores)[::-1]
    allowed = math.floor(fmr * ordered.size + 1e-12)
    if allowed >= ordered.size:
        return float(ordered[-1])
    return float(np.nextafter(ordered[allowed], np.inf))


def error_rates(
    genuine: npt.ArrayLike, impostor: npt.ArrayLike, threshold: float
) -> tuple[float, float]:
    """(FMR, FNMR) at one threshold."""
    gen = _as_scores(genuine, "genuine")
    imp = _as_scores(impostor, "impostor")
    return float(np.mean(imp >= threshold)), float(np.mean(gen < threshold))


@dataclass(frozen=True)
class DetCurve:
    """Error trade-off over every distinct threshold (ascending thresholds)."""

    thresholds: FloatArray
    fmr: FloatArray
    fnmr: FloatArray


def det_curve(genuine: npt.ArrayLike, impostor: npt.ArrayLike) -> DetCurve:
    """DET points at every distinct score, computed by sorting (O(n log n), no loop)."""
    gen = np.sort(_as_scores(genuine, "genuine"))
    imp = np.sort(_as_scores(impostor, "impostor"))
    thresholds = np.unique(np.concatenate([gen, imp, [np.inf]]))
    fnmr = np.searchsorted(gen, thresholds, side="left") / gen.size
    fmr = 1.0 - np.searchsorted(imp, thresholds, side="left") / imp.size
    return DetCurve(thresholds=thresholds, fmr=fmr.astype(np.float64), fnmr=fnmr.astype(np.float64))


def fnmr_at_fmr(genuine: npt.ArrayLike, impostor: npt.ArrayLike, fmr: float) -> float:
    """FNMR at the threshold :func:`threshold_at_fmr` picks for ``fmr``."""
    tau = threshold_at_fmr(impostor, fmr)
    return error_rates(genuine, impostor, tau)[1]


# ---------------------------------------------------------------------------------------------
# Identification (rank 1, thresholded)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchOutcomes:
    """Per-search results of a 1:N run, as an open-set identification evaluation needs them.

    ``mated_best``: best candidate score of each mated search; ``mated_correct``: whether that best
    candidate is the true mate; ``nonmated_best``: best candidate score of each non-mated search.
    """

    mated_best: FloatArray
    mated_correct: BoolArray
    nonmated_best: FloatArray

    def __post_init__(self) -> None:
        _as_scores(self.mated_best, "mated_best")
        _as_scores(self.nonmated_best, "nonmated_best")
        if self.mated_best.shape != self.mated_correct.shape:
            raise AuditError("mated_best and mated_correct must have the same length")


def rank1_rate(outcomes: SearchOutcomes) -> float:
    """Closed-set rank-1 identification rate (threshold ignored)."""
    return float(np.mean(outcomes.mated_correct))


def fpir_fnir(outcomes: SearchOutcomes, threshold: float) -> tuple[float, float]:
    """(FPIR, FNIR) at one threshold, rank 1."""
    fpir = float(np.mean(outcomes.nonmated_best >= threshold))
    hit = outcomes.mated_correct & (outcomes.mated_best >= threshold)
    return fpir, float(1.0 - np.mean(hit))


def fnir_at_fpir(outcomes: SearchOutcomes, fpir: float) -> tuple[float, float]:
    """(FNIR, threshold) at the strictest-needed threshold giving FPIR <= ``fpir``."""
    tau = threshold_at_fmr(outcomes.nonmated_best, fpir)
    return fpir_fnir(outcomes, tau)[1], tau


def identification_det(outcomes: SearchOutcomes) -> DetCurve:
    """FPIR/FNIR trade-off (stored in the ``fmr``/``fnmr`` fields) over every distinct threshold.

    A mated search whose best candidate is wrong is a miss at every threshold, so its score enters
    as ``-inf`` on the genuine side.
    """
    mated = np.where(outcomes.mated_correct, outcomes.mated_best, -np.inf)
    nonmated = np.sort(outcomes.nonmated_best)
    gen = np.sort(mated)
    finite = np.concatenate([gen[np.isfinite(gen)], nonmated, [np.inf]])
    thresholds = np.unique(finite)
    fnir = np.searchsorted(gen, thresholds, side="left") / gen.size
    fpir = 1.0 - np.searchsorted(nonmated, thresholds, side="left") / nonmated.size
    return DetCurve(
        thresholds=thresholds, fmr=fpir.astype(np.float64), fnmr=fnir.astype(np.float64)
    )


# ---------------------------------------------------------------------------------------------
# Zero-failure and binomial bounds
# ---------------------------------------------------------------------------------------------


def rule_of_three(trials: int) -> float:
    """Approximate 95% upper bound on a rate after ``trials`` attempts with zero successes: 3/n.

    It comes from solving (1-p)^n = 0.05, i.e. p = 1 - 0.05^(1/n) ≈ -ln(0.05)/n ≈ 2.996/n.
    To claim a 0.1% rate one therefore needs at least 3,000 zero-success attempts.
    """
    if trials <= 0:
        raise AuditError(f"rule of three needs a positive number of trials, got {trials}")
    return 3.0 / trials


def trials_for_bound(rate: float) -> int:
    """Attempts needed (zero successes) for the rule of three to bound the rate at ``rate``."""
    if not 0.0 < rate < 1.0:
        raise AuditError(f"rate must lie in (0, 1), got {rate}")
    return math.ceil(3.0 / rate - 1e-9)


def upper_bound(successes: int, trials: int, confidence: float = 0.95) -> float:
    """Exact one-sided Clopper-Pearson upper confidence bound on a binomial rate.

    With zero successes this is ``1 - (1 - confidence)^(1/n)``, which the rule of three
    approximates; with successes it stays valid where 3/n would not.
    """
    if trials <= 0 or not 0 <= successes <= trials:
        raise AuditError(f"need 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
    if successes == trials:
        return 1.0
    return float(stats.beta.ppf(confidence, successes + 1, trials - successes))


# ---------------------------------------------------------------------------------------------
# Unlinkability (Gomez-Barrero et al., TIFS 2018)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unlinkability:
    """Local D↔(s) on bin centres, the two score densities, and the global D↔sys."""

    bin_centres: FloatArray
    bin_width: float
    local: FloatArray
    mated_density: FloatArray
    nonmated_density: FloatArray
    d_sys: float


def _common_histograms(
    mated: FloatArray, nonmated: FloatArray, bins: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Probability mass of both score sets on shared bin edges (needed for a likelihood ratio)."""
    lo = float(min(mated.min(), nonmated.min()))
    hi = float(max(mated.max(), nonmated.max()))
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    p_m = np.histogram(mated, bins=edges)[0] / mated.size
    p_nm = np.histogram(nonmated, bins=edges)[0] / nonmated.size
    return edges, p_m.astype(np.float64), p_nm.astype(np.float64)


def local_linkability(p_mated: FloatArray, p_nonmated: FloatArray, omega: float) -> FloatArray:
    """D↔(s) = 2·ωLR(s)/(1+ωLR(s)) − 1 where ωLR(s) > 1, else 0 (paper, eq. 6).

    LR(s) = p(s|H_m)/p(s|H_nm). Where no non-mated score falls (p(s|H_nm) = 0) but mated scores
    do, LR is infinite and the score proves a link: D↔(s) = 1. Where no mated score falls, LR = 0
    and D↔(s) = 0. ω = p(H_m)/p(H_nm) is the attacker's prior odds (1 = uninformed).
    """
    local = np.zeros_like(p_mated)
    both = (p_mated > 0) & (p_nonmated > 0)
    wlr = omega * p_mated[both] / p_nonmated[both]
    local[both] = np.where(wlr > 1.0, 2.0 * wlr / (1.0 + wlr) - 1.0, 0.0)
    local[(p_mated > 0) & (p_nonmated == 0)] = 1.0
    return local


def unlinkability(
    mated: npt.ArrayLike, nonmated: npt.ArrayLike, bins: int = 100, omega: float = 1.0
) -> Unlinkability:
    """Local and global linkability of an attacker's linkage scores.

    ``mated``: linkage scores between protected templates of the *same* subject from two
    applications/keys; ``nonmated``: of different subjects. D↔sys = ∫ p(s|H_m) D↔(s) ds, computed
    exactly on the histogram's step densities as Σ_bins P(bin|H_m)·D↔(bin). 0 means the attacker's
    linkage function is useless (fully unlinkable); 1 means every mated pair is certainly linked.
    """
    m = _as_scores(mated, "mated linkage scores")
    nm = _as_scores(nonmated, "non-mated linkage scores")
    if bins < 1 or omega <= 0:
        raise AuditError(f"need bins >= 1 and omega > 0, got {bins}, {omega}")
    edges, p_m, p_nm = _common_histograms(m, nm, bins)
    local = local_linkability(p_m, p_nm, omega)
    width = float(edges[1] - edges[0])
    return Unlinkability(
        bin_centres=(edges[:-1] + edges[1:]) / 2.0,
        bin_width=width,
        local=local,
        mated_density=p_m / width,
        nonmated_density=p_nm / width,
        d_sys=float(np.sum(p_m * local)),
    )


def bootstrap_d_sys(
    mated: npt.ArrayLike,
    nonmated: npt.ArrayLike,
    rng: np.random.Generator,
    rounds: int = 200,
    bins: int = 100,
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of D↔sys (resampling both score sets)."""
    m = _as_scores(mated, "mated linkage scores")
    nm = _as_scores(nonmated, "non-mated linkage scores")
    values = [
        unlinkability(rng.choice(m, m.size), rng.choice(nm, nm.size), bins=bins).d_sys
        for _ in range(rounds)
    ]
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def null_d_sys(
    mated: npt.ArrayLike,
    nonmated: npt.ArrayLike,
    rng: np.random.Generator,
    rounds: int = 100,
    bins: int = 100,
) -> FloatArray:
    """D↔sys values the histogram estimator gives when scores carry *no* link (label permutation).

    The estimator is biased upwards on finite samples: with 150 mated scores in 100 bins, two
    independent uniform score sets already give D↔sys ≈ 0.2. Re-drawing the "mated" set at random
    from the pooled scores shows how large D↔sys gets by chance at this sample size, so a protected
    system is judged against that null distribution, not against 0.
    """
    m = _as_scores(mated, "mated linkage scores")
    pooled = np.concatenate([m, _as_scores(nonmated, "non-mated linkage scores")])
    values = np.empty(rounds)
    for r in range(rounds):
        perm = rng.permutation(pooled.size)
        values[r] = unlinkability(pooled[perm[: m.size]], pooled[perm[m.size :]], bins=bins).d_sys
    return values


def auto_bins(mated_count: int) -> int:
    """Bins for D↔sys: about ten mated scores per bin, between 10 and the paper's 100."""
    return int(min(100, max(10, mated_count // 10)))


# ---------------------------------------------------------------------------------------------
# Uniformity (leakage audit)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UniformityTest:
    """Pearson chi-square goodness-of-fit of observed counts against the uniform distribution."""

    counts: npt.NDArray[np.int64]
    statistic: float
    dof: int
    p_value: float


def chi_square_uniform(positions: npt.ArrayLike, categories: int) -> UniformityTest:
    """Test whether integer observations in ``0..categories-1`` are uniformly distributed.

    Used on "where in B's view did the true match sit": under a correct permutation every position
    is equally likely, so a small p-value is evidence that B's view leaks the match position.
    """
    obs = np.asarray(positions, dtype=np.int64).reshape(-1)
    if categories < 2 or obs.size == 0:
        raise AuditError("need at least two categories and one observation")
    if obs.min() < 0 or obs.max() >= categories:
        raise AuditError(f"observations must lie in 0..{categories - 1}")
    counts = np.bincount(obs, minlength=categories).astype(np.int64)
    result = stats.chisquare(counts)
    return UniformityTest(
        counts=counts,
        statistic=float(result.statistic),
        dof=categories - 1,
        p_value=float(result.pvalue),
    )


__all__ = [
    "AuditError",
    "BoolArray",
    "DetCurve",
    "FloatArray",
    "SearchOutcomes",
    "UniformityTest",
    "Unlinkability",
    "auto_bins",
    "bootstrap_d_sys",
    "chi_square_uniform",
    "det_curve",
    "error_rates",
    "fnir_at_fpir",
    "fnmr_at_fmr",
    "fpir_fnir",
    "identification_det",
    "local_linkability",
    "null_d_sys",
    "rank1_rate",
    "rule_of_three",
    "similarity_from_distance",
    "threshold_at_fmr",
    "trials_for_bound",
    "unlinkability",
    "upper_bound",
]
