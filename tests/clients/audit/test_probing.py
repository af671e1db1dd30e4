"""Score probing: the oracles, the attacks, a small run on real LFW embeddings, and the run
against a recorded run of real servers (their gallery, threshold and answers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pura_client.audit.data import AuditData, system_threshold
from pura_client.audit.metrics import FloatArray
from pura_client.audit.probing import (
    DecisionOracle,
    InsecureScoreOracle,
    ProbingConfig,
    RecordedDecisions,
    blind_search,
    hill_climb,
    run_probing,
    run_recorded_probing,
)
from pura_client.audit.recorded import RecordedRun

from pura.errors import BudgetExhaustedError


def _unit(v: FloatArray) -> FloatArray:
    out: FloatArray = v / np.linalg.norm(v)
    return out


def test_score_oracle_counts_and_scores() -> None:
    target = _unit(np.ones(4))
    oracle = InsecureScoreOracle(target)
    assert oracle.score(target) == pytest.approx(0.0)
    assert oracle.score(-target) == pytest.approx(-4.0)
    assert oracle.queries == 2 and "queries=2" in repr(oracle)


def test_decision_oracle_enforces_budget_before_answering() -> None:
    target = _unit(np.ones(4))
    oracle = DecisionOracle(target, threshold=-0.1, budget=2)
    assert oracle.accept(target) is True
    assert oracle.accept(-target) is False
    with pytest.raises(BudgetExhaustedError):
        oracle.accept(target)
    assert oracle.queries == 2


def test_hill_climb_reaches_target_and_blind_search_is_blocked() -> None:
    rng = np.random.default_rng(0)
    target = _unit(rng.normal(size=32))
    start = _unit(rng.normal(size=32))
    trace = hill_climb(InsecureScoreOracle(target), start, rng, max_queries=1500, threshold=-0.05)
    assert trace.first_accept is not None and float(trace.estimate @ target) > 0.97
    oracle = DecisionOracle(target, threshold=-0.05, budget=20)
    blind = blind_search(oracle, start, np.zeros(32), np.eye(32), rng)
    assert blind.blocked and blind.queries == 20 and blind.first_accept is None
    assert np.allclose(blind.estimate, start)


@pytest.mark.lfw
def test_probing_on_lfw(audit_data: AuditData, tmp_path: Path) -> None:
    result = run_probing(
        audit_data.enrolled, audit_data.public, tmp_path, ProbingConfig(targets=4, max_queries=1500)
    )
    m = result.metrics
    assert m["score_api_success_rate"] >= 0.75
    assert m["decision_api_success_rate"] == 0.0 and m["decision_api_all_blocked_by_budget"]
    assert m["decision_api_mean_queries"] == 50.0
    assert result.passed is True and (tmp_path / "probing.png").exists()
    assert -system_threshold(audit_data.public) == pytest.approx(m["system_threshold_sq_distance"])


@pytest.mark.lfw
@pytest.mark.slow
def test_probing_the_recorded_servers(recorded_run: RecordedRun, tmp_path: Path) -> None:
    rec = recorded_run
    result = run_recorded_probing(rec, tmp_path, ProbingConfig(targets=3, max_queries=1000))
    m = result.metrics
    assert m["system_threshold_sq_distance"] == pytest.approx(rec.tau)  # the servers' τ
    assert m["recorded_answers"] == len(rec.run.probes)
    assert m["recorded_accepts_beyond_rule"] == 0
    assert m["recorded_answers_agreeing_with_rule"] >= len(rec.run.probes) - 2
    assert m["decision_api_success_rate"] == 0.0 and m["score_api_success_rate"] > 0
    assert result.passed is True


@pytest.mark.lfw
@pytest.mark.slow
def test_recorded_decisions_catch_an_accept_beyond_the_rule(recorded_run: RecordedRun) -> None:
    """Had the servers accepted a non-mated probe as someone, the plaintext oracle would be
    stingier than the product and the probing verdict could not stand."""
    doctored = RecordedRun(recorded_run.out, faces=recorded_run.faces)
    probe = next(p for p in doctored.run.probes if not p.mated and p.answer is None)
    probe.answer = doctored.faces.enrolled_labels[0]
    decisions = RecordedDecisions.of(doctored)
    assert decisions.beyond_rule == 1 and decisions.agree < decisions.queries
