"""Torch port of dlib's CNN (MMOD) face detector: file structure, pyramid geometry, resampling,
and identical detections to dlib-bin on real LFW images."""

from __future__ import annotations

import dlib
import numpy as np
import pytest
import torch
from pura_client.datasets.lfw import LFWDataset, identification_split
from pura_client.embedding.dlib_format import read_network
from pura_client.embedding.image import load_rgb
from pura_client.embedding.mmod import TorchCnnFaceDetector, pyramid_rects, resize_bilinear
from pura_client.embedding.models import MMOD_FILE, model_file

from pura.errors import ConfigError


@pytest.fixture(scope="module")
def detector() -> TorchCnnFaceDetector:
    return TorchCnnFaceDetector("cpu")


def test_detector_file_structure() -> None:
    net = read_network(model_file(MMOD_FILE))
    assert net.loss.name == "loss_mmod_" and net.loss.ints == (80, 80)
    assert net.loss.reals[3] == pytest.approx(0.3383, abs=1e-4)  # NMS overlap threshold
    names = [layer.name for layer in net.layers]
    assert names[0] == "input_rgb_image_pyramid" and net.layers[0].ints == (10, 11)
    assert names.count("con_4") == 7 and names.count("bn_con2") == 6
    assert net.layers[-1].ints == (1, 9, 9, 1, 1, 4, 4)


def test_pyramid_layout_for_lfw_size() -> None:
    rects, height, width = pyramid_rects(250, 250)
    assert rects[0] == (11, 11, 260, 260) and width == 272
    sides = [r[2] - r[0] + 1 for r in rects]
    assert sides[:4] == [250, 208, 173, 144]  # floor(5/6 * previous)
    assert all(r[0] >= 0 and r[1] >= 0 and r[2] < width and r[3] < height for r in rects)
    for i, a in enumerate(rects):  # levels never overlap
        for b in rects[i + 1 :]:
            assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]


def test_resize_bilinear_is_corner_aligned() -> None:
    src = torch.tensor([[[0.0, 2.0], [4.0, 6.0]]])
    out = resize_bilinear(src, 3, 3)
    assert out.shape == (1, 3, 3)
    assert out[0].tolist() == [[0.0, 1.0, 2.0], [2.0, 3.0, 4.0], [4.0, 5.0, 6.0]]


@pytest.mark.lfw
def test_same_detections_as_dlib(detector: TorchCnnFaceDetector, lfw_dataset: LFWDataset) -> None:
    reference = dlib.cnn_face_detection_model_v1(str(model_file(MMOD_FILE)))
    split = identification_split(10, seed=4, n_non_enrolled=0, dataset=lfw_dataset)
    images = [load_rgb(g.path) for g in split.gallery]
    images.append(np.tile(np.linspace(0, 255, 180, dtype=np.uint8), (140, 1))[:, :, None]
                  .repeat(3, axis=2))  # no face
    found = 0
    for rgb in images:
        theirs = [(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom(), d.confidence)
                  for d in reference(rgb, 0)]
        ours = detector.detect(rgb)
        assert [d.box for d in ours] == [t[:4] for t in theirs]
        for d, t in zip(ours, theirs, strict=True):
            assert d.score == pytest.approx(t[4], abs=1e-4)
        found += len(ours)
    assert found >= 10  # the comparison is not vacuous
    assert detector.detect(images[-1]) == []


@pytest.mark.lfw
def test_torch_cnn_fallback_in_the_embedder(lfw_dataset: LFWDataset) -> None:
    """Images HOG misses: the torch CNN fallback finds dlib-bin's CNN box, at upsample 1."""
    from pura_client.embedding.pipeline import Embedder

    paths = [
        lfw_dataset.image_path("Abdoulaye_Wade", 3),
        lfw_dataset.image_path("Billy_Andrade", 1),
    ]
    with_torch = Embedder(device="cpu", cnn_backend="torch", workers=1)
    with_dlib = Embedder(device="cpu", cnn_backend="dlib", workers=1)
    assert "+tcnn" in with_torch.model_id and "+cnn" in with_dlib.model_id
    ours, theirs = with_torch.embed_results(paths), with_dlib.embed_results(paths)
    for a, b in zip(ours, theirs, strict=True):
        assert a.detector == b.detector == "cnn"
        assert a.box == b.box
        assert a.descriptor is not None and b.descriptor is not None
        assert np.abs(a.descriptor - b.descriptor).max() <= 1e-4
    with pytest.raises(ConfigError, match="cnn_backend"):
        Embedder(device="cpu", cnn_backend="tpu")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="upsample"):
        with_torch.torch_cnn.detect(load_rgb(paths[0]), upsample=-1)  # type: ignore[union-attr]
