"""Embed many image files through the on-disk cache, with a progress bar for long runs.

Works with any pipeline exposing ``model_id``, ``policy`` and ``embed_rgb`` (the reference dlib
pipeline and the torch :class:`~pura_client.embedding.pipeline.Embedder`). Cache values are
policy-independent records (see :func:`encode_result`), so STRICT is enforced after lookup.
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

    def embed_rgb(self, rgb: npt.NDArray[np.uint8]) -> FaceResult: ...


def embed_files(
    pipeline: ImagePipeline,
    paths: Sequence[Path | str],
    *,
    cache: EmbeddingCache | None = None,
    progress: bool = False,
) -> list[FaceResult]:
    """One :class:`FaceResult` per path, computed at most once per (model id, image bytes).

    ``cache=None`` disables caching. Unreadable images raise FaceError (they are input errors,
    not results); the multi-face policy of ``pipeline`` is applied to every result.
    """
    results: list[FaceResult] = []
    show = progress and len(paths) > PROGRESS_THRESHOLD
    with Progress(disable=not show, transient=True) as bar:
        task = bar.add_task(f"embedding ({pipeline.model_id})", total=len(paths))
        for path in paths:
            results.append(apply_policy(_one(pipeline, path, cache), pipeline.policy))
            bar.advance(task)
    return results


def _one(pipeline: ImagePipeline, path: Path | str, cache: EmbeddingCache | None) -> FaceResult:
    data = read_bytes(Path(path))
    digest = sha256_hex(data)
    if cache is not None:
        cached = cache.get(pipeline.model_id, digest)
        decoded = decode_result(cached) if cached is not None else None
        if decoded is not None:
            return decoded
    result = pipeline.embed_rgb(load_rgb(data))
    if cache is not None:
        cache.put(pipeline.model_id, digest, encode_result(result))
    return result


def stack_descriptors(results: Sequence[FaceResult]) -> npt.NDArray[np.float32]:
    """``(n, 128)`` float32 matrix of the found descriptors (rows with no face are skipped)."""
    found = [r.descriptor for r in results if r.descriptor is not None]
    return np.stack(found).astype(np.float32) if found else np.zeros((0, 128), np.float32)
