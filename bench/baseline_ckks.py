"""Baseline 3: PFIP-style unpacked per-template CKKS inner products, no preselection.

Each template is ONE ciphertext holding its ``d`` coordinates in slots ``0..d−1``; the query is
one ciphertext of the same shape. Per template the server computes ``q ⊙ y`` (ct×ct,
relinearise, rescale) and sums the ``d`` slots with ``log2(d)`` rotate-and-add steps, so every
template costs one multiplication plus ``log2 d`` key switches: the per-template cost that
Pura's dimension-major blocks avoid (one product per *dimension* per 4,096 templates).

Same CKKS parameters and the same code (:mod:`pura.crypto.ckks`) as Pura's preselection, on
the full 128-d vectors (the PFIP setting). The bench times a subset of templates and
extrapolates linearly to N (the JSON says so); the subset's scores are decrypted and checked
against the plaintext inner products.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.timing import Timing, measure
from pura.crypto.ckks import CKKSCiphertext, CKKSContext

#: Largest decrypted-vs-plaintext error tolerated on unit vectors (CKKS noise is ~1e-7 here).
MAX_SCORE_ERROR = 1e-3


def inner_product(
    ctx: CKKSContext, query: CKKSCiphertext, template: CKKSCiphertext, dim: int
) -> CKKSCiphertext:
    """``Σ_i q_i y_i`` in slot 0: ct×ct (one relinearise + rescale), then rotate-and-add."""
    acc = ctx.score_block([query], [template])
    step = 1
    while step < dim:
        acc = ctx.add(acc, ctx.rotate(acc, step))
        step *= 2
    return acc


@dataclass(frozen=True)
class Baseline3Result:
    per_template: Timing
    templates_timed: int
    dim: int
    bytes_per_template: int
    max_error: float

    def total_seconds(self, gallery_size: int) -> float:
        return gallery_size * self.per_template.median_s

    def to_dict(self, sizes: list[int]) -> dict[str, Any]:
        return {
            "system": "baseline3: PFIP-style unpacked per-template CKKS inner product "
                      "(ct×ct + log2(d) rotations), no preselection",
            "extrapolated": True,
            "extrapolation": f"linear: N × per-template time measured on "
                             f"{self.templates_timed} templates",
            "per_template": self.per_template.to_dict(),
            "dim": self.dim,
            "bytes_per_template": self.bytes_per_template,
            "max_abs_score_error": self.max_error,
            "verified_against_plaintext": self.max_error <= MAX_SCORE_ERROR,
            "total_s": {str(n): self.total_seconds(n) for n in sizes},
        }


def run_baseline3(
    ctx_secret: CKKSContext,
    gallery: npt.NDArray[np.float64],
    probe: npt.NDArray[np.float64],
    *,
    templates_timed: int = 16,
    repetitions: int = 5,
) -> Baseline3Result:
    """Encrypt ``templates_timed`` templates, time scoring them, verify the decrypted scores."""
    pub = ctx_secret.public()
    dim = int(gallery.shape[1])
    subset = gallery[:templates_timed]
    enc = [pub.encrypt_vector(row) for row in subset]
    query = pub.encrypt_vector(probe)

    def score_subset() -> list[CKKSCiphertext]:
        return [inner_product(pub, query, t, dim) for t in enc]

    per_template = measure(score_subset, repetitions=repetitions, warmup=1).scaled(
        1 / templates_timed)
    scores = np.array([ctx_secret.decrypt(s)[0] for s in score_subset()])
    error = float(np.max(np.abs(scores - subset @ probe)))
    return Baseline3Result(
        per_template=per_template,
        templates_timed=templates_timed,
        dim=dim,
        bytes_per_template=len(pub.ciphertext_to_bytes(enc[0])),
        max_error=error,
    )
