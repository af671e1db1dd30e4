"""numpy reproduction of dlib's get_face_chip: geometry known answers and pixel equality with
dlib-bin on real LFW faces."""

from __future__ import annotations

import math

import dlib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pura_client.datasets.lfw import LFWDataset, identification_split
from pura_client.embedding.chip import (
    extract_chip,
    face_chip_details,
    needs_pyramid,
    similarity_transform,
)
from pura_client.embedding.detect import FaceLocator
from pura_client.embedding.image import load_rgb
from pura_client.embedding.pipeline import Embedder


@settings(max_examples=50, deadline=None)
@given(
    angle=st.floats(-math.pi, math.pi),
    scale=st.floats(0.2, 5.0),
    tx=st.floats(-500, 500),
    ty=st.floats(-500, 500),
)
def test_similarity_transform_recovers_exact_maps(
    angle: float, scale: float, tx: float, ty: float
) -> None:
    src = np.array([[0.0, 0.0], [10.0, 0.0], [3.0, 7.0], [8.0, 9.0], [5.0, 2.0]])
    m = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    dst = src @ m.T + [tx, ty]
    got_m, got_t = similarity_transform(src, dst)
    np.testing.assert_allclose(got_m, m, atol=1e-9 * max(1.0, scale))
    np.testing.assert_allclose(got_t, [tx, ty], atol=1e-7)


def test_similarity_transform_never_reflects() -> None:
    src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mirrored = src * [-1.0, 1.0]
    m, _ = similarity_transform(src, mirrored)
    assert np.linalg.det(m) > 0


def test_landmark_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="5 landmarks"):
        face_chip_details(np.zeros((68, 2)))


@pytest.fixture(scope="module")
def locator() -> FaceLocator:
    return FaceLocator(cnn_fallback=False)


@pytest.mark.lfw
def test_chips_equal_dlib_pixels_on_lfw(locator: FaceLocator, lfw_dataset: LFWDataset) -> None:
    split = identification_split(40, seed=5, n_non_enrolled=0, dataset=lfw_dataset)
    compared = 0
    for item in split.gallery:
        rgb = load_rgb(item.path)
        box = locator.detect(rgb).largest
        if box is None:
            continue
        shape = locator.shape(rgb, box)
        details = face_chip_details(FaceLocator.points(shape))
        reference = dlib.get_face_chip(rgb, shape, 150, 0.25)
        dlib_details = dlib.get_face_chip_details(shape, 150, 0.25)
        assert details.angle == pytest.approx(dlib_details.angle, abs=1e-12)
        assert details.rect[0] == pytest.approx(dlib_details.rect.left(), abs=1e-9)
        assert not needs_pyramid(details)
        np.testing.assert_array_equal(extract_chip(rgb, details), reference)
        compared += 1
    assert compared >= 35


@pytest.mark.lfw
def test_large_faces_use_dlib_pyramid_path(lfw_dataset: LFWDataset) -> None:
    big = np.asarray(
        Image.open(lfw_dataset.image_path("Tony_Blair", 1)).resize((1000, 1000)), np.uint8
    )
    embedder = Embedder(device="cpu", cnn_fallback=False)
    box = embedder.locator.detect(big).largest
    assert box is not None
    shape = embedder.locator.shape(big, box)
    assert needs_pyramid(face_chip_details(FaceLocator.points(shape)))
    np.testing.assert_array_equal(
        embedder.chip(big, box), dlib.get_face_chip(big, shape, 150, 0.25)
    )
