"""Embed many image files through the on-disk cache, with a progress bar for long runs.

Works with any pipeline exposing ``model_id``, ``policy`` and ``embed_rgb_many`` (the reference
dlib pipeline and the torch :class:`~pura_client.embedding.pipeline.Embedder`). Cache records
(see :func:`encode_result`) are shared by LARGEST and STRICT (STRICT is enforced after lookup);
CENTER shares them for images with at most one face and keeps its own record otherwise
(:func:`record_id`), so switching policy only recomputes the multi-face images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
from rich.progress import Progress

from pura_client.embedding.cache import EmbeddingCache, sha256_hex
from pura_client.embedding.image import load_rgb, read_bytes
from pura_client.embedding.types import (
    FaceResult,
    MultiFacePolicy,
    apply_policy,
    decode_result,
    encode_result,
)

PROGRESS_THRESHOLD = 50
"""Show a progress bar (when asked) only for runs longer than this many images."""


class ImagePipeline(Protocol):
    """What :func:`embed_files` needs from a face pipeline."""

    @property
    def model_id(self) -> str: ...

    @property
    def policy(self) -> MultiFacePolicy: ...

    def embed_rgb_many(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[FaceResult]: ...


def embed_files(
    pipeline: ImagePipeline,
    paths: Sequence[Path | str],
    *,
    cache: EmbeddingCache | None = None,
    progress: bool = False,
    chunk: int = 32,
) -> list[FaceResult]:
    """One :class:`FaceResult` per path, computed at most once per (model id, image bytes).

    ``cache=None`` disables caching. Misses are embedded ``chunk`` images at a time through
    ``pipeline.embed_rgb_many`` (one network batch). Unreadable images raise FaceError (input
    errors, not results); the multi-face policy of ``pipeline`` is applied to every result.
    """
    results: list[FaceResult] = []
    show = progress and len(paths) > PROGRESS_THRESHOLD
    with Progress(disable=not show, transient=True) as bar:
        task = bar.add_task(f"embedding ({pipeline.model_id})", total=len(paths))
        for start in range(0, len(paths), chunk):
            part = paths[start : start + chunk]
            results.extend(_embed_chunk(pipeline, part, cache))
            bar.advance(task, len(part))
    return [apply_policy(r, pipeline.policy) for r in results]


def record_id(pipeline: ImagePipeline, n_faces: int) -> str:
    """Cache id of a result: the pipeline's model id, plus ``-center`` when the CENTER policy
    chose among several faces (then the face may differ from LARGEST's; with at most one face
    every policy embeds the same face and the records are shared)."""
    if pipeline.policy is MultiFacePolicy.CENTER and n_faces > 1:
        return f"{pipeline.model_id}-center"
    return pipeline.model_id


def _get(cache: EmbeddingCache, model_id: str, digest: str) -> FaceResult | None:
    cached = cache.get(model_id, digest)
    return decode_result(cached) if cached is not None else None


def _lookup(pipeline: ImagePipeline, cache: EmbeddingCache, digest: str) -> FaceResult | None:
    """The cached result valid for this pipeline's policy, or None (then it is recomputed)."""
    if pipeline.policy is MultiFacePolicy.CENTER:
        central = _get(cache, f"{pipeline.model_id}-center", digest)
        if central is not None:
            return central
    shared = _get(cache, pipeline.model_id, digest)
    if shared is None or record_id(pipeline, shared.n_faces) != pipeline.model_id:
        return None  # absent, or several faces and CENTER may choose another one
    return shared


def _embed_chunk(
    pipeline: ImagePipeline, paths: Sequence[Path | str], cache: EmbeddingCache | None
) -> list[FaceResult]:
    found: dict[int, FaceResult] = {}
    misses: list[tuple[int, str, bytes]] = []
    for i, path in enumerate(paths):
        data = read_bytes(Path(path))
        digest = sha256_hex(data)
        hit = _lookup(pipeline, cache, digest) if cache is not None else None
        if hit is not None:
            found[i] = hit
        else:
            misses.append((i, digest, data))
    computed = pipeline.embed_rgb_many([load_rgb(data) for _, _, data in misses])
    for (i, digest, _), result in zip(misses, computed, strict=True):
        found[i] = result
        if cache is not None:
            cache.put(record_id(pipeline, result.n_faces), digest, encode_result(result))
    return [found[i] for i in range(len(paths))]


def stack_descriptors(results: Sequence[FaceResult]) -> npt.NDArray[np.float32]:
    """``(n, 128)`` float32 matrix of the found descriptors (rows with no face are skipped)."""
    found = [r.descriptor for r in results if r.descriptor is not None]
    return np.stack(found).astype(np.float32) if found else np.zeros((0, 128), np.float32)
