"""Galleries and probes the benchmarks run on.

Synthetic galleries are seeded unit vectors. Why not pure uniform noise on the sphere for the
probes: in 128 dimensions random unit vectors are all nearly orthogonal, so every probe would be a
"no match" and the exact stage would never be exercised on a close candidate. A probe is therefore
a gallery vector plus seeded Gaussian noise of the size that separates two images of one person
in dlib's space (distance ≈ 0.4 after normalisation), re-normalised; its true identity is known, so
every answer can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Euclidean noise norm of a mated synthetic probe (same-person distance in dlib's space).
MATED_NOISE_NORM = 0.35


@dataclass(frozen=True)
class ProbeSet:
    """Probes and the gallery row each should match (``-1``: not enrolled, answer is no match)."""

    vectors: FloatArray
    expected: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


def normalise(vectors: FloatArray) -> FloatArray:
    """Rows scaled to unit L2 norm (float64)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("cannot normalise a zero vector")
    result: FloatArray = (vectors / norms).astype(np.float64)
    return result


def synthetic_gallery(size: int, dim: int = 128, *, seed: int = 0) -> FloatArray:
    """``size`` seeded unit vectors of ``dim`` coordinates (uniform on the sphere)."""
    if size < 1 or dim < 1:
        raise ValueError(f"need size >= 1 and dim >= 1, got {size}, {dim}")
    rng = np.random.default_rng(seed)
    return normalise(rng.standard_normal((size, dim)))


def face_like_gallery(
    size: int, mean: FloatArray, cov: FloatArray, rotation: FloatArray, *, seed: int = 0
) -> FloatArray:
    """``size`` seeded unit vectors distributed like real face embeddings.

    Why: Pura fills empty CKKS slots with decoys drawn from the shipped PCA model of real dlib
    descriptors (``N(mean, cov)`` in the rotated space). Uniform vectors on the sphere have far
    less energy in the PCA head than real faces, so against such a gallery the decoys would
    outscore every template in preselection — an artefact of the data, not of the protocol.
    Drawing the synthetic gallery from the same model as the decoys keeps the benchmark honest.
    ``rotation`` is the PCA matrix ``R`` (``x' = R x``); vectors are returned in the original
    space (``x = Rᵀ x'``), as a client would embed them.
    """
    if size < 1:
        raise ValueError(f"need size >= 1, got {size}")
    rng = np.random.default_rng(seed)
    rotated = normalise(rng.multivariate_normal(mean, cov, size=size, method="eigh"))
    out: FloatArray = rotated @ rotation
    return out


def synthetic_probes(
    gallery: FloatArray, n_mated: int, n_non_mated: int, *, seed: int = 1
) -> ProbeSet:
    """Mated probes (noisy copies of seeded gallery rows) and non-mated ones (fresh vectors)."""
    rng = np.random.default_rng(seed)
    size, dim = gallery.shape
    rows = rng.choice(size, size=n_mated, replace=n_mated > size)
    noise = rng.standard_normal((n_mated, dim))
    noise *= MATED_NOISE_NORM / np.linalg.norm(noise, axis=1, keepdims=True)
    mated = normalise(gallery[rows] + noise)
    strangers = normalise(rng.standard_normal((n_non_mated, dim)))
    vectors = np.vstack([mated, strangers]) if n_non_mated else mated
    expected = np.concatenate([rows.astype(np.int64), -np.ones(n_non_mated, dtype=np.int64)])
    return ProbeSet(vectors=vectors, expected=expected)


def plaintext_answer(gallery: FloatArray, probe: FloatArray, threshold: float) -> int:
    """Index of the nearest gallery row if its squared distance is below ``threshold``, else -1.

    The reference every encrypted answer is checked against (exact float64 arithmetic).
    """
    distances = np.sum((gallery - probe) ** 2, axis=1)
    best = int(np.argmin(distances))
    return best if distances[best] < threshold else -1
