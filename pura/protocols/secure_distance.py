"""Exact squared distances of k candidates in one A → B → A round (blinded multiplication).

A holds ``[q(x)_i]`` (query, per dimension), ``[‖q(x)‖²]`` and, per candidate j, the packed
``[q(y_j) + 2^s]`` and ``[‖q(y_j)‖²]``. Goal: ``[D_j] = [‖x‖² + ‖y_j‖² − 2⟨x, y_j⟩]``. Both the
query (:class:`~pura.protocols.norms.CheckedQuery`) and the templates
(:class:`~pura.protocols.messages.AdmittedTemplate`) come out of :mod:`pura.protocols.norms`:
the norms are the servers', never a client's (docs/security.md, "Exact distance").

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
import secrets
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from pura.crypto.paillier import (
    Ciphertext,
    KeyShare,
    PartialDecryption,
    PartialPool,
    RandomnessPool,
    combine,
    multi_exp_batch,
    partial_decrypt_batch,
)
from pura.engine.local import SERIAL, LocalEngine
from pura.errors import PackingOverflowError, ProtocolError
from pura.protocols.enroll import TemplateLayout, check_template
from pura.protocols.messages import (
    AdmittedTemplate,
    BlindedProductReply,
    BlindedProductRequest,
)
from pura.protocols.norms import CheckedQuery

_Shiftable = TypeVar("_Shiftable", Ciphertext, PartialDecryption)


def _add(a: _Shiftable, b: _Shiftable) -> _Shiftable:
    if isinstance(a, Ciphertext) and isinstance(b, Ciphertext):
        return a + b
    if isinstance(a, PartialDecryption) and isinstance(b, PartialDecryption):
        return a.times(b)
    raise ProtocolError("cannot merge a ciphertext with a partial decryption")


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


def _merge_tails(layout: TemplateLayout, tails: Sequence[_Shiftable]) -> list[_Shiftable]:
    """Horner over slot shifts: tail_a + 2^(t·w)·(tail_b + 2^(t·w)·(...)), t·w squarings each.

    Works on ciphertexts and, identically, on A's partial decryptions of them.
    """
    g = tails_per_ct(layout)
    shift = layout.tail * layout.slot_bits
    merged = []
    for start in range(0, len(tails), g):
        group = tails[start:start + g]
        acc = group[-1]
        for ct in reversed(group[:-1]):
            acc = _add(acc.shift_slots(shift), ct)
        merged.append(acc)
    return merged


@dataclass(frozen=True)
class PreparedTemplate:
    """A stored template plus A's own partial decryptions of its packed ciphertexts.

    Computed once per template (offline, e.g. when the gallery is loaded): it moves A's only
    expensive online step of this protocol out of the query path. Only A (share 1) can make it;
    it is as sensitive as A's share-derived state and never leaves A.
    """

    template: AdmittedTemplate
    partials: tuple[PartialDecryption, ...]

    def __repr__(self) -> str:
        return f"PreparedTemplate(cts={len(self.partials)})"


def prepare_templates(
    templates: Sequence[AdmittedTemplate], share_a: KeyShare, engine: LocalEngine = SERIAL
) -> list[PreparedTemplate]:
    """A, offline: partial decryptions of every packed ciphertext (parallel over the engine)."""
    flat = [c for t in templates for c in t.packed]
    parts = engine.map_chunks(partial(partial_decrypt_batch, share_a), flat)
    out, pos = [], 0
    for t in templates:
        out.append(PreparedTemplate(t, tuple(parts[pos:pos + len(t.packed)])))
        pos += len(t.packed)
    return out


@dataclass
class DistanceMasks:
    """A's masks for one distance round and their corrections, drawn before the candidates exist.

    Why ahead of the candidates: the masks ``r_j`` and the corrections
    ``Π_i [x_i]^(r_j,i + 2^s)`` depend on the admitted query and A's randomness only, never on
    which templates are matched. A draws them while preselection still chooses the candidates
    (the server runs the query's admission on a thread beside it), which takes the corrections'
    multi-exponentiations off the exact stage's critical path. The values have exactly the
    distribution :func:`start_distance` would draw itself. One set masks one request only
    (:attr:`used`): two requests under the same ``r`` would give B ``v − v' = y − y'``.
    """

    query: CheckedQuery
    k: int
    values: list[list[int]]
    corrections: list[Ciphertext]
    used: bool = False

    def __repr__(self) -> str:
        return f"DistanceMasks(k={self.k}, used={self.used})"


def draw_masks(
    query: CheckedQuery,
    layout: TemplateLayout,
    k: int,
    engine: LocalEngine = SERIAL,
    rng: random.Random | None = None,
) -> DistanceMasks:
    """A: uniform packed masks for ``k`` candidates and the corrections they need.

    ``rng`` draws the mask values (OS CSPRNG unless a test seeds it)."""
    if k < 1 or len(query.dims) != layout.dim:
        raise ProtocolError(f"need ≥ 1 candidate and a {layout.dim}-dim query")
    rng = rng if rng is not None else secrets.SystemRandom()
    values = [[rng.getrandbits(layout.mask_bits) for _ in range(n)]
              for n in slot_counts(layout, k)]
    offsets = assemble_vectors(layout, k, [r + layout.bound for m in values for r in m])
    corrections = engine.map_chunks(partial(multi_exp_batch, query.dims), offsets)
    return DistanceMasks(query, k, values, corrections)


@dataclass
class DistanceState:
    """A's secret state between request and reply (masks are folded into ``corrections``)."""

    k: int
    query_norm: Ciphertext
    template_norms: list[Ciphertext]
    corrections: list[Ciphertext]

    def __repr__(self) -> str:
        return f"DistanceState(k={self.k})"


def _stream_cts(layout: TemplateLayout, templates: Sequence[AdmittedTemplate]) -> list[Ciphertext]:
    """The templates' ciphertexts in stream order (full ones, then the merged tails)."""
    cts = [c for t in templates for c in t.packed[:layout.n_full]]
    if layout.tail:
        cts += _merge_tails(layout, [t.packed[-1] for t in templates])
    return cts


def _stream(
    layout: TemplateLayout, prepared: Sequence[PreparedTemplate]
) -> tuple[list[Ciphertext], list[PartialDecryption]]:
    """Ciphertexts in stream order and A's partial decryptions of them (merged alike)."""
    cts = _stream_cts(layout, [p.template for p in prepared])
    pds = [d for p in prepared for d in p.partials[:layout.n_full]]
    if layout.tail:
        pds += _merge_tails(layout, [p.partials[-1] for p in prepared])
    return cts, pds


def _opened(share: KeyShare, value: int) -> PartialDecryption:
    """``1 + value·N mod N²`` as a factor of ``share``'s partial decryption: what the two
    partial decryptions of any encryption of ``value`` multiply to.

    Why it masks: B combines ``P_A(c)·(1 + r·N)`` with its own ``P_B(c)`` and obtains
    ``1 + (y + r)·N``, i.e. the masked plaintext, exactly as if A had sent ``c + Enc(r)`` and
    its partial decryption of that, but without a fresh encryption of ``r``.
    """
    key = share.public_key
    return PartialDecryption(key, share.index, (1 + key.encode(value) * key.n) % key.n_squared)


def start_distance(
    query: CheckedQuery,
    templates: Sequence[AdmittedTemplate | PreparedTemplate],
    layout: TemplateLayout,
    masks: PartialPool,
    engine: LocalEngine = SERIAL,
    rng: random.Random | None = None,
    ahead: DistanceMasks | None = None,
) -> tuple[DistanceState, BlindedProductRequest]:
    """A's half before the round trip.

    ``masks`` (A's :class:`PartialPool`) encrypts the masks together with A's partial
    decryption of them; with :class:`PreparedTemplate` inputs A performs no full-size
    exponentiation online. ``rng`` draws the mask values (OS CSPRNG unless a test seeds it);
    ``ahead`` gives masks drawn earlier with :func:`draw_masks` for this query and ``k``
    instead (refused if used before, or drawn for another query or ``k``).
    """
    share_a = masks.share
    key = share_a.public_key
    k = len(templates)
    if k < 1 or len(query.dims) != layout.dim:
        raise ProtocolError(f"need ≥ 1 candidate and a {layout.dim}-dim query")
    plain = [t for t in templates if isinstance(t, AdmittedTemplate)]
    for t in plain:
        check_template(t, layout, key)
    served = len(plain) == k
    if served:
        # Nothing prepared (the oblivious candidates B serves): merge the tails first and
        # partially decrypt the merged stream, n_full·k + ⌈k/g⌉ exponentiations instead of
        # cts_per_template·k (14 instead of 18 at 3072 bits, k = 6).
        stream = _stream_cts(layout, plain)
        stream_pds = engine.map_chunks(partial(partial_decrypt_batch, share_a), stream)
        norms = [t.norm for t in plain]
    else:
        fresh = iter(prepare_templates(plain, share_a, engine))
        prepared = [t if isinstance(t, PreparedTemplate) else next(fresh) for t in templates]
        if any(len(p.partials) != layout.cts_per_template or p.partials[0].index != 1
               for p in prepared):
            raise ProtocolError("prepared template does not match the layout or share 1")
        stream, stream_pds = _stream(layout, prepared)
        norms = [p.template.norm for p in prepared]
    if ahead is None:
        ahead = draw_masks(query, layout, k, engine, rng)
    elif ahead.used or ahead.k != k or ahead.query is not query:
        raise ProtocolError("distance masks were used before or drawn for another request")
    ahead.used = True
    masked, partials = [], []
    for ct, pd, m in zip(stream, stream_pds, ahead.values, strict=True):
        packed_mask = layout.packed.pack_raw(m)
        if served:
            masked.append(ct)
            partials.append(pd.times(_opened(share_a, packed_mask)))
        else:
            mask_ct, mask_pd = masks.encrypt_with_partial(packed_mask)
            masked.append(ct + mask_ct)
            partials.append(pd.times(mask_pd))
    state = DistanceState(k, query.norm, norms, ahead.corrections)
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
    known: MutableMapping[int, PartialDecryption] | None = None,
) -> BlindedProductReply:
    """B's half: decrypt the masked vectors, return re-randomised ``[⟨q(x), v_j⟩]``.

    B refuses requests whose shape differs from its own layout, so A cannot make B decrypt a
    plaintext with fewer mask bits than agreed. ``known``: B's own partial decryptions of
    ciphertexts it already holds (ciphertext value → partial; each used once and removed), e.g.
    of the candidate copies it served, computed before the request arrives; the stream's other
    ciphertexts are partially decrypted here. Served copies come back unmasked (A's mask rides
    in its partial decryption, :func:`start_distance`), so B's precomputed partials of its
    copies apply as they are.
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
    mine = _own_partials(request.masked, share_b, engine, known if known is not None else {})
    contents: list[int] = []
    try:
        for pa, pb, n in zip(request.partials, mine, counts, strict=True):
            contents += layout.packed.unpack_raw(combine(pa, pb), n)
    except PackingOverflowError as exc:
        raise ProtocolError("masked plaintext exceeds the agreed slot layout") from exc
    vectors = assemble_vectors(layout, k, contents)
    products = engine.map_chunks(partial(multi_exp_batch, request.query), vectors)
    return BlindedProductReply(tuple(p.rerandomize(pool) for p in products))


def _own_partials(
    cts: Sequence[Ciphertext],
    share: KeyShare,
    engine: LocalEngine,
    known: MutableMapping[int, PartialDecryption],
) -> list[PartialDecryption]:
    """``share``'s partial decryptions of ``cts``: from ``known`` where present (and removed
    there), the rest computed over the engine."""
    found = [known.pop(int(c.value), None) for c in cts]
    missing = [c for c, pd in zip(cts, found, strict=True) if pd is None]
    fresh = iter(engine.map_chunks(partial(partial_decrypt_batch, share), missing))
    out = [pd if pd is not None else next(fresh) for pd in found]
    if any(pd.index != share.index or pd.key != share.public_key for pd in out):
        raise ProtocolError("a known partial decryption belongs to another share")
    return out


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
    "DistanceMasks",
    "DistanceState",
    "PreparedTemplate",
    "assemble_vectors",
    "draw_masks",
    "finish_distance",
    "helper_blinded_product",
    "prepare_templates",
    "slot_counts",
    "start_distance",
]
