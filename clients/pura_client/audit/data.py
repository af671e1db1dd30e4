"""Embedding sets the evaluations run on, and the system threshold they are judged at.

The audit works on L2-normalised 128-d embeddings with their identity labels. Comparisons use the
squared Euclidean distance, as Pura's exact stage does (``D = ||x − y||²``); the metrics module
wants similarities, so scores here are ``−D``.

The *system threshold* is calibrated on impostor comparisons of people disjoint from the ones an
evaluation attacks, at FMR = 0.1% (NIST SP 800-63B's bar, and the operating point the
template-inversion literature reports SAR at). Calibrating on the attacked people would let the
threshold adapt to the attack set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pura_client.audit.metrics import AuditError, FloatArray, threshold_at_fmr

SYSTEM_FMR = 1e-3


@dataclass(frozen=True)
class LabelledEmbeddings:
    """Unit-norm embeddings (n × d, float64) with one identity label each."""

    vectors: FloatArray
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.labels):
            raise AuditError(
                f"need an n×d matrix with n labels, got {self.vectors.shape} and {len(self.labels)}"
            )
        if not np.all(np.isfinite(self.vectors)):
            raise AuditError("embeddings must be finite")

    @classmethod
    def from_raw(
        cls, vectors: npt.ArrayLike, labels: list[str] | tuple[str, ...]
    ) -> LabelledEmbeddings:
        """Normalise rows to unit length (the form Pura encodes) and wrap them."""
        arr = np.asarray(vectors, dtype=np.float64)
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        if arr.ndim != 2 or np.any(norms == 0):
            raise AuditError("embeddings must be a 2-D array of non-zero rows")
        return cls(vectors=arr / norms, labels=tuple(labels))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def identities(self) -> list[str]:
        """Distinct labels in first-seen order (deterministic splits)."""
        return list(dict.fromkeys(self.labels))

    def subset(self, names: set[str]) -> LabelledEmbeddings:
        idx = [i for i, lab in enumerate(self.labels) if lab in names]
        return LabelledEmbeddings(self.vectors[idx], tuple(self.labels[i] for i in idx))


def squared_distances(a: FloatArray, b: FloatArray) -> FloatArray:
    """All pairwise ``||a_i − b_j||²`` (clipped at 0 against rounding)."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    out: FloatArray = np.maximum(d, 0.0)
    return out


def comparison_scores(data: LabelledEmbeddings) -> tuple[FloatArray, FloatArray]:
    """(genuine, impostor) similarity scores ``−||x−y||²`` over all unordered pairs."""
    d = squared_distances(data.vectors, data.vectors)
    labels = np.asarray(data.labels)
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same, dtype=bool), k=1)
    return -d[same & upper], -d[~same & upper]


def system_threshold(calibration: LabelledEmbeddings, fmr: float = SYSTEM_FMR) -> float:
    """Similarity threshold (``−D``) at ``fmr`` on the calibration set's impostor pairs.

    Needs at least ``1/fmr`` impostor pairs to resolve the rate; with fewer the result would be the
    strictest threshold, which overstates security, so it is refused.
    """
    _, impostor = comparison_scores(calibration)
    if impostor.size * fmr < 1.0:
        raise AuditError(
            f"{impostor.size} impostor pairs cannot resolve FMR {fmr}; use more calibration people"
        )
    return threshold_at_fmr(impostor, fmr)


def split_people(
    data: LabelledEmbeddings, fraction: float, rng: np.random.Generator
) -> tuple[LabelledEmbeddings, LabelledEmbeddings]:
    """Person-disjoint split: ``fraction`` of the identities go to the first part."""
    names = data.identities()
    order = rng.permutation(len(names))
    cut = round(fraction * len(names))
    first = {names[i] for i in order[:cut]}
    return data.subset(first), data.subset(set(names) - first)


@dataclass(frozen=True)
class AuditData:
    """The person-disjoint roles an audit needs, all real LFW embeddings.

    ``enrolled``: one template per enrolled person (what the gallery holds);
    ``mated_probes``: other images of enrolled people; ``public``: people the attacker (and the
    threshold calibration) may use, disjoint from the enrolled ones; ``nonmated``: probes of
    people who are neither enrolled nor public.
    """

    enrolled: LabelledEmbeddings
    mated_probes: LabelledEmbeddings
    public: LabelledEmbeddings
    nonmated: LabelledEmbeddings

    @classmethod
    def from_identification_set(
        cls,
        gallery: FloatArray,
        gallery_labels: tuple[str, ...],
        probes: FloatArray,
        probe_labels: tuple[str, ...],
        non_enrolled: FloatArray,
        non_enrolled_labels: tuple[str, ...],
        rng: np.random.Generator,
        public_fraction: float = 0.5,
    ) -> AuditData:
        """Split an identification set's gallery *people* into enrolled and public halves.

        Public people contribute all their images (gallery + probes) so the attacker and the
        threshold calibration have genuine pairs too.
        """
        order = rng.permutation(len(gallery_labels))
        cut = round(public_fraction * len(order))
        public_names = {gallery_labels[i] for i in order[:cut]}
        enrolled_idx = [i for i in range(len(gallery_labels)) if i not in set(order[:cut])]
        probe_pub = [j for j, lab in enumerate(probe_labels) if lab in public_names]
        probe_enr = [j for j, lab in enumerate(probe_labels) if lab not in public_names]
        pub_g = [i for i in range(len(gallery_labels)) if gallery_labels[i] in public_names]
        return cls(
            enrolled=LabelledEmbeddings.from_raw(
                gallery[enrolled_idx], [gallery_labels[i] for i in enrolled_idx]
            ),
            mated_probes=LabelledEmbeddings.from_raw(
                probes[probe_enr], [probe_labels[j] for j in probe_enr]
            ),
            public=LabelledEmbeddings.from_raw(
                np.vstack([gallery[pub_g], probes[probe_pub]]),
                [gallery_labels[i] for i in pub_g] + [probe_labels[j] for j in probe_pub],
            ),
            nonmated=LabelledEmbeddings.from_raw(non_enrolled, list(non_enrolled_labels)),
        )

    def enrolled_with_probes(self) -> LabelledEmbeddings:
        """Enrolled templates followed by their mated probes (two captures per person)."""
        return LabelledEmbeddings(
            np.vstack([self.enrolled.vectors, self.mated_probes.vectors]),
            self.enrolled.labels + self.mated_probes.labels,
        )


__all__ = [
    "SYSTEM_FMR",
    "AuditData",
    "LabelledEmbeddings",
    "comparison_scores",
    "split_people",
    "squared_distances",
    "system_threshold",
]
