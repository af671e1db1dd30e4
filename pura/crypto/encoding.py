"""Embedding encodings (numpy only): L2 normalisation, the PCA rotation, fixed-point quantisation.

Why a rotation and not a projection: the rotation ``R`` is orthogonal and applied *without
centring* (``x' = R x``), so every distance and inner product is preserved exactly
(``||Rx − Ry|| = ||x − y||``, ``<Rx, Ry> = <x, y>``). The exact Paillier stage therefore computes
the same distances as plain dlib matching, while the *first* ``m`` coordinates of ``x'`` (ordered
by decreasing variance on training data) carry most of the discriminative energy and feed the
cheap CKKS preselection.

Quantisation error bound (the Paillier stage works on ``q(x) = round(x · 2^s)``):

* every coordinate of a unit vector lies in ``[−1, 1]``, so ``q(x)_i ∈ [−2^s, 2^s]`` (``s`` ≤ 20
  keeps ``|q|`` far inside int64);
* per coordinate ``|q(x)_i / 2^s − x_i| ≤ 2^{−s−1}``, hence ``||q(x)/2^s − x||_2 ≤ √d · 2^{−s−1}``;
* for the integer squared distance ``D = ||q(x) − q(y)||²`` and the real one ``δ = ||x − y||²``
  (both unit vectors, so ``||x − y|| ≤ 2``):
  ``|D / 4^s − δ| ≤ 2·||x − y||·√d·2^{−s} + d·4^{−s} ≤ 4·√d·2^{−s} + d·4^{−s}``.
  With ``d = 128``, ``s = 11``: ``≤ 0.0221 + 0.00003``; in practice the rounding errors are
  independent and the typical error is ``≈ 2·||x−y||·2^{−s}/√3 ≈ 8·10^{−4}`` (see
  :func:`squared_distance_error_bound` and the LFW test showing no rank-1 result changes).
"""

from __future__ import annotations

import hashlib
import io
import math
import random
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pura.errors import ConfigError, DimensionError, EncodingError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Version of the .npz layout written by :meth:`PCARotation.save`.
PCA_FORMAT_VERSION = 1
_ORTHO_TOL = 1e-9
_MAX_SCALE_BITS = 30

_DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def l2_normalize(x: npt.ArrayLike, dim: int = 128) -> FloatArray:
    """``x / ||x||`` as float64; rows of a 2-D array are normalised independently.

    Raises :class:`DimensionError` on a wrong trailing dimension, non-finite entries or a zero
    vector: silently matching a NaN or all-zero template would be a wrong answer, not an error.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim not in (1, 2) or arr.shape[-1] != dim:
        raise DimensionError(f"expected shape (..., {dim}), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DimensionError("embedding has non-finite entries")
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    if np.any(norms == 0.0):
        raise DimensionError("embedding is the zero vector")
    out: FloatArray = arr / norms
    return out


def quantize(x: npt.ArrayLike, scale_bits: int) -> IntArray:
    """``round(x · 2^scale_bits)`` as int64; error per coordinate ≤ 2^(−scale_bits−1).

    Entries must be finite and in ``[−1, 1]`` (unit-vector coordinates): the slot widths of the
    packed Paillier plaintexts are sized for ``|q| ≤ 2^s``, so anything larger is rejected here
    rather than overflowing a slot later.
    """
    if not 1 <= scale_bits <= _MAX_SCALE_BITS:
        raise EncodingError(f"scale_bits must be in 1..{_MAX_SCALE_BITS}, got {scale_bits}")
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise DimensionError("cannot quantise non-finite values")
    if arr.size and float(np.max(np.abs(arr))) > 1.0 + 1e-12:
        raise EncodingError("quantise expects coordinates of unit vectors (|x_i| ≤ 1)")
    out: IntArray = np.rint(np.clip(arr, -1.0, 1.0) * (1 << scale_bits)).astype(np.int64)
    return out


def dequantize(q: npt.ArrayLike, scale_bits: int) -> FloatArray:
    """Inverse scaling of :func:`quantize` (exact for the integers it produces)."""
    out: FloatArray = np.asarray(q, dtype=np.float64) / float(1 << scale_bits)
    return out


def squared_distance_error_bound(dim: int, scale_bits: int) -> float:
    """Worst-case ``|D/4^s − ||x−y||²|`` for unit vectors (see the module docstring)."""
    step = 2.0 ** (-scale_bits)
    return 4.0 * math.sqrt(dim) * step + dim * step * step


class PCARotation:
    """Orthogonal ``dim × dim`` rotation, rows ordered by decreasing variance (no centring).

    ``mean``/``cov`` are the mean and covariance of rotated *training* embeddings (public LFW
    people, never gallery subjects). They are used only to draw realistic decoy heads for empty
    gallery slots, so that a decoy's score is distributed like a stranger's (the full covariance
    matters: the basis is uncentred, so the coordinates are correlated).
    """

    def __init__(
        self,
        matrix: npt.ArrayLike,
        *,
        model_id: str,
        mean: npt.ArrayLike | None = None,
        cov: npt.ArrayLike | None = None,
        version: int = PCA_FORMAT_VERSION,
    ) -> None:
        mat = np.asarray(matrix, dtype=np.float64)
        if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
            raise DimensionError(f"rotation must be square, got {mat.shape}")
        if not np.all(np.isfinite(mat)):
            raise DimensionError("rotation has non-finite entries")
        dim = mat.shape[0]
        if np.max(np.abs(mat @ mat.T - np.eye(dim))) > _ORTHO_TOL:
            raise EncodingError("rotation matrix is not orthogonal")
        self.matrix: FloatArray = mat
        self.model_id = model_id
        self.version = version
        self.mean: FloatArray = (
            np.zeros(dim) if mean is None else np.asarray(mean, dtype=np.float64).reshape(dim)
        )
        self.cov: FloatArray = (
            np.eye(dim) / dim if cov is None else np.asarray(cov, np.float64).reshape(dim, dim)
        )

    def __repr__(self) -> str:
        return f"PCARotation(model_id={self.model_id!r}, dim={self.dim}, id={self.rotation_id})"

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def rotation_id(self) -> str:
        """Short digest of the matrix: stored next to templates so a rotation swap is detected."""
        return hashlib.sha256(self.matrix.tobytes()).hexdigest()[:16]

    @classmethod
    def fit(cls, embeddings: npt.ArrayLike, *, model_id: str) -> PCARotation:
        """Eigenvectors of the *uncentred* second-moment matrix, by decreasing eigenvalue.

        Uncentred on purpose: the rotation must map 0 to 0 so no offset leaks into distances, and
        the dominant mean direction of dlib descriptors then lands in coordinate 0 of the head.
        """
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < x.shape[1]:
            raise DimensionError(f"need at least dim embeddings of shape (n, dim), got {x.shape}")
        x = l2_normalize(x, dim=x.shape[1])
        second_moment = x.T @ x / x.shape[0]
        eigvals, eigvecs = np.linalg.eigh(second_moment)
        order = np.argsort(eigvals)[::-1]
        basis = eigvecs[:, order].T
        # Fix each row's sign (largest |entry| positive) so refits on the same data agree.
        signs = np.sign(basis[np.arange(basis.shape[0]), np.argmax(np.abs(basis), axis=1)])
        rot = basis * signs[:, None]
        rotated = x @ rot.T
        return cls(rot, model_id=model_id, mean=rotated.mean(axis=0), cov=np.cov(rotated.T))

    def apply(self, x: npt.ArrayLike) -> FloatArray:
        """``R x`` for a vector or each row of a matrix (input must be ``dim`` wide and finite)."""
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim not in (1, 2) or arr.shape[-1] != self.dim:
            raise DimensionError(f"expected shape (..., {self.dim}), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise DimensionError("embedding has non-finite entries")
        out: FloatArray = arr @ self.matrix.T
        return out

    def head(self, x: npt.ArrayLike, head_dim: int) -> FloatArray:
        """First ``head_dim`` rotated coordinates of the *normalised* embedding(s)."""
        if not 0 < head_dim <= self.dim:
            raise DimensionError(f"head_dim must be in 1..{self.dim}, got {head_dim}")
        return self.apply(l2_normalize(x, dim=self.dim))[..., :head_dim]

    def sample_decoy_heads(self, n: int, head_dim: int, rng: random.Random) -> FloatArray:
        """``n`` heads of random unit vectors drawn from N(mean, cov) in rotated space.

        Decoys fill empty gallery slots; drawn like real faces so B cannot spot empty slots by
        their scores. ``rng`` is injectable (tests); production passes ``random.SystemRandom``.
        """
        gen = np.random.default_rng(rng.getrandbits(128))
        raw = gen.multivariate_normal(self.mean, self.cov, size=n, method="eigh")
        raw /= np.linalg.norm(raw, axis=1, keepdims=True)
        out: FloatArray = raw[:, :head_dim]
        return out

    def save(self, path: Path | str) -> None:
        """Write a versioned .npz (matrix, model id, mean, cov)."""
        buf = io.BytesIO()
        np.savez(
            buf,
            matrix=self.matrix,
            mean=self.mean,
            cov=self.cov,
            model_id=np.array(self.model_id),
            version=np.array(self.version),
        )
        Path(path).write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: Path | str, *, model_id: str) -> PCARotation:
        """Load and check the model id: a rotation fitted for another network is a config error."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                stored_id = str(data["model_id"])
                version = int(data["version"])
                matrix, mean, cov = data["matrix"], data["mean"], data["cov"]
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"cannot read PCA rotation file {path}: {exc}") from exc
        if version != PCA_FORMAT_VERSION:
            raise ConfigError(f"PCA file version {version}, expected {PCA_FORMAT_VERSION}")
        if stored_id != model_id:
            raise ConfigError(f"PCA rotation was fitted for {stored_id!r}, not {model_id!r}")
        return cls(matrix, model_id=stored_id, mean=mean, cov=cov, version=version)


def shipped_pca_path(model_id: str) -> Path:
    """Path of the rotation shipped in ``pura/data`` for ``model_id``."""
    return _DATA_DIR / f"pca-{model_id}.npz"


def load_shipped_pca(model_id: str = "dlib_face_recognition_resnet_model_v1") -> PCARotation:
    """The rotation fitted by ``scripts/fit_pca.py`` and shipped with the package."""
    return PCARotation.load(shipped_pca_path(model_id), model_id=model_id)


__all__ = [
    "PCA_FORMAT_VERSION",
    "PCARotation",
    "dequantize",
    "l2_normalize",
    "load_shipped_pca",
    "quantize",
    "shipped_pca_path",
    "squared_distance_error_bound",
]
