"""Pure pieces of ``pura-eval compare``: FPIR extrapolation, TAR at FAR, unit rows, and the
calibration set staying disjoint from the 1:N evaluation people."""

from __future__ import annotations

import numpy as np
import pytest
from pura_client.datasets.lfw import LFWDataset
from pura_client.evaluate import compare_data, fmr_for_fpir, tar_at_far, unit_rows


def test_fmr_for_fpir_inverts_the_rank1_union_bound() -> None:
    for n in (1, 1_000, 100_000):
        fmr = fmr_for_fpir(0.01, n)
        assert 1 - (1 - fmr) ** n == pytest.approx(0.01, rel=1e-9)
    assert fmr_for_fpir(0.01, 1) == pytest.approx(0.01)


def test_tar_at_far_counts_genuine_above_the_impostor_quantile() -> None:
    impostor = np.arange(1000, dtype=np.float64)  # FAR 1e-3 lets one impostor (999) pass:
    genuine = np.array([998.5, 999.5, 2000.0, 10.0, 998.0])  # threshold just above 998
    assert tar_at_far(genuine, impostor, 1e-3) == 0.6


def test_unit_rows_keeps_missing_faces_missing() -> None:
    rows = unit_rows(np.array([[3.0, 4.0], [np.nan, np.nan]]))
    np.testing.assert_allclose(rows[0], [0.6, 0.8])
    assert np.isnan(rows[1]).all()


@pytest.mark.lfw
def test_calibration_people_are_not_evaluation_people(lfw_dataset: LFWDataset) -> None:
    data = compare_data(lfw_dataset, 0, view2=False)
    dev_people = {q.label for p in data.dev_pairs for q in (p.first, p.second)}
    assert dev_people and not dev_people & data.split.used_people
    assert (len(data.split.gallery), len(data.split.probes), len(data.split.non_enrolled)) == (
        1000, 4705, 1000)
    assert len(data.paths) == len(set(data.paths))
