"""Range check of an enrolment's CKKS head, with B, before it is ever placed (issue 13, item 2).

Why: the head only steers preselection, but a head far outside a unit vector's range outranks
every real face in B's view and pushes true mates out of the ``top_k`` candidates (measured: 6
of 8 true mates answered "no match" after one head at 2^34), or makes every later refresh fail.
The Paillier template is admitted with a servers-computed norm (:mod:`pura.protocols.norms`);
this is the CKKS analogue, with the same *blinded comparison*: B learns only sign bits that A
flipped at random.

What is checked, for a head ``y`` (slots ``0..m−1``; other slots are multiplied by 0 at
placement and ignored here):

* every coordinate: ``−(1+ε) ≤ y_i ≤ 1+ε`` (two comparisons per slot, 2 ciphertexts);
* the norm: ``Σ y_i² ≤ 1+ε`` (1 ciphertext; meaningful once the coordinates are bounded, which
  also keeps its value inside the score level's modulus).

``ε = 2^-7`` absorbs CKKS noise (~1e-7 measured) and the encoder's rounding; an honest head
(the PCA rotation of a unit vector, truncated) has ``‖y‖ ≤ 1``.

One comparison is ``v = s·(r·(b − x) + r')`` with ``s = ±1`` (A's flip), ``r`` uniform in
``[2^6, 2^R]`` and ``0 ≤ r' < r·2^-9``: ``sign(v) = s·sign(b − x)`` whenever ``b − x ≥ 0`` or
``b − x < −2^-9``, so a head passes only if every value lies within the bound plus ``2^-9``.
B decrypts ``v`` and returns its sign bit; A un-flips. B learns ``|r·(b − x) + r'|`` for
unknown ``r``: the magnitude of the slack up to a random factor of at most ``2^(R−6)``, the
same kind of leak as the Paillier norm comparisons. Values B decrypts here never leave B.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pura.crypto.ckks import CKKSCiphertext, CKKSContext
from pura.errors import ProtocolError

FloatArray = npt.NDArray[np.float64]
#: Margin above the unit-vector bound (see the module docstring).
EPSILON = 2.0**-7
#: Ciphertexts per head: upper bounds, lower bounds, norm.
CHECKS_PER_HEAD = 3
_R_LOW, _R_BITS_COORD, _R_BITS_NORM = 2.0**6, 12, 10
_SLACK = 2.0**-9


@dataclass(frozen=True)
class HeadCheckState:
    """A's secret flips for one head's comparisons (never sent)."""

    flips: tuple[int, ...]  # 2·m coordinate comparisons, then the norm

    def __repr__(self) -> str:
        return f"HeadCheckState(comparisons={len(self.flips)})"


def _blind(rng: random.Random, r_bits: int) -> tuple[int, float, float]:
    flip = 1 if rng.getrandbits(1) else -1
    r = _R_LOW + rng.random() * (2.0**r_bits - _R_LOW)
    return flip, r, rng.random() * r * _SLACK


def prepare_head_checks(
    ctx: CKKSContext, head: CKKSCiphertext, head_dim: int, rng: random.Random
) -> tuple[list[bytes], HeadCheckState]:
    """A: the blinded comparisons of one head (``CHECKS_PER_HEAD`` ciphertexts for B)."""
    slots = ctx.slot_count
    bound = 1.0 + EPSILON
    flips: list[int] = []
    cts: list[bytes] = []
    for sign in (-1.0, 1.0):  # upper: s·(r(b − y) + r'), lower: s·(r(b + y) + r')
        weights, offsets = np.zeros(slots), np.zeros(slots)
        for i in range(head_dim):
            flip, r, r2 = _blind(rng, _R_BITS_COORD)
            weights[i] = flip * sign * r
            offsets[i] = flip * (r * bound + r2)
            flips.append(flip)
        cts.append(ctx.ciphertext_to_bytes(ctx.weighted_head(head, weights, offsets)))
    flip, r, r2 = _blind(rng, _R_BITS_NORM)
    cts.append(ctx.ciphertext_to_bytes(ctx.head_norm(head, head_dim, -flip * r,
                                                     flip * (r * bound + r2))))
    flips.append(flip)
    return cts, HeadCheckState(tuple(flips))


def answer_head_checks(ctx: CKKSContext, cts: Sequence[bytes], head_dim: int) -> list[int]:
    """B: the sign bit (1 = positive) of every comparison of one head."""
    if len(cts) != CHECKS_PER_HEAD:
        raise ProtocolError(f"head check: {len(cts)} ciphertexts, expected {CHECKS_PER_HEAD}")
    upper, lower = (ctx.decrypt(ctx.ciphertext_from_bytes(c))[:head_dim] for c in cts[:2])
    norm = ctx.decrypt(ctx.ciphertext_from_bytes(cts[2], score=True))[0]
    values = [*upper, *lower, norm]
    return [1 if float(v) > 0 else 0 for v in values]


def finish_head_checks(state: HeadCheckState, bits: Sequence[int]) -> bool:
    """A: whether every comparison held (the head may be placed)."""
    if len(bits) != len(state.flips):
        raise ProtocolError(f"head check reply has {len(bits)} bits, "
                            f"expected {len(state.flips)}")
    return all((b == 1) == (f == 1) for b, f in zip(bits, state.flips, strict=True))


def check_head_locally(
    ctx_a: CKKSContext, ctx_b: CKKSContext, head: CKKSCiphertext, head_dim: int,
    rng: random.Random,
) -> bool:
    """Both parties in one process (tests), through the byte encodings."""
    cts, state = prepare_head_checks(ctx_a, head, head_dim, rng)
    return finish_head_checks(state, answer_head_checks(ctx_b, cts, head_dim))


__all__ = [
    "CHECKS_PER_HEAD",
    "EPSILON",
    "HeadCheckState",
    "answer_head_checks",
    "check_head_locally",
    "finish_head_checks",
    "prepare_head_checks",
]
