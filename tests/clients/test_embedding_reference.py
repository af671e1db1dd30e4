"""dlib-bin reference pipeline on real LFW images: results, bad input, policies, the cache."""

from __future__ import annotations

import io
from pathlib import Path

import dlib
import numpy as np
import pytest
from PIL import Image
from pura_client.datasets.lfw import LFWDataset
from pura_client.embedding.batch import embed_files, stack_descriptors
from pura_client.embedding.cache import EmbeddingCache
from pura_client.embedding.image import load_rgb
from pura_client.embedding.models import RESNET_FILE, model_file
from pura_client.embedding.reference import DlibReferenceEmbedder
from pura_client.embedding.types import FaceResult, MultiFacePolicy

from pura.errors import FaceError


@pytest.fixture(scope="module")
def embedder() -> DlibReferenceEmbedder:
    return DlibReferenceEmbedder()


def _distance(a: FaceResult, b: FaceResult) -> float:
    assert a.descriptor is not None and b.descriptor is not None
    return float(np.linalg.norm(a.descriptor - b.descriptor))


def test_same_person_closer_than_different(
    embedder: DlibReferenceEmbedder, lfw_dataset: LFWDataset
) -> None:
    bush1 = embedder.embed_image(lfw_dataset.image_path("George_W_Bush", 1))
    bush2 = embedder.embed_image(lfw_dataset.image_path("George_W_Bush", 2))
    blair = embedder.embed_image(lfw_dataset.image_path("Tony_Blair", 1))
    assert bush1.found and bush1.detector == "hog" and bush1.n_faces == 1
    assert bush1.descriptor is not None and bush1.descriptor.dtype == np.float32
    assert _distance(bush1, bush2) < 0.6 < _distance(bush1, blair)


def test_chip_path_equals_dlib_full_path(
    embedder: DlibReferenceEmbedder, lfw_dataset: LFWDataset
) -> None:
    rgb = load_rgb(lfw_dataset.image_path("Abel_Pacheco", 1))
    result = embedder.embed_rgb(rgb)
    assert result.box is not None and result.descriptor is not None
    shape = embedder.landmarks(rgb, result.box)
    net = dlib.face_recognition_model_v1(str(model_file(RESNET_FILE)))
    direct = np.asarray(net.compute_face_descriptor(rgb, shape), np.float32)
    np.testing.assert_allclose(result.descriptor, direct, atol=1e-6)


def test_no_face_is_a_result(embedder: DlibReferenceEmbedder) -> None:
    gradient = np.tile(np.linspace(0, 255, 160, dtype=np.uint8), (120, 1))
    result = embedder.embed_image(gradient)
    assert not result.found and result.n_faces == 0 and result.box is None


def test_grayscale_and_rgba_inputs(
    embedder: DlibReferenceEmbedder, lfw_dataset: LFWDataset
) -> None:
    path = lfw_dataset.image_path("Tony_Blair", 3)
    colour = embedder.embed_image(path)
    gray = Image.open(path).convert("L")
    rgba = Image.open(path).convert("RGBA")
    as_gray = embedder.embed_image(gray)
    as_rgba = embedder.embed_image(rgba)
    assert as_gray.found and as_rgba.found
    assert _distance(colour, as_gray) < 0.3
    assert _distance(colour, as_rgba) < 1e-6


@pytest.mark.parametrize(
    "bad",
    [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 50],
)
def test_unreadable_bytes_raise_face_error(embedder: DlibReferenceEmbedder, bad: bytes) -> None:
    with pytest.raises(FaceError, match="unreadable"):
        embedder.embed_image(bad)


def test_tiny_and_malformed_arrays_raise(embedder: DlibReferenceEmbedder) -> None:
    with pytest.raises(FaceError, match="too small"):
        embedder.embed_image(np.zeros((20, 200, 3), np.uint8))
    with pytest.raises(FaceError, match="uint8"):
        embedder.embed_image(np.zeros((100, 100, 3), np.float32))
    with pytest.raises(FaceError, match="shape"):
        embedder.embed_image(np.zeros((100, 100, 2), np.uint8))
    with pytest.raises(FaceError, match="cannot read"):
        embedder.embed_image(Path("/nonexistent/face.jpg"))


def _two_faces(lfw_dataset: LFWDataset) -> bytes:
    left = Image.open(lfw_dataset.image_path("George_W_Bush", 1))
    right = Image.open(lfw_dataset.image_path("Tony_Blair", 1)).resize((125, 125))
    canvas = Image.new("RGB", (440, 250))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (280, 60))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def test_multiple_faces_policy(embedder: DlibReferenceEmbedder, lfw_dataset: LFWDataset) -> None:
    group = _two_faces(lfw_dataset)
    largest = embedder.embed_image(group)
    bush = embedder.embed_image(lfw_dataset.image_path("George_W_Bush", 1))
    assert largest.n_faces == 2 and largest.box is not None and largest.box[0] < 220
    assert _distance(largest, bush) < 0.1
    strict = DlibReferenceEmbedder(policy=MultiFacePolicy.STRICT)
    with pytest.raises(FaceError, match="2 faces"):
        strict.embed_image(group)
    assert strict.embed_image(lfw_dataset.image_path("Tony_Blair", 1)).found


def test_embed_files_uses_the_cache(
    embedder: DlibReferenceEmbedder, lfw_dataset: LFWDataset, tmp_path: Path
) -> None:
    cache = EmbeddingCache(tmp_path)
    paths = [lfw_dataset.image_path("Tony_Blair", i) for i in (1, 2)]
    first = embed_files(embedder, paths, cache=cache)
    entries = list(tmp_path.rglob("*.npy"))
    assert len(entries) == 2
    for entry in entries:  # poison the stored records: a hit must return exactly what is stored
        stored = np.load(entry)
        stored[6:] = 0.5
        np.save(entry, stored)
    second = embed_files(embedder, paths, cache=cache)
    assert all(r.descriptor is not None and np.all(r.descriptor == 0.5) for r in second)
    assert [r.box for r in second] == [r.box for r in first]
    assert stack_descriptors(first).shape == (2, 128)


def test_detection_pick_policies() -> None:
    from pura_client.embedding.detect import Detection

    det = Detection(((0, 0, 99, 99), (140, 60, 179, 99)), "hog")
    assert det.largest == (0, 0, 99, 99)
    assert det.pick(MultiFacePolicy.LARGEST, 320, 160) == (0, 0, 99, 99)
    assert det.pick(MultiFacePolicy.CENTER, 320, 160) == (140, 60, 179, 99)
    assert det.pick(MultiFacePolicy.STRICT, 320, 160) == (0, 0, 99, 99)
    assert Detection((), "").pick(MultiFacePolicy.CENTER, 10, 10) is None
