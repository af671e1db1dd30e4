"""Exact squared distances of k candidates in one A → B → A round (blinded multiplication).

A holds ``[q(x)_i]`` (query, per dimension), ``[‖q(x)‖²]`` and, per candidate j, the packed
``[q(y_j) + 2^s]`` and ``[‖q(y_j)‖²]``. Goal: ``[D_j] = [‖x‖² + ‖y_j‖² − 2⟨x, y_j⟩]``.

Round (docs/architecture.md step 2)::

    A: merge the candidates' partly filled tail ciphertexts into shared ciphertexts (slot shifts),
       add a fresh packed mask [r] (r_i uniform < 2^(s+1+κ)) to every ciphertext, partially decrypt
       → BlindedProductRequest(query cts, masked cts, A's partial decryptions)
    B: combine → v = q(y) + 2^s + r per slot (2^-κ-close to uniform per slot), and return
       [⟨q(x), v_j⟩] = Π_i [q(x)_i]^(v_j,i), re-randomised            → BlindedProductReply
    A: [⟨x, y_j⟩] = reply_j − Π_i [q(x)_i]^(r_j,i + 2^s);   [D_j] = [‖x‖²] + [‖y_j‖²] − 2[⟨x, y_j⟩]

Slot stream order (both sides derive it from ``(layout, k)``, nothing else is sent): first the
full ciphertexts of candidate 0, 1, …, k−1 in order, then the merged tail ciphertexts, each
holding the tails of ``slots_per_ct // tail`` consecutive candidates. Vector j is its full slots
followed by its tail slots.

Cost (k candidates, d = 128, 3072-bit key, 57 slots): ⌈k·128/57⌉-ish joint decryptions instead of
128·k, two Straus multi-exponentiations of 128 bases × 53-bit exponents per candidate (one at A,
one at B), all candidates in one round trip.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from pura.crypto.paillier import (
    Ciphertext,
    KeyShare,
    RandomnessPool,
    combine,
    multi_exp_batch,
    partial_decrypt_batch,
)
from pura.engine.local import SERIAL, LocalEngine
from pura.errors import PackingOverflowError, ProtocolError
from pura.protocols.enroll import TemplateLayout, check_template
from pura.protocols.messages import (
    BlindedProductReply,
    BlindedProductRequest,
    PaillierQuery,
    PaillierTemplate,
)


def tails_per_ct(layout: TemplateLayout) -> int:
    return layout.slots_per_ct // layout.tail if layout.tail else 0


def slot_counts(layout: TemplateLayout, k: int) -> list[int]:
    """Used slots of every masked ciphertext in stream order."""
    counts = [layout.slots_per_ct] * (layout.n_full * k)
    if layout.tail:
        g = tails_per_ct(layout)
        counts += [layout.tail * min(g, k - start) for start in range(0, k, g)]
    return counts


def assemble_vectors(layout: TemplateLayout, k: int, contents: Sequence[int]) -> list[list[int]]:
    """Split the concatenated slot stream into the k candidates' d-vectors."""
    full = layout.n_full * layout.slots_per_ct
    if len(contents) != full * k + layout.tail * k:
        raise ProtocolError(f"slot stream of {len(contents)} values does not fit k={k}")
    tails = contents[full * k:]
    return [
        list(contents[j * full:(j + 1) * full]) + list(tails[j * layout.tail:(j + 1) * layout.tail])
        for j in range(k)
    ]


def _merge_tails(layout: TemplateLayout, tails: Sequence[Ciphertext]) -> list[Ciphertext]:
    """Horner over slot shifts: tail_a + 2^(t·w)·(tail_b + 2^(t·w)·(...)), t·w squarings each."""
    g = tails_per_ct(layout)
    shift = layout.tail * layout.slot_bits
    merged = []
    for start in range(0, len(tails), g):
        group = tails[start:start + g]
        acc = group[-1]
        for ct in reversed(group[:-1]):
            acc = acc.shift_slots(shift) + ct
        merged.append(acc)
    return merged


@dataclass
class DistanceState:
    """A's secret state between request and reply (masks are folded into ``corrections``)."""

    k: int
    query_norm: Ciphertext
    template_norms: list[Ciphertext]
    corrections: list[Ciphertext]

    def __repr__(self) -> str:
        return f"DistanceState(k={self.k})"


def start_distance(
    query: PaillierQuery,
    templates: Sequence[PaillierTemplate],
    layout: TemplateLayout,
    share_a: KeyShare,
    pool: RandomnessPool,
    engine: LocalEngine = SERIAL,
    rng: random.Random | None = None,
) -> tuple[DistanceState, BlindedProductRequest]:
    """A's half before the round trip. ``rng`` draws the masks (defaults to the pool's source)."""
    key = share_a.public_key
    k = len(templates)
    if k < 1 or len(query.dims) != layout.dim:
        raise ProtocolError(f"need ≥ 1 candidate and a {layout.dim}-dim query")
    for t in templates:
        check_template(t, layout, key)
    rng = rng if rng is not None else pool.rng
    stream = [c for t in templates for c in t.packed[:layout.n_full]]
    if layout.tail:
        stream += _merge_tails(layout, [t.packed[-1] for t in templates])
    counts = slot_counts(layout, k)
    masks = [[rng.getrandbits(layout.mask_bits) for _ in range(n)] for n in counts]
    masked = [
        ct + key.encrypt(layout.packed.pack_raw(m), pool)
        for ct, m in zip(stream, masks, strict=True)
    ]
    partials = engine.map_chunks(partial(partial_decrypt_batch, share_a), masked)
    offsets = assemble_vectors(layout, k, [r + layout.bound for m in masks for r in m])
    corrections = engine.map_chunks(partial(multi_exp_batch, query.dims), offsets)
    state = DistanceState(k, query.norm, [t.norm for t in templates], corrections)
    request = BlindedProductRequest(
        layout.dim, layout.slot_bits, k, tuple(query.dims), tuple(masked), tuple(partials)
    )
    return state, request


def helper_blinded_product(
    request: BlindedProductRequest,
    layout: TemplateLayout,
    share_b: KeyShare,
    pool: RandomnessPool,
    engine: LocalEngine = SERIAL,
) -> BlindedProductReply:
    """B's half: decrypt the masked vectors, return re-randomised ``[⟨q(x), v_j⟩]``.

    B refuses requests whose shape differs from its own layout, so A cannot make B decrypt a
    plaintext with fewer mask bits than agreed.
    """
    if (request.dim, request.slot_bits) != (layout.dim, layout.slot_bits):
        raise ProtocolError(
            f"request layout dim={request.dim}/slot={request.slot_bits} differs from "
            f"B's {layout.dim}/{layout.slot_bits}"
        )
    k = request.n_candidates
    counts = slot_counts(layout, k) if 0 < k <= 1 << 16 else []
    if not counts or len(request.masked) != len(counts) or len(request.partials) != len(counts):
        raise ProtocolError(f"request has {len(request.masked)} ciphertexts, k={k} needs {counts}")
    if len(request.query) != layout.dim:
        raise ProtocolError(f"query has {len(request.query)} dimensions, expected {layout.dim}")
    mine = engine.map_chunks(partial(partial_decrypt_batch, share_b), request.masked)
    contents: list[int] = []
    try:
        for pa, pb, n in zip(request.partials, mine, counts, strict=True):
            contents += layout.packed.unpack_raw(combine(pa, pb), n)
    except PackingOverflowError as exc:
        raise ProtocolError("masked plaintext exceeds the agreed slot layout") from exc
    vectors = assemble_vectors(layout, k, contents)
    products = engine.map_chunks(partial(multi_exp_batch, request.query), vectors)
    return BlindedProductReply(tuple(p.rerandomize(pool) for p in products))


def finish_distance(state: DistanceState, reply: BlindedProductReply) -> list[Ciphertext]:
    """A's half after the round trip: ``[D_j]`` for the candidates in request order."""
    if len(reply.products) != state.k:
        raise ProtocolError(f"reply has {len(reply.products)} products, expected {state.k}")
    out = []
    for prod, corr, norm_y in zip(reply.products, state.corrections, state.template_norms,
                                  strict=True):
        inner = prod - corr
        out.append(state.query_norm + norm_y + inner * -2)
    return out


__all__ = [
    "DistanceState",
    "assemble_vectors",
    "finish_distance",
    "helper_blinded_product",
    "slot_counts",
    "start_distance",
]
