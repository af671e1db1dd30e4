"""The torch Embedder end to end on real LFW images: agreement with dlib-bin, batching,
determinism, devices, bad input and the multi-face policy."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pura_client.datasets.lfw import LFWDataset
from pura_client.embedding.batch import embed_files
from pura_client.embedding.cache import EmbeddingCache
from pura_client.embedding.pipeline import Embedder, resolve_device
from pura_client.embedding.reference import DlibReferenceEmbedder
from pura_client.embedding.types import MultiFacePolicy

from pura.errors import ConfigError, FaceError

pytestmark = pytest.mark.lfw


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    # HOG only: these faces are all found by HOG, and the CNN fallback is slow on CPU.
    return Embedder(device="cpu", batch_size=4, cnn_fallback=False)


@pytest.fixture(scope="module")
def paths(lfw_dataset: LFWDataset) -> list[Path]:
    people = [("George_W_Bush", 3), ("Tony_Blair", 2), ("Serena_Williams", 1)]
    return [lfw_dataset.image_path(name, n) for name, n in people]


def test_matches_dlib_reference_end_to_end(embedder: Embedder, paths: list[Path]) -> None:
    ours = embedder.embed(paths)
    reference = DlibReferenceEmbedder(cnn_fallback=False)
    found = [reference.embed_image(p).descriptor for p in paths]
    theirs = np.stack([d for d in found if d is not None])
    assert ours.shape == (3, 128) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() <= 1e-4


def test_deterministic_and_batch_independent(embedder: Embedder, paths: list[Path]) -> None:
    first = embedder.embed(paths)
    assert np.array_equal(first, embedder.embed(paths))
    singles = np.concatenate([embedder.embed([p]) for p in paths])
    assert np.abs(first - singles).max() <= 1e-5


def test_no_face_row_is_nan_and_aligned(embedder: Embedder, paths: list[Path]) -> None:
    blank = np.full((200, 200, 3), 90, np.uint8)
    out = embedder.embed([paths[0], blank, paths[1]])
    assert np.all(np.isnan(out[1])) and np.all(np.isfinite(out[[0, 2]]))
    results = embedder.embed_results([blank])
    assert not results[0].found and results[0].n_faces == 0


def test_grayscale_rgba_bytes_and_pil_inputs(embedder: Embedder, paths: list[Path]) -> None:
    image = Image.open(paths[1])
    buffer = io.BytesIO()
    image.convert("RGBA").save(buffer, format="PNG")
    colour, gray, rgba, raw = embedder.embed(
        [image, image.convert("L"), buffer.getvalue(), paths[1].read_bytes()]
    )
    assert np.abs(colour - rgba).max() <= 1e-6
    assert np.abs(colour - raw).max() <= 1e-6
    assert np.all(np.isfinite(gray)) and np.linalg.norm(colour - gray) < 0.3


def test_bad_inputs_raise_face_error(embedder: Embedder) -> None:
    with pytest.raises(FaceError, match="unreadable"):
        embedder.embed([b"GIF89a broken"])
    with pytest.raises(FaceError, match="too small"):
        embedder.embed([np.zeros((16, 16, 3), np.uint8)])
    with pytest.raises(ConfigError, match="shape"):
        embedder.embed_chips(np.zeros((1, 100, 100, 3), np.uint8))


def test_multiple_faces_policy(lfw_dataset: LFWDataset) -> None:
    canvas = Image.new("RGB", (440, 250))
    canvas.paste(Image.open(lfw_dataset.image_path("George_W_Bush", 1)), (0, 0))
    canvas.paste(
        Image.open(lfw_dataset.image_path("Tony_Blair", 1)).resize((125, 125)), (280, 60)
    )
    group = np.asarray(canvas)
    largest = Embedder(device="cpu", cnn_fallback=False).embed_results([group])[0]
    assert largest.n_faces == 2 and largest.box is not None and largest.box[0] < 220
    with pytest.raises(FaceError, match="2 faces"):
        Embedder(device="cpu", cnn_fallback=False, policy=MultiFacePolicy.STRICT).embed([group])


def test_device_selection() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            Embedder(device="cuda")
    with pytest.raises(ConfigError, match="batch_size"):
        Embedder(device="cpu", batch_size=0)


def test_embed_files_through_cache(embedder: Embedder, paths: list[Path], tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    first = embed_files(embedder, paths, cache=cache, chunk=2)
    assert len(list(tmp_path.rglob("*.npy"))) == len(paths)
    second = embed_files(embedder, paths, cache=cache)
    for a, b in zip(first, second, strict=True):
        assert a.descriptor is not None and b.descriptor is not None
        assert np.array_equal(a.descriptor, b.descriptor) and a.box == b.box
    assert "torch-" in embedder.model_id and "cpu" in repr(embedder)


def test_center_policy_and_its_cache_records(lfw_dataset: LFWDataset, tmp_path: Path) -> None:
    """A large bystander on the left, the (smaller) subject in the centre of the picture."""
    canvas = Image.new("RGB", (600, 250))
    canvas.paste(Image.open(lfw_dataset.image_path("George_W_Bush", 1)), (0, 0))
    canvas.paste(
        Image.open(lfw_dataset.image_path("Tony_Blair", 1)).resize((140, 140)), (230, 55)
    )
    group = tmp_path / "group.png"
    canvas.save(group)
    cache = EmbeddingCache(tmp_path / "cache")
    largest_embedder = Embedder(device="cpu", cnn_fallback=False)
    center_embedder = Embedder(device="cpu", cnn_fallback=False, policy=MultiFacePolicy.CENTER)
    largest = embed_files(largest_embedder, [group], cache=cache)[0]
    center = embed_files(center_embedder, [group], cache=cache)[0]
    assert largest.box is not None and center.box is not None
    assert largest.box[0] < 200 < center.box[0]  # Bush (largest) vs Blair (central)
    blair = center_embedder.embed([lfw_dataset.image_path("Tony_Blair", 1)])[0]
    assert center.descriptor is not None
    assert np.linalg.norm(center.descriptor - blair) < 0.45
    ids = sorted(p.parent.parent.name for p in (tmp_path / "cache").rglob("*.npy"))
    assert ids == [largest_embedder.model_id, largest_embedder.model_id + "-center"]
    # cached lookups return each policy's own face
    again_l = embed_files(largest_embedder, [group], cache=cache)[0]
    again_c = embed_files(center_embedder, [group], cache=cache)[0]
    assert (again_l.box, again_c.box) == (largest.box, center.box)


def test_detection_threads_do_not_change_results(lfw_dataset: LFWDataset) -> None:
    """Worker threads each get their own dlib detector (dlib's are not thread-safe)."""
    people = ["Laura_Bush", "Gerhard_Schroeder", "Jean_Chretien", "Ariel_Sharon"]
    images = [lfw_dataset.image_path(name, i) for name in people for i in (1, 2)]
    serial = Embedder(device="cpu", cnn_fallback=False, workers=1).embed(images)
    threaded = Embedder(device="cpu", cnn_fallback=False, workers=2)
    assert np.array_equal(threaded.embed(images), serial)
    assert np.array_equal(threaded.embed(images), serial)  # persistent pool, same answers
    with pytest.raises(ConfigError, match="workers"):
        Embedder(device="cpu", workers=0)
