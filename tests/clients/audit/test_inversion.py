"""Template inversion: key-free derivations, the average face, a tiny real attack on LFW."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pura_client.audit._inversion_setup as _inversion_setup
import pytest
from pura_client.audit.data import AuditData
from pura_client.audit.inversion import (
    GradientInverter,
    InversionConfig,
    ServerView,
    average_face,
    bytes_to_vector,
    masked_values_to_vector,
    per_victim,
    run_inversion,
)
from pura_client.audit.metrics import AuditError


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


@pytest.mark.lfw
@pytest.mark.slow
def test_inversion_on_lfw_with_the_torch_model(audit_data: AuditData, tmp_path: Path) -> None:
    from pura_client.embedding.resnet import load_dlib_resnet

    chips = _inversion_setup.ChipSource()
    victims = _inversion_setup.victims_of(audit_data, chips, 2)
    public = [
        c for c in (chips.chip(n) for n in audit_data.public.identities()[:8]) if c is not None
    ]
    inverter = GradientInverter(load_dlib_resnet(), InversionConfig(steps=25))
    views = {
        "random bytes": ServerView(
            per_victim(lambda v: bytes_to_vector(np.random.default_rng(0).bytes(4096))), 200
        )
    }
    result = run_inversion(inverter, victims, public, audit_data.public, views, tmp_path)
    m = result.metrics
    assert m["plaintext_sar_type1"] == 1.0  # the white-box attack reaches the leaked template
    assert m["server_view_accepts"] == 0 and m["server_view_attempts_per_view"] == 200
    assert (tmp_path / "inversion.png").stat().st_size > 10_000
