"""LFW identification splits turned into L2-normalised descriptor matrices (through the cache).

This is what the crypto/protocol/gallery tests and the benchmarks consume::

    from pura_client.datasets.embedded import embedded_identification_set
    s = embedded_identification_set(n_identities=500, seed=0)
    s.gallery            # (n_g, 128) float64, unit rows; s.gallery_labels[i] is the subject id
    s.probes             # (n_p, 128) mated probes;       s.probe_labels[j] is in gallery_labels
    s.non_enrolled       # (n_n, 128) probes of people not in the gallery (expected: no match)

Images where no face was found are dropped (an enrolled identity whose gallery image has no face
is dropped together with its probes) and counted in ``dropped``; with the default reference
pipeline (HOG + CNN fallback) that count is 0 on LFW deep-funneled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pura_client.datasets.lfw import (
    IdentificationSplit,
    LabeledImage,
    LFWDataset,
    identification_split,
)
from pura_client.embedding.batch import ImagePipeline, embed_files
from pura_client.embedding.cache import EmbeddingCache
from pura_client.embedding.types import DESCRIPTOR_DIM, FaceResult

Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True)
class EmbeddedIdentificationSet:
    """Unit-norm float64 descriptors of a 1:N split, with their labels (see module docstring)."""

    gallery: Matrix
    gallery_labels: tuple[str, ...]
    probes: Matrix
    probe_labels: tuple[str, ...]
    non_enrolled: Matrix
    non_enrolled_labels: tuple[str, ...]
    model_id: str
    dropped: int

    def __repr__(self) -> str:
        return (
            f"EmbeddedIdentificationSet(gallery={len(self.gallery_labels)}, "
            f"probes={len(self.probe_labels)}, non_enrolled={len(self.non_enrolled_labels)}, "
            f"model_id={self.model_id!r}, dropped={self.dropped})"
        )


def l2_normalise(rows: npt.NDArray[np.floating]) -> Matrix:
    """Rows scaled to unit L2 norm in float64 (dlib descriptors are ~0.5-norm float32); any
    width (128-d dlib/SFace, 512-d EdgeFace)."""
    rows64 = np.asarray(rows, dtype=np.float64)
    rows64 = rows64.reshape(-1, rows64.shape[-1] if rows64.ndim > 1 else DESCRIPTOR_DIM)
    norms = np.linalg.norm(rows64, axis=1, keepdims=True)
    return rows64 / np.where(norms > 0, norms, 1.0)


def embed_split(
    split: IdentificationSplit,
    pipeline: ImagePipeline,
    *,
    cache: EmbeddingCache | None = None,
    progress: bool = False,
) -> EmbeddedIdentificationSet:
    """Embed every image of ``split`` (cached) and drop the ones without a face."""
    images = [*split.gallery, *split.probes, *split.non_enrolled]
    results = embed_files(pipeline, [i.path for i in images], cache=cache, progress=progress)
    n_g, n_p = len(split.gallery), len(split.probes)
    gallery = _keep(split.gallery, results[:n_g])
    enrolled = {item.label for item, _ in gallery}
    mated = _keep(split.probes, results[n_g : n_g + n_p])
    probes = [(item, res) for item, res in mated if item.label in enrolled]
    outsiders = _keep(split.non_enrolled, results[n_g + n_p :])
    kept = len(gallery) + len(probes) + len(outsiders)
    return EmbeddedIdentificationSet(
        *_matrix(gallery), *_matrix(probes), *_matrix(outsiders),
        model_id=pipeline.model_id, dropped=len(images) - kept,
    )


def embedded_identification_set(
    n_identities: int = 500,
    seed: int = 0,
    *,
    n_non_enrolled: int = 200,
    max_probes_per_identity: int | None = 2,
    pipeline: ImagePipeline | None = None,
    cache: EmbeddingCache | None = None,
    progress: bool = False,
    dataset: LFWDataset | None = None,
) -> EmbeddedIdentificationSet:
    """Draw :func:`identification_split` and embed it (default: dlib reference, default cache)."""
    if pipeline is None:
        from pura_client.embedding.reference import DlibReferenceEmbedder

        pipeline = DlibReferenceEmbedder()
    split = identification_split(
        n_identities, seed,
        n_non_enrolled=n_non_enrolled, max_probes_per_identity=max_probes_per_identity,
        dataset=dataset,
    )
    cache = cache if cache is not None else EmbeddingCache()
    return embed_split(split, pipeline, cache=cache, progress=progress)


def _keep(
    items: Sequence[LabeledImage], results: Sequence[FaceResult]
) -> list[tuple[LabeledImage, FaceResult]]:
    return [(i, r) for i, r in zip(items, results, strict=True) if r.descriptor is not None]


def _matrix(rows: Sequence[tuple[LabeledImage, FaceResult]]) -> tuple[Matrix, tuple[str, ...]]:
    labels = tuple(item.label for item, _ in rows)
    if not rows:  # no row to take the width from: dlib's (the 512-d models find LFW faces)
        return np.zeros((0, DESCRIPTOR_DIM), np.float64), labels
    descriptors = np.stack([r.descriptor for _, r in rows if r.descriptor is not None])
    return l2_normalise(descriptors), labels
