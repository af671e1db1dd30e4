"""ArcFace 5-point alignment: the Umeyama similarity and the bilinear warp."""

from __future__ import annotations

import numpy as np
import pytest
from pura_client.embedding.align import (
    ARCFACE_TEMPLATE,
    align_face,
    similarity_transform,
    warp_affine,
)

from pura.errors import ConfigError


def _similarity(scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, shift[0]], [scale * s, scale * c, shift[1]]])


def test_recovers_an_exact_similarity() -> None:
    m = _similarity(0.37, 0.3, (12.0, -4.0))
    src = np.random.default_rng(0).uniform(0, 250, (5, 2))
    dst = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(similarity_transform(src, dst), m, atol=1e-9)


def test_never_reflects() -> None:
    src = ARCFACE_TEMPLATE.copy()
    mirrored = src * [-1.0, 1.0]  # best fit would be a reflection
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_rejects_bad_point_sets() -> None:
    with pytest.raises(ConfigError):
        similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))


def test_warp_identity_and_shift() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    same = warp_affine(rgb, np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    np.testing.assert_array_equal(same, rgb)
    shifted = warp_affine(rgb, np.array([[1.0, 0, -3], [0, 1.0, 0]]))  # out(x) = in(x + 3)
    np.testing.assert_array_equal(shifted[:, :-3], rgb[:, 3:])
    assert not shifted[:, -2:].any()  # outside the source: zero border


def test_align_puts_landmarks_on_the_template() -> None:
    """A bright dot at each landmark ends up at the template point after alignment."""
    m = _similarity(2.2, -0.2, (40.0, 25.0))
    marks = ARCFACE_TEMPLATE @ m[:, :2].T + m[:, 2]
    img = np.zeros((400, 400, 3), np.uint8)
    for x, y in marks:
        img[round(y) - 2 : round(y) + 3, round(x) - 2 : round(x) + 3] = 255
    chip = align_face(img, marks)
    for x, y in ARCFACE_TEMPLATE:
        assert chip[round(y), round(x)].min() > 200
