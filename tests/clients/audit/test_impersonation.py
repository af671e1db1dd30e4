"""Impersonation: the synthetic families, false-accept counting, a small run on LFW."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pura_client.audit.data import AuditData
from pura_client.audit.impersonation import (
    ImpersonationConfig,
    false_accepts,
    master_embeddings,
    population_embeddings,
    run_impersonation,
    size_threshold,
    subsphere_embeddings,
)
from pura_client.audit.metrics import AuditError


def test_false_accepts_known_answer() -> None:
    gallery = np.eye(3)
    probes = np.array([[1.0, 0, 0], [0, 0.6, 0.8], [-1.0, 0, 0]])
    # squared distances to the nearest template: 0, 0.4, 2
    assert false_accepts(probes, gallery, -0.5) == 2
    assert false_accepts(probes, gallery, -0.1) == 1


def test_synthetic_families_are_unit_vectors() -> None:
    rng = np.random.default_rng(0)
    public = rng.normal(size=(200, 16)) + 3.0
    for probes in (
        master_embeddings(public, 50, 0.01, rng),
        subsphere_embeddings(public, 50, 4, 0.25, rng),
        population_embeddings(public, 50, rng),
    ):
        assert probes.shape == (50, 16)
        assert np.allclose(np.linalg.norm(probes, axis=1), 1.0)
    with pytest.raises(AuditError):
        subsphere_embeddings(public[:5], 10, 4, 0.25, rng)


def test_size_threshold_needs_enough_calibration_searches() -> None:
    with pytest.raises(AuditError):
        size_threshold(np.eye(3), np.eye(3), 0.003)


@pytest.mark.lfw
def test_impersonation_on_lfw(audit_data: AuditData, tmp_path: Path) -> None:
    config = ImpersonationConfig(attempts=3000, gallery_sizes=(10, 100))
    result = run_impersonation(
        audit_data.enrolled, audit_data.public, audit_data.nonmated, tmp_path, config
    )
    rows = result.tables["false-accept rate by gallery size and threshold"]
    assert len(rows) == 4 and result.metrics["rule_of_three_bound"] == pytest.approx(0.001)
    fixed = [r for r in rows if str(r["threshold"]).startswith("FMR")]
    sized = [r for r in rows if str(r["threshold"]).startswith("FPIR")]
    # the gallery-size threshold is never looser than the per-comparison one
    assert all(s["sq_distance"] <= f["sq_distance"] for s, f in zip(sized, fixed, strict=True))
    # larger galleries at a fixed per-comparison threshold accept at least as many probes
    assert fixed[1]["population sample FPIR"] >= fixed[0]["population sample FPIR"]
    assert (tmp_path / "impersonation.png").exists()
