"""The on-disk embedding cache: round trips, atomicity, key validation, concurrent writers."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pura_client.embedding.cache import EmbeddingCache, default_cache_dir, sha256_hex
from pura_client.embedding.types import FaceResult, decode_result, encode_result

from pura.errors import ConfigError

MODEL = "test-model_v1"


def test_sha256_known_answer() -> None:
    # FIPS 180-2 test vector for "abc".
    assert sha256_hex(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_default_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PURA_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    assert EmbeddingCache().root == tmp_path


def test_miss_then_hit(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    key = sha256_hex(b"image bytes")
    assert cache.get(MODEL, key) is None
    assert (MODEL, key) not in cache
    value = np.arange(128, dtype=np.float32)
    cache.put(MODEL, key, value)
    assert (MODEL, key) in cache
    got = cache.get(MODEL, key)
    assert got is not None and got.dtype == np.float32
    np.testing.assert_array_equal(got, value)
    assert cache.get("other-model", key) is None
    assert not list(tmp_path.rglob(".tmp-*"))


def test_corrupt_entry_is_a_miss(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    key = sha256_hex(b"x")
    cache.put(MODEL, key, np.ones(3))
    cache.path_for(MODEL, key).write_bytes(b"\x93NUMPY truncated")
    assert cache.get(MODEL, key) is None


@pytest.mark.parametrize("model_id", ["", "../escape", "a/b", "x" * 200, ".hidden"])
def test_bad_model_ids_rejected(tmp_path: Path, model_id: str) -> None:
    with pytest.raises(ConfigError):
        EmbeddingCache(tmp_path).path_for(model_id, sha256_hex(b""))


@pytest.mark.parametrize("digest", ["", "ab", "G" * 64, "A" * 64, "0" * 63 + "/"])
def test_bad_digests_rejected(tmp_path: Path, digest: str) -> None:
    with pytest.raises(ConfigError):
        EmbeddingCache(tmp_path).path_for(MODEL, digest)


def test_concurrent_writers_and_readers(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    key = sha256_hex(b"shared")
    value = np.linspace(-1, 1, 128)
    torn: list[object] = []

    def writer() -> None:
        for _ in range(30):
            cache.put(MODEL, key, value)

    def reader() -> None:
        for _ in range(60):
            got = cache.get(MODEL, key)
            if got is not None and not np.array_equal(got, value):
                torn.append(got)

    threads = [threading.Thread(target=f) for f in (writer, writer, reader, reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torn == []
    assert not list(tmp_path.rglob(".tmp-*"))


@settings(max_examples=50, deadline=None)
@given(
    descriptor=st.one_of(
        st.none(),
        arrays(np.float32, 128, elements=st.floats(-1, 1, width=32)),
    ),
    n_faces=st.integers(0, 9),
    box=st.one_of(st.none(), st.tuples(*[st.integers(-50, 500)] * 2).map(
        lambda lt: (lt[0], lt[1], lt[0] + 40, lt[1] + 40))),
    detector=st.sampled_from(["", "hog", "cnn"]),
)
def test_result_record_round_trip(
    descriptor: np.ndarray | None,
    n_faces: int,
    box: tuple[int, int, int, int] | None,
    detector: str,
) -> None:
    result = FaceResult(descriptor, n_faces, box, detector)
    back = decode_result(encode_result(result))
    assert back is not None
    assert (back.n_faces, back.box, back.detector) == (n_faces, box, detector)
    if descriptor is None:
        assert back.descriptor is None
    else:
        assert back.descriptor is not None
        np.testing.assert_array_equal(back.descriptor, descriptor)


@pytest.mark.parametrize(
    "value", [np.zeros(5), np.zeros(200), np.array([1, 7, 0, 0, 1, 1.0]), np.full(6, np.nan)]
)
def test_malformed_records_decode_to_none(value: np.ndarray) -> None:
    assert decode_result(value) is None


def test_repr_hides_descriptor() -> None:
    text = repr(FaceResult(np.full(128, 0.123456, np.float32), 1, (1, 2, 3, 4), "hog"))
    assert "0.123" not in text and "descriptor" in text


def test_entries_are_owner_only(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c")
    key = sha256_hex(b"face")
    cache.put(MODEL, key, np.zeros(4))
    path = cache.path_for(MODEL, key)
    assert path.stat().st_mode & 0o077 == 0
    assert path.parent.stat().st_mode & 0o077 == 0
