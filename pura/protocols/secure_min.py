"""Secure argmin tournament and secure threshold comparison (SOCI-style, semi-honest A and B).

Both are built on one *blinded comparison*. For integers ``a, b ∈ [0, 2^ℓ)`` (ℓ = ``dist_bits``)
A forms ``e = 2(a − b) − 1`` (never 0; ``e > 0 ⇔ b < a``), draws a flip bit ``π``, a
multiplicative blind ``r1 ∈ [2^κ, 2^(κ+1))`` and an additive blind ``r2 ∈ [0, r1)``, and lets B
decrypt ``w = r1·(−1)^π·e + r2``. Since ``|e| ≥ 1`` and ``r2 < r1``, ``sign(w) = (−1)^π·sign(e)``:
B's bit ``β = [w > 0]`` equals the true outcome XOR π, so B's view of the outcome is a uniform
bit. B does learn ``|w|``, i.e. ``|e|`` up to the factor ``r1/2^κ ∈ [1, 2)`` — the magnitude
(≈ log₂ of the distance gap, ±1 bit) of every comparison. This is the known leakage of
multiplicative blinding (SOCI); docs/security.md states it.

Tournament round (one joint decryption per round, all comparisons packed)::

    A → B  per pair (a, b): w, y_D = Δ_D + 2^ℓ + ρ_D, y_I = Δ_I + 2^ℓ + ρ_I
           (Δ = value_b − value_a, ρ uniform < 2^(ℓ+1+κ): y is 2^-κ-close to uniform)
           packed 3 values per comparison in slots of κ + ℓ + 4 bits, + A's partial decryption
    B → A  fresh [β], [β·y_D], [β·y_I]
    A      [β·Δ] = [β·y] − ρ'·[β];  t = β ⊕ π;  [t·Δ] = π ? [Δ] − [β·Δ] : [β·Δ]
           [D_min] = [D_a] + [t·Δ_D],  [I_min] = [I_a] + [t·Δ_I]

A never sees a plaintext; B sees masked values and flipped bits only. ⌈log₂ k⌉ rounds.

Threshold (one round): the same blinded comparison of ``e = 2(τ − D_min) + 1`` (``> 0 ⇔ D_min ≤
τ``). A also sends two ciphertexts ``X_0, X_1`` with its partial decryptions of both:
``X_{1−π} = [σ(I_min)]`` re-randomised (``σ`` a secret permutation of the k positions) and
``X_π`` a fresh encryption of a uniform value below ``k``. B decrypts ``X_β``, refuses unless
the value lies in ``[0, k)`` (so no deviating A can have B open a stored template or anything
but a position), and returns β in the clear and its partial decryption of ``X_β`` only. A's
decision is ``β ⊕ π``; the opening gives A ``σ(I_min)`` exactly when the decision is *match*
(on no match A gets its own random filler). What B sees while checking is uniform on
``[0, k)`` whichever choice it opened. This folds step 5 of the architecture (index opening)
into the threshold round without giving A the nearest index on a non-match.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from pura.crypto.paillier import (
    Ciphertext,
    KeyShare,
    PackedLayout,
    PartialDecryption,
    PartialPool,
    PublicKey,
    RandomnessPool,
    combine,
    partial_decrypt_batch,
)
from pura.crypto.params import STATISTICAL_SECURITY_BITS
from pura.engine.local import SERIAL, LocalEngine
from pura.errors import (
    CryptoError,
    HelperRefusedError,
    PackingOverflowError,
    ParameterError,
    ProtocolError,
)
from pura.protocols.messages import (
    ArgminReply,
    ArgminRequest,
    CompareReply,
    CompareRequest,
    ThresholdReply,
    ThresholdRequest,
)


@dataclass(frozen=True)
class CompareLayout:
    """Slot sizes of the comparison packing, derived from ``dist_bits`` (ℓ) and κ."""

    dist_bits: int
    slots_per_ct: int
    kappa: int = STATISTICAL_SECURITY_BITS

    @classmethod
    def for_key(
        cls, key: PublicKey, dist_bits: int, kappa: int = STATISTICAL_SECURITY_BITS
    ) -> CompareLayout:
        slots = PackedLayout.max_slots(key, dist_bits + kappa + 4)
        if slots < 3:
            raise ParameterError("key too small for one packed comparison")
        return cls(dist_bits, slots, kappa)

    @property
    def slot_bits(self) -> int:
        """|w| < 2^(κ+ℓ+3) → content w + 2^(κ+ℓ+3) < 2^(κ+ℓ+4); y < 2^(ℓ+2+κ) fits as well."""
        return self.kappa + self.dist_bits + 4

    @property
    def w_offset(self) -> int:
        return 1 << (self.kappa + self.dist_bits + 3)

    @property
    def mask_bits(self) -> int:
        return self.dist_bits + 1 + self.kappa

    @property
    def packed(self) -> PackedLayout:
        return PackedLayout(self.slot_bits, self.slots_per_ct)

    def blinds(self, rng: random.Random) -> tuple[int, int, int]:
        """(flip π, r1 ∈ [2^κ, 2^(κ+1)), r2 ∈ [0, r1))."""
        r1 = (1 << self.kappa) | rng.getrandbits(self.kappa)
        return rng.getrandbits(1), r1, rng.randrange(r1)

    def y_offset(self, rng: random.Random) -> int:
        """``2^ℓ + ρ``: makes ``Δ ∈ (−2^ℓ, 2^ℓ)`` non-negative and hides it (2^-κ)."""
        return (1 << self.dist_bits) + rng.getrandbits(self.mask_bits)


def _blinded(e: Ciphertext, flip: int, r1: int, r2: int) -> Ciphertext:
    """``[r1·(−1)^π·e + r2]`` (raw, signed; the packing adds the slot offset)."""
    return (e * (-r1 if flip else r1)).add_plain(r2)


def _horner_pack(values: Sequence[Ciphertext], slot_bits: int) -> Ciphertext:
    acc = values[-1]
    for ct in reversed(values[:-1]):
        acc = acc.shift_slots(slot_bits) + ct
    return acc


def _pack_and_open(
    raw: Sequence[Ciphertext],
    offsets: Sequence[int],
    layout: CompareLayout,
    share_a: KeyShare,
    pool: RandomnessPool,
    engine: LocalEngine,
) -> tuple[list[Ciphertext], list[PartialDecryption]]:
    """Pack signed value ciphertexts + plaintext offsets, re-randomise, partially decrypt."""
    s = layout.slots_per_ct
    packed = []
    for i in range(0, len(raw), s):
        ct = _horner_pack(raw[i:i + s], layout.slot_bits)
        packed.append(ct.add_plain(layout.packed.pack_raw(offsets[i:i + s])).rerandomize(pool))
    return packed, engine.map_chunks(partial(partial_decrypt_batch, share_a), packed)


def _open_slots(
    packed: Sequence[Ciphertext],
    partials_a: Sequence[PartialDecryption],
    n_values: int,
    layout: CompareLayout,
    share_b: KeyShare,
    engine: LocalEngine,
) -> list[int]:
    """B: combine and unpack ``n_values`` slot contents."""
    s = layout.slots_per_ct
    expected = -(-n_values // s)
    if len(packed) != expected or len(partials_a) != expected:
        raise ProtocolError(f"{len(packed)} packed ciphertexts for {n_values} values")
    mine = engine.map_chunks(partial(partial_decrypt_batch, share_b), packed)
    out: list[int] = []
    try:
        for i, (pa, pb) in enumerate(zip(partials_a, mine, strict=True)):
            count = min(s, n_values - i * s)
            out += layout.packed.unpack_raw(combine(pa, pb), count)
    except PackingOverflowError as exc:
        raise ProtocolError("packed comparison exceeds the agreed slot layout") from exc
    return out


def _sign_bit(content: int, layout: CompareLayout) -> int:
    w = content - layout.w_offset
    if w == 0:
        raise ProtocolError("blinded comparison value is zero: not a valid comparison")
    return 1 if w > 0 else 0


Entry = tuple[Ciphertext, Ciphertext]
"""``([D], [I])``: an encrypted distance and the encrypted position it belongs to."""


@dataclass
class _Pair:
    a: Entry
    delta_d: Ciphertext
    delta_i: Ciphertext
    flip: int
    y_off_d: int
    y_off_i: int


@dataclass
class ArgminA:
    """A's side of the tournament over ``entries`` (A has already shuffled them).

    Use: ``while not t.done: t.finish_round(channel(t.start_round()))``; then :attr:`result`.
    """

    entries: list[Entry]
    layout: CompareLayout
    share_a: KeyShare
    pool: RandomnessPool
    engine: LocalEngine = SERIAL
    rng: random.Random | None = None
    _pairs: list[_Pair] = field(default_factory=list, repr=False)
    _bye: Entry | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.entries:
            raise ProtocolError("argmin needs at least one entry")
        if self.rng is None:
            self.rng = self.pool.rng

    @property
    def done(self) -> bool:
        return len(self.entries) == 1

    @property
    def rounds_left(self) -> int:
        return (len(self.entries) - 1).bit_length()

    @property
    def result(self) -> Entry:
        if not self.done:
            raise ProtocolError("tournament not finished")
        return self.entries[0]

    def start_round(self) -> CompareRequest:
        if self.done or self._pairs:
            raise ProtocolError("no round to start")
        assert self.rng is not None
        raw: list[Ciphertext] = []
        offsets: list[int] = []
        ents = self.entries
        self._bye = ents[-1] if len(ents) % 2 else None
        for a, b in zip(ents[0::2], ents[1::2], strict=False):
            flip, r1, r2 = self.layout.blinds(self.rng)
            e = ((a[0] - b[0]) * 2).add_plain(-1)
            pair = _Pair(a, b[0] - a[0], b[1] - a[1], flip,
                         self.layout.y_offset(self.rng), self.layout.y_offset(self.rng))
            raw += [_blinded(e, flip, r1, r2), pair.delta_d, pair.delta_i]
            offsets += [self.layout.w_offset, pair.y_off_d, pair.y_off_i]
            self._pairs.append(pair)
        packed, partials = _pack_and_open(raw, offsets, self.layout, self.share_a, self.pool,
                                          self.engine)
        return CompareRequest(self.layout.slot_bits, len(self._pairs), tuple(packed),
                              tuple(partials))

    def finish_round(self, reply: CompareReply) -> None:
        m = len(self._pairs)
        if not m or not len(reply.bits) == len(reply.sel_dist) == len(reply.sel_index) == m:
            raise ProtocolError(f"compare reply does not answer {m} comparisons")
        winners: list[Entry] = []
        for p, beta, bd, bi in zip(self._pairs, reply.bits, reply.sel_dist, reply.sel_index,
                                   strict=True):
            t_d = _select(p.delta_d, beta, bd, p.y_off_d, p.flip)
            t_i = _select(p.delta_i, beta, bi, p.y_off_i, p.flip)
            winners.append((p.a[0] + t_d, p.a[1] + t_i))
        if self._bye is not None:
            winners.append(self._bye)
        self.entries, self._pairs, self._bye = winners, [], None


def _select(delta: Ciphertext, beta: Ciphertext, beta_y: Ciphertext, y_off: int,
            flip: int) -> Ciphertext:
    """``[t·Δ]`` from B's ``[β]``, ``[β·y]`` with ``y = Δ + y_off`` and ``t = β ⊕ π``."""
    beta_delta = beta_y - beta * y_off
    return delta - beta_delta if flip else beta_delta


def helper_compare(
    request: CompareRequest,
    layout: CompareLayout,
    share_b: KeyShare,
    pool: RandomnessPool,
    engine: LocalEngine = SERIAL,
) -> CompareReply:
    """B: decrypt the packed round, return fresh ``[β]``, ``[β·y_D]``, ``[β·y_I]``."""
    if request.slot_bits != layout.slot_bits or not 0 < request.n_comparisons <= 1 << 16:
        raise ProtocolError("compare request does not match B's comparison layout")
    key = share_b.public_key
    contents = _open_slots(request.packed, request.partials, 3 * request.n_comparisons, layout,
                           share_b, engine)
    bits, sel_d, sel_i = [], [], []
    for j in range(request.n_comparisons):
        w, y_d, y_i = contents[3 * j:3 * j + 3]
        beta = _sign_bit(w, layout)
        bits.append(key.encrypt(beta, pool))
        sel_d.append(key.encrypt(beta * y_d, pool))
        sel_i.append(key.encrypt(beta * y_i, pool))
    return CompareReply(tuple(bits), tuple(sel_d), tuple(sel_i))


def secure_argmin(
    entries: Sequence[Entry],
    layout: CompareLayout,
    share_a: KeyShare,
    pool: RandomnessPool,
    ask_b: Callable[[CompareRequest], CompareReply],
    engine: LocalEngine = SERIAL,
    rng: random.Random | None = None,
) -> Entry:
    """Run the whole tournament with ``ask_b`` as B (e.g. ``HelperChannel.compare_select``)."""
    t = ArgminA(list(entries), layout, share_a, pool, engine, rng)
    while not t.done:
        t.finish_round(ask_b(t.start_round()))
    return t.result


# --------------------------------------------------------------------------------------------
# One-round argmin (all pairs, unflipped, under A's shuffle)
# --------------------------------------------------------------------------------------------


def pairs(k: int) -> list[tuple[int, int]]:
    """``(a, b)`` with ``a < b`` in the order both servers pack them."""
    return [(a, b) for a in range(k) for b in range(a + 1, k)]


def one_round_cts(layout: CompareLayout, k: int) -> int:
    """Packed ciphertexts of a one-round argmin over ``k`` candidates."""
    return -(-(k * (k - 1) // 2 + k) // layout.slots_per_ct)


def prefer_one_round(layout: CompareLayout, k: int) -> bool:
    """One joint decryption per ciphertext in one round beats one per tournament round only
    while the ``k(k−1)/2`` comparisons fit in at most ``⌈log₂ k⌉`` ciphertexts (k ≤ 16 at
    3072 bits); above that the tournament moves fewer bits."""
    return k > 1 and one_round_cts(layout, k) <= (k - 1).bit_length()


@dataclass
class ArgminState:
    """A's secret masks ``ρ_j`` of the one-round argmin."""

    rho: list[int]

    def __repr__(self) -> str:
        return f"ArgminState(k={len(self.rho)})"


def start_argmin(
    distances: Sequence[Ciphertext],
    layout: CompareLayout,
    share_a: KeyShare,
    pool: RandomnessPool,
    engine: LocalEngine = SERIAL,
    rng: random.Random | None = None,
) -> tuple[ArgminState, ArgminRequest]:
    """A: every pair's blinded ``e = 2(D_a − D_b) − 1`` (no flip bit) and every masked
    ``y_j = D_j + ρ_j``, packed and partially decrypted.

    Why no flip bits here, unlike the tournament: A has already put the candidates in a fresh
    secret random order, so the ranking B learns is a uniformly random permutation of
    positions that mean nothing to B. What B learns beyond the tournament is the sign of each
    pairwise gap among those anonymous positions; the gaps' magnitudes (±1 bit, SOCI's
    leakage) it learnt before too. Nothing here involves τ, so B still learns nothing about
    the decision (docs/security.md, "Secure minimum").
    """
    k = len(distances)
    if not 0 < k <= 1 << 8:
        raise ProtocolError(f"one-round argmin takes 1..256 candidates, got {k}")
    rng = rng if rng is not None else pool.rng
    raw: list[Ciphertext] = []
    for a, b in pairs(k):
        _, r1, r2 = layout.blinds(rng)
        raw.append(_blinded(((distances[a] - distances[b]) * 2).add_plain(-1), 0, r1, r2))
    rho = [rng.getrandbits(layout.mask_bits - 1) for _ in range(k)]  # y_j < 2^(ℓ+κ+1)
    offsets = [layout.w_offset] * len(raw) + rho
    packed, partials = _pack_and_open([*raw, *distances], offsets, layout, share_a, pool,
                                      engine)
    return ArgminState(rho), ArgminRequest(layout.slot_bits, k, tuple(packed), tuple(partials))


def helper_argmin(
    request: ArgminRequest,
    layout: CompareLayout,
    share_b: KeyShare,
    pool: RandomnessPool,
    engine: LocalEngine = SERIAL,
) -> ArgminReply:
    """B: the position that wins every comparison; fresh one-hot ``[e_j]`` and ``[y_{j*}]``.

    A comparison (a, b) is won by b exactly when ``w > 0`` (``D_b < D_a``); ties go to the
    lower position, so honest requests always have exactly one undefeated position. Anything
    else (a malformed or inconsistent request) is refused rather than guessed at.
    """
    k = request.n_comparisons
    if request.slot_bits != layout.slot_bits or not 0 < k <= 1 << 8:
        raise ProtocolError("argmin request does not match B's comparison layout")
    key = share_b.public_key
    compared = pairs(k)
    contents = _open_slots(request.packed, request.partials, len(compared) + k, layout,
                           share_b, engine)
    lost = [False] * k
    for (a, b), w in zip(compared, contents, strict=False):  # the k masked values follow
        lost[a if _sign_bit(w, layout) else b] = True
    winners = [j for j in range(k) if not lost[j]]
    if len(winners) != 1:
        raise ProtocolError("argmin request is not a consistent set of comparisons")
    (win,) = winners
    onehot = tuple(key.encrypt(int(j == win), pool) for j in range(k))
    return ArgminReply(onehot, key.encrypt(contents[len(compared) + win], pool))


def finish_argmin(
    state: ArgminState, reply: ArgminReply, labels: Sequence[int] | None = None
) -> Entry:
    """A: ``[D_min] = [y_{j*}] − Σ_j ρ_j·[e_j]`` and ``[I_min] = Σ_j labels_j·[e_j]``.

    ``labels`` defaults to the positions ``0..k−1``; A passes a secret permutation ``σ`` so
    that the value the threshold round opens (and B range-checks) is ``σ(j*)``, which B cannot
    relate to the winner ``j*`` it saw here (see :func:`start_threshold`).
    """
    k = len(state.rho)
    if len(reply.onehot) != k:
        raise ProtocolError(f"argmin reply has {len(reply.onehot)} indicators, expected {k}")
    tags = list(range(k)) if labels is None else list(labels)
    if len(tags) != k:
        raise ProtocolError(f"{len(tags)} labels for {k} candidates")
    d_min, i_min = reply.masked_min, reply.onehot[0] * tags[0]
    for j, (e, rho) in enumerate(zip(reply.onehot, state.rho, strict=True)):
        d_min = d_min - e * rho
        if j:
            i_min = i_min + e * tags[j]
    return d_min, i_min


def one_round_argmin(
    distances: Sequence[Ciphertext],
    layout: CompareLayout,
    share_a: KeyShare,
    pool: RandomnessPool,
    ask_b: Callable[[ArgminRequest], ArgminReply],
    engine: LocalEngine = SERIAL,
    rng: random.Random | None = None,
    labels: Sequence[int] | None = None,
) -> Entry:
    """``([D_min], [I_min])`` in one round with ``ask_b`` as B (e.g. ``HelperChannel.argmin``)."""
    state, request = start_argmin(distances, layout, share_a, pool, engine, rng)
    return finish_argmin(state, ask_b(request), labels)


# --------------------------------------------------------------------------------------------
# Threshold
# --------------------------------------------------------------------------------------------


#: Most candidates a threshold opening may range over (B refuses a larger ``k``).
MAX_OPEN_RANGE = 1 << 16


@dataclass
class ThresholdState:
    flip: int
    choices: tuple[Ciphertext, Ciphertext]
    partials: tuple[PartialDecryption, PartialDecryption]
    labels: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        return "ThresholdState(<secret>)"


@dataclass(frozen=True)
class Decision:
    """A's output: ``matched`` and, only when matched, the winning position."""

    matched: bool
    index: int | None


def start_threshold(
    d_min: Ciphertext,
    i_min: Ciphertext,
    tau: int,
    layout: CompareLayout,
    share_a: KeyShare,
    pool: RandomnessPool,
    rng: random.Random | None = None,
    *,
    k: int,
    labels: Sequence[int] | None = None,
    masks: PartialPool | None = None,
    engine: LocalEngine = SERIAL,
) -> tuple[ThresholdState, ThresholdRequest]:
    """A: blinded ``τ − D_min`` plus the two choices (see module docstring).

    ``i_min`` must encrypt a value below ``k``: either a position, or — better — ``σ(position)``
    for a secret permutation ``σ`` of ``range(k)`` given as ``labels`` (``labels[j] = σ(j)``;
    :func:`finish_argmin` builds such an ``i_min``). The other choice is a fresh encryption of a
    uniform value below ``k``. Why both: B checks that the value it helps open lies in
    ``[0, k)`` (so a deviating A cannot place a stored template there), and B *sees* that value
    while checking; with ``σ`` secret, what B sees is uniform on ``[0, k)`` whichever choice it
    opens, so it tells B neither the decision nor the winning position it saw in the argmin.
    ``masks`` (A's :class:`PartialPool`) makes the fresh choice and A's partial decryption of
    it without an exponentiation; ``engine`` runs A's two remaining ones side by side.
    """
    if not 0 <= tau < 1 << layout.dist_bits:
        raise ParameterError(f"threshold must be in [0, 2^{layout.dist_bits})")
    if not 0 < k <= MAX_OPEN_RANGE:
        raise ParameterError(f"k must be in 1..{MAX_OPEN_RANGE}, got {k}")
    if labels is not None and sorted(labels) != list(range(k)):
        raise ParameterError("labels must be a permutation of range(k)")
    rng = rng if rng is not None else pool.rng
    key = share_a.public_key
    flip, r1, r2 = layout.blinds(rng)
    e = (d_min * -2).add_plain(2 * tau + 1)
    packed = _blinded(e, flip, r1, r2).add_plain(layout.w_offset).rerandomize(pool)
    index_ct = i_min.rerandomize(pool)
    filler = rng.randrange(k)
    if masks is not None:
        other, other_pd = masks.encrypt_with_partial(filler)
        packed_pd, index_pd = engine.map_chunks(partial(partial_decrypt_batch, share_a),
                                                [packed, index_ct])
    else:
        other = key.encrypt(filler, pool)
        packed_pd, index_pd, other_pd = engine.map_chunks(
            partial(partial_decrypt_batch, share_a), [packed, index_ct, other])
    if flip == 0:
        choices, partials = (other, index_ct), (other_pd, index_pd)
    else:
        choices, partials = (index_ct, other), (index_pd, other_pd)
    request = ThresholdRequest(layout.slot_bits, k, packed, packed_pd, choices, partials)
    return ThresholdState(flip, choices, partials, tuple(labels) if labels else None), request


def helper_threshold(
    request: ThresholdRequest, layout: CompareLayout, share_b: KeyShare, *, k: int | None = None
) -> ThresholdReply:
    """B: the (flipped) bit and its partial decryption of the chosen ciphertext only — after
    checking that the chosen ciphertext decrypts below ``k``.

    ``k``: the candidate count B itself saw for this query (its ticket); ``None`` trusts the
    request's ``k`` up to :data:`MAX_OPEN_RANGE` (protocol tests without a ticket). Why the
    check: without it, a deviating A could place a stored template (or any ciphertext) in both
    choices and have B open it — "three calls decrypt a stored template" (issue 12). With it, the
    opening can only ever reveal a value in ``[0, k)``; a request that would reveal anything else
    is refused with :class:`HelperRefusedError`, and B's refusal tells A one bit (below ``k`` or
    not) about a value it chose, once per query ticket.
    """
    if request.slot_bits != layout.slot_bits:
        raise ProtocolError("threshold request does not match B's comparison layout")
    bound = request.k if k is None else k
    if request.k != bound or not 0 < bound <= MAX_OPEN_RANGE:
        raise HelperRefusedError(f"threshold request for k={request.k}, B expects k={bound}")
    (content,) = _open_slots([request.packed], [request.partial], 1, layout, share_b, SERIAL)
    beta = _sign_bit(content, layout)
    mine = share_b.partial_decrypt(request.choices[beta])
    try:
        value = combine(request.choice_partials[beta], mine)
    except CryptoError as exc:
        raise HelperRefusedError("A's partial decryption of the chosen value is invalid") from exc
    if not 0 <= value < bound:
        raise HelperRefusedError(f"threshold opening outside [0, {bound}): refused")
    return ThresholdReply(beta, mine)


def finish_threshold(state: ThresholdState, reply: ThresholdReply, share_a: KeyShare) -> Decision:
    """A: the decision ``β ⊕ π``; on a match the opened value, mapped back through ``σ⁻¹``."""
    matched = (reply.bit ^ state.flip) == 1
    if not matched:
        return Decision(False, None)
    value = combine(state.partials[reply.bit], reply.partial)
    if state.labels is None:
        return Decision(True, value)
    if value not in state.labels:
        raise ProtocolError("opened value is not a candidate label")
    return Decision(True, state.labels.index(value))


__all__ = [
    "MAX_OPEN_RANGE",
    "ArgminA",
    "ArgminState",
    "CompareLayout",
    "Decision",
    "Entry",
    "ThresholdState",
    "finish_argmin",
    "finish_threshold",
    "helper_argmin",
    "helper_compare",
    "helper_threshold",
    "one_round_argmin",
    "one_round_cts",
    "pairs",
    "prefer_one_round",
    "secure_argmin",
    "start_argmin",
    "start_threshold",
]
