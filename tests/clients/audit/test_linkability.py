"""Linkability: key-free linkage functions, a leaky control, and what two real deployments
stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pura_client.audit.linkability import (
    LinkabilityConfig,
    TwoApplications,
    bit_similarity,
    byte_correlation,
    byte_equality,
    mated_nonmated,
    run_linkability,
    run_recorded_linkability,
    size_similarity,
)
from pura_client.audit.recorded import RecordedRun


def test_linkage_functions_known_answers() -> None:
    a = [bytes([1, 2, 3, 4]), bytes([0, 0, 0, 0])]
    b = [bytes([1, 2, 3, 4]), bytes([255, 255, 255, 255]), bytes([1, 2])]
    eq = byte_equality(a, b)
    assert eq[0, 0] == 1.0 and eq[1, 1] == 0.0 and eq[0, 2] == 0.5
    bits = bit_similarity(a, b)
    assert bits[0, 0] == 1.0 and bits[1, 1] == 0.0
    assert byte_correlation(a, b)[0, 0] == pytest.approx(1.0)
    assert size_similarity(a, b).tolist() == [[0.0, 0.0, -2.0], [0.0, 0.0, -2.0]]


def test_mated_split_is_the_diagonal() -> None:
    mated, nonmated = mated_nonmated(np.arange(9.0).reshape(3, 3))
    assert mated.tolist() == [0.0, 4.0, 8.0] and nonmated.size == 6


def test_linkage_is_detected_on_leaky_records(tmp_path: Path) -> None:
    """Records that carry the template (coarsely quantised bytes) must be flagged linkable:
    the evaluation can fail."""
    rng = np.random.default_rng(0)
    people = rng.standard_normal((40, 32))
    app1 = people + 0.2 * rng.standard_normal((40, 32))
    app2 = people + 0.2 * rng.standard_normal((40, 32))
    apps = TwoApplications(app1 / np.linalg.norm(app1, axis=1, keepdims=True),
                           app2 / np.linalg.norm(app2, axis=1, keepdims=True),
                           tuple(f"p{i}" for i in range(40)))

    def leaky(m: np.ndarray) -> list[bytes]:
        return [np.round(v * 60).astype(np.int8).tobytes() for v in m]

    config = LinkabilityConfig(people=40, bootstrap_rounds=20, null_rounds=200)
    result = run_linkability(apps, {"leaky": (leaky(apps.app1), leaky(apps.app2))},
                             tmp_path, config)
    rows = result.tables["D↔sys per linkage function"]
    assert any(r["linkable"] for r in rows[1:]) and result.passed is False


@pytest.mark.lfw
@pytest.mark.slow
def test_linkability_of_what_two_real_deployments_stored(
    recorded_run: RecordedRun, tmp_path: Path
) -> None:
    """Application 1: the recorded run's A store; application 2: a second pair of real servers
    with fresh keys enrolling the second images of the same people."""
    config = LinkabilityConfig(people=16, bootstrap_rounds=30, null_rounds=200)
    result = run_recorded_linkability(recorded_run, tmp_path, config, log=lambda _: None)
    assert result.metrics["plaintext_d_sys"] > 0.8
    rows = result.tables["D↔sys per linkage function"]
    assert rows[0]["linkable"] is True
    assert [r["record"] for r in rows[1:]] == ["A: stored Paillier template"] * 4
    assert not any(r["linkable"] for r in rows[1:])
    assert result.metrics["mated_pairs"] == 16
    assert (recorded_run.out / "link" / "work" / "record" / "a" / "data" / "gallery.db").exists()
    assert result.passed is True
