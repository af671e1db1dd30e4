"""Template inversion: key-free derivations, the average face, the unattributed-row bound, and a
tiny real attack with the server views read from a recorded run of real servers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pura_client.audit._inversion_setup as _inversion_setup
import pytest
from pura_client.audit.inversion import (
    Victim,
    average_face,
    bytes_to_vector,
    masked_values_to_vector,
    perfect_inverter_bound,
    rows_source,
)
from pura_client.audit.metrics import AuditError
from pura_client.audit.recorded import RecordedRun


def test_bytes_to_vector_is_unit_and_deterministic() -> None:
    data = bytes(i // 4 for i in range(1024))  # a ramp 0..255
    v = bytes_to_vector(data, 8)
    assert v.shape == (8,) and np.isclose(np.linalg.norm(v), 1.0)
    assert np.array_equal(v, bytes_to_vector(data, 8))
    assert np.all(np.diff(v) > 0)  # chunk means increase along this ramp
    with pytest.raises(AuditError):
        bytes_to_vector(b"abc", 8)


def test_masked_values_without_mask_give_back_the_template() -> None:
    s = 4
    q = np.array([-16, -3, 0, 7, 16])
    v = masked_values_to_vector([int(x) + (1 << s) for x in q], s)
    expected = ((q + (1 << s)) % (1 << (s + 1))) / (1 << s) - 1.0
    assert np.allclose(v, expected / np.linalg.norm(expected))


def test_average_face_checks_shape() -> None:
    chips = [np.full((150, 150, 3), 10, np.uint8), np.full((150, 150, 3), 30, np.uint8)]
    assert np.all(average_face(chips) == 20.0)
    with pytest.raises(AuditError):
        average_face([])
    with pytest.raises(AuditError):
        average_face([np.zeros((10, 10, 3), np.uint8)])


def test_bound_against_all_accepts_a_row_equal_to_anyone() -> None:
    """B's rows cannot be attributed to one person: a row counts when it is within τ of any
    victim, so a row that is somebody's template must be caught."""
    rng = np.random.default_rng(0)
    people = rng.standard_normal((5, 16))
    people /= np.linalg.norm(people, axis=1, keepdims=True)
    victims = [Victim(f"p{i}", people[i], people[i]) for i in range(5)]
    leaked = np.vstack([rng.standard_normal((3, 16)), people[3:4]])
    leaked /= np.linalg.norm(leaked, axis=1, keepdims=True)
    hits, n = perfect_inverter_bound(rows_source(leaked), victims, 4, -0.1, against_all=True)
    assert (hits, n) == (1, 4)
    hits, _ = perfect_inverter_bound(rows_source(leaked[:3]), victims, 3, -0.1, against_all=True)
    assert hits == 0


@pytest.mark.lfw
@pytest.mark.slow
def test_inversion_with_the_torch_model_and_recorded_server_views(
    recorded_run: RecordedRun, tmp_path: Path
) -> None:
    rec = recorded_run
    views = _inversion_setup.server_views(rec)
    assert set(views) == {"A: stored Paillier template", "B: masked values in the exact stage"}
    assert views["A: stored Paillier template"].attempts == rec.config.people
    rows = sum(len(q.candidates) for q in rec.queries)
    assert views["B: masked values in the exact stage"].attempts == rows
    result = _inversion_setup.run(rec, tmp_path, victims=2, steps=25)
    m = result.metrics
    assert m["plaintext_sar_type1"] == 1.0  # the white-box attack reaches the leaked template
    assert m["server_view_accepts"] == 0
    assert m["system_threshold_sq_distance"] == pytest.approx(rec.tau)  # the servers' τ
    assert (tmp_path / "inversion.png").stat().st_size > 10_000
