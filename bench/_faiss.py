"""Plaintext FAISS ``IndexFlatIP``: the floor every encrypted figure is compared with.

This is the only module of the project that imports faiss (the bench is its only user). Exact
inner-product search over unit vectors ranks exactly like squared Euclidean distance
(``||x − y||² = 2 − 2⟨x, y⟩``), so its rank-1 is the ground truth for the encrypted paths.
"""

from __future__ import annotations

import faiss
import numpy as np
import numpy.typing as npt


class FlatIPIndex:
    """Exhaustive inner-product index over float32 copies of the gallery."""

    def __init__(self, gallery: npt.NDArray[np.float64], *, threads: int | None = None) -> None:
        if gallery.ndim != 2 or gallery.shape[0] == 0:
            raise ValueError(f"gallery must be a non-empty 2-d array, got shape {gallery.shape}")
        if threads is not None:
            faiss.omp_set_num_threads(threads)
        self.dim = int(gallery.shape[1])
        self._index = faiss.IndexFlatIP(self.dim)
        self._index.add(np.ascontiguousarray(gallery, dtype=np.float32))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def search(
        self, probes: npt.NDArray[np.float64], k: int = 1
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top-``k`` (scores, gallery rows) of every probe row, best first."""
        queries = np.ascontiguousarray(np.atleast_2d(probes), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise ValueError(f"probe dimension {queries.shape[1]} != index dimension {self.dim}")
        scores, rows = self._index.search(queries, k)
        return scores, rows.astype(np.int64)

    def bytes_per_template(self) -> int:
        """Storage of one template in the index (float32 coordinates)."""
        return 4 * self.dim
