"""Template admission in concurrent lanes (issue 14): the lanes are independent runs of both
rounds, so every vector gets the same verdict and the same stored values as in one batch, and a
lane's invalid upload never affects another lane's vectors."""

from __future__ import annotations

import random

import numpy as np

from pura.crypto.paillier import RandomnessPool, decrypt_with_shares
from pura.errors import EmbeddingRangeError
from pura.protocols.enroll import TemplateLayout, encrypt_template
from pura.protocols.messages import NormCheckReply, NormCheckRequest, NormReply, NormRequest
from pura.protocols.norms import NormLayout, NormServerB, admit_templates, split_lanes

from .test_norms import DIM, Keys, S, _unit_q


class _Counting:
    """B, counting the round-1 requests and the vectors each carried."""

    def __init__(self, b: NormServerB) -> None:
        self.b = b
        self.sizes: list[int] = []

    def norm_square(self, request: NormRequest) -> NormReply:
        self.sizes.append(request.n_vectors)
        return self.b.norm_square(request)

    def norm_check(self, request: NormCheckRequest) -> NormCheckReply:
        return self.b.norm_check(request)


def test_lanes_split_contiguously_and_never_below_the_minimum() -> None:
    items = [[] for _ in range(7)]
    assert [len(p) for p in split_lanes(items, 2)] == [4, 3]
    assert [len(p) for p in split_lanes(items[:3], 2)] == [3]  # 3 // MIN_LANE = 1 lane
    assert [len(p) for p in split_lanes(items, 1)] == [7]


def test_two_lanes_admit_exactly_what_one_batch_admits(paillier_fast_keys: Keys) -> None:
    pk, s1, s2 = paillier_fast_keys
    layout = NormLayout.for_key(pk, TemplateLayout.for_key(pk, DIM, S))
    t = layout.template
    pool = RandomnessPool(pk, rng=random.Random(11))
    rng = np.random.default_rng(12)
    vectors = [_unit_q(rng) for _ in range(5)]
    vectors[1] = [round(v * 1.03) for v in vectors[1]]  # norm too large: refused in lane 1
    uploads = [encrypt_template(y, t, pk, pool).packed for y in vectors]
    helper = _Counting(NormServerB(s2, layout, RandomnessPool(pk, rng=random.Random(13))))
    out = admit_templates(uploads, layout, s1, pool, helper, lanes=2)
    assert sorted(helper.sizes) == [2, 3]  # two independent lanes, not one batch
    assert [isinstance(r, EmbeddingRangeError) for r in out] == [False, True, False, False, False]
    for r, y in zip(out, vectors, strict=True):
        if isinstance(r, EmbeddingRangeError):
            continue
        assert decrypt_with_shares(s1, s2, r.norm) == sum(v * v for v in y)
        pts = [decrypt_with_shares(s1, s2, c) for c in r.packed]
        assert [v for p, n in zip(pts, layout.slot_counts(), strict=True)
                for v in t.packed.unpack(p, n)] == y
