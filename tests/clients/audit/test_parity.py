"""Accuracy parity, read from the recordings of real servers (a small ``pura-audit views`` run)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pura_client.audit.parity import encrypted_outcomes, plaintext_outcomes, run_parity
from pura_client.audit.recorded import RecordedRun


@pytest.mark.lfw
@pytest.mark.slow
def test_parity_of_the_recorded_servers(recorded_run: RecordedRun, tmp_path: Path) -> None:
    rec = recorded_run
    queries = rec.queries
    assert len(queries) == len(rec.run.probes) > 0
    # every query reached the exact stage with B's served candidates, opened by the auditor
    assert all(len(q.candidates) == len(queries[0].candidates) > 1 for q in queries)
    assert all(not c.startswith("unknown-") for q in queries for c in q.candidates)
    result = run_parity(rec, tmp_path)
    m = result.metrics
    assert m["decision_disagreements_with_exact_stage"] == 0
    assert m["mated_searches"] + m["nonmated_searches"] == len(queries)
    assert all("--record" in cmd for cmd in m["servers"])  # type: ignore[union-attr]
    assert result.passed is True and (tmp_path / "parity_det.png").exists()
    plain, enc = plaintext_outcomes(rec), encrypted_outcomes(rec)
    assert plain.mated_best.size == enc.mated_best.size == m["mated_searches"]


@pytest.mark.lfw
@pytest.mark.slow
def test_parity_catches_an_answer_the_exact_stage_did_not_give(
    recorded_run: RecordedRun, tmp_path: Path
) -> None:
    """A run whose log says a non-mated probe was answered with an enrolled subject (what a
    broken secure comparison would do) must fail parity."""
    doctored = RecordedRun(recorded_run.out, faces=recorded_run.faces)
    probe = next(p for p in doctored.run.probes if not p.mated)
    probe.answer = doctored.faces.enrolled_labels[0]
    result = run_parity(doctored, tmp_path)
    assert result.metrics["decision_disagreements_with_exact_stage"] == 1
    assert result.passed is False
