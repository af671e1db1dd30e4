"""Server-computed squared norms and the norm-range check: clients cannot forge ``‖q(x)‖²``.

Why this module exists. The exact stage computes ``[D_j] = [‖x‖²] + [‖y_j‖²] − 2[⟨x, y_j⟩]``.
If either squared norm is *uploaded* by a client, the client controls ``D`` additively: a
querying client that subtracts a constant from its encrypted norm makes its nearest enrolled
subject "match" (turning a decision-only service into a nearest-neighbour oracle), and an
enroller that lowers its template's norm plants a *wolf* template matching every probe. Scaling a
vector (honest norm of a short or long vector) has a milder version of the same effect. So the
servers compute every squared norm themselves and reject vectors that are not the fixed-point
encoding of a unit vector. Nothing a client uploads besides the coordinates is trusted.

Round 1 — blinded square sum (:func:`start_norms` / :func:`helper_norms` / :func:`finish_norms`),
for one query or a batch of templates, one A → B → A round::

    A: the vector as packed slots holding value + 2^s (templates and queries are uploaded that
       way), plus a fresh packed mask r
       (r_i uniform < 2^(s+1+κ)); A partially decrypts                       → NormRequest
    B: combines; v_i = value_i + c_i with c_i = 2^s + r_i. B range-checks every slot
       (v_i < 2^(s+1+κ) + 2^(s+1), nothing above the last used slot) and answers, per valid
       vector, fresh [Σ v_i²], fresh [v_i] per dimension and (templates) a fresh packed [v]
                                                                              → NormReply
    A: [u_i] = [v_i] − c_i;  [‖u‖²] = [Σ v²] − 2·Π_i [v_i]^(c_i) + Σ c_i²
       (templates) stored packed = [pack(v)] − pack(r) = [pack(u + 2^s)]; everything re-randomised

Round 2 — norm-range check (:func:`start_norm_check` / :func:`helper_norm_check` /
:func:`finish_norm_check`), the blinded comparison of :mod:`pura.protocols.secure_min`
(``w = r1·(−1)^π·e + r2``) on ``e = 2(‖u‖² − L) + 1`` and ``e = 2(H − ‖u‖²) + 1``, all comparisons
packed in one joint decryption; B returns its flipped bits in the clear, A un-flips them. A
vector outside ``[L, H]`` (:class:`NormBounds`) raises :class:`EmbeddingRangeError`: a clear
rejection, never "match" and never "no match".

Why B re-encrypts ``v`` instead of A using the client's ciphertexts afterwards. The client's
``[x_i]`` are arbitrary residues mod N; only their *packed* sum is decrypted, so a client can
choose residues whose slots carry into each other. The decoded integers ``u`` are then not
congruent to the ``x_i`` that a later ``Π [x_i]^(…)`` would use, and a norm computed from ``v``
would describe a different vector from the one used for the inner products. From round 1 on,
A uses only B's fresh ``[v_i]`` (minus A's own offsets): the query *is* ``u`` — the integers B
decoded and range-checked — for the norm, the norm check and every inner product, so
``D_j = ‖u − y_j‖²`` holds exactly. The slot check bounds ``|u_i| < 2^(s+2+κ)``, hence
``‖u‖² < d·4^(s+2+κ) ≪ N/2``: no wrap-around, and the norm check is an integer statement. A
template is likewise replaced by B's canonical re-packing of ``u``, so the vector enrolled, the
norm stored and the vector decoded at match time are the same.

Why every derived ciphertext is re-randomised. B knows the randomness of the ``[v_i]`` it made;
``[v_i] − c_i`` without fresh randomness would let B divide out ``(1 + N)^(−c_i)``, learn
``c_i`` and so ``u_i = v_i − c_i`` in the clear the next time it sees the ciphertext.

Wolf check of templates (issue 13, item 14; :class:`MeanBound`, A's layout only). A unit
vector near the population centroid passes the norm check and sits within τ of many strangers.
In round 1 A also computes, from the same fresh ``[v_i]``, ``[⟨u, m⟩] = Π [v_i]^(m_i + M) −
M·Σ[v_i] − ⟨c, m⟩`` for the public mean direction ``m`` (rotated and quantised like a template;
``M`` makes the exponents non-negative), and round 2 carries a third comparison per template,
``e = 2(T − ⟨u, m⟩) + 1``, in the same packed joint decryption: no extra round, and B cannot
tell it from a norm comparison (it sees flipped bits). ``|e|`` again leaks to B up to a factor
2, i.e. roughly ``log₂`` of how far ``cos(u, μ̂)`` lies below the bound. Queries are not
checked: a query is not stored, so it captures nobody else's probes; a query near the centroid
only asks the service's own question, within the caller's budget.

What each party learns. B: ``v = u + c`` with ``c_i`` uniform over ``2^(s+1+κ)`` values, which
is within statistical distance ``2^-κ`` per coordinate of independent of ``u`` (the argument of
:mod:`pura.protocols.enroll`), whether each slot passed the range check (only a malformed vector
fails), and from round 2 the flipped comparison bits plus ``|e|`` up to a factor 2 (the known
leakage of multiplicative blinding, see :mod:`pura.protocols.secure_min`): roughly ``log₂`` of how
far the norm lies inside the bounds. A: ciphertexts and whether the vector was accepted.

What a malicious client can still do. Any vector it submits is, from round 1 on, an integer
vector ``u`` with ``L ≤ ‖u‖² ≤ H``. That is the freedom an honest client already has (any unit
vector, any rounding), so the only remaining question it can ask is the service's own: "is my
unit-norm vector within τ of somebody?". Each ``|u_i| ≤ √H < 2^s + √d`` follows from the norm
bound, which is what keeps a stored template's slots from borrowing at match time (see
:class:`NormBounds`).
"""

from __future__ import annotations

import dataclasses
import math
import random
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

from pura.crypto.paillier import (
    Ciphertext,
    KeyShare,
    MultiExp,
    PublicKey,
    RandomnessPool,
    combine,
    partial_decrypt_batch,
)
from pura.engine.local import SERIAL, LocalEngine
from pura.errors import (
    EmbeddingRangeError,
    KeyMismatchError,
    ParameterError,
    ProtocolError,
)
from pura.protocols.enroll import TemplateLayout
from pura.protocols.messages import (
    AdmittedTemplate,
    NormCheckReply,
    NormCheckRequest,
    NormReply,
    NormRequest,
)
from pura.protocols.secure_min import (
    CompareLayout,
    _blinded,
    _open_slots,
    _pack_and_open,
    _sign_bit,
)

#: Largest batch of vectors (templates of one BulkEnroll) one round may carry.
MAX_VECTORS = 4096

#: Concurrent sub-batches of one template admission. Why: the two rounds alternate between the
#: servers (A masks and partially decrypts, B decrypts and re-encrypts, A combines, ...), so a
#: single batch keeps one server idle at every moment. Two lanes let A work on one sub-batch
#: while B works on the other, which on a 2-core machine running both servers nearly doubles
#: enrolment throughput. Each lane is an independent run of both rounds with its own fresh
#: masks and flips; lanes share only the randomness pools, whose values are each used once
#: (``deque.popleft`` is atomic), so the security argument is that of one batch, per lane.
ADMIT_LANES = 2

#: Smallest sub-batch worth a lane of its own (a lane costs two extra A↔B round trips).
MIN_LANE = 2

# --------------------------------------------------------------------------------------------
# Bounds and layout
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NormBounds:
    """Integer interval ``[low, high]`` that ``‖q(x)‖²`` of every honest query/template lies in.

    Derivation (``q(x) = round(2^s·x)``, ``‖x‖ = 1``, d dimensions; :mod:`pura.crypto.encoding`):
    the rounding error ``δ = q(x) − 2^s·x`` has ``|δ_i| ≤ 1/2``, so ``‖δ‖ ≤ √d/2`` and
    ``2^s − √d/2 ≤ ‖q(x)‖ ≤ 2^s + √d/2``. Squaring::

        4^s − 2^s·√d + d/4  ≤  ‖q(x)‖²  ≤  4^s + 2^s·√d + d/4

    i.e. ``‖q(x)‖² = (1 ± ε)·4^s`` with ``ε = √d·2^-s + d·4^(-s-1)`` (d = 128, s = 11:
    ε ≈ 0.553 %). ``low``/``high`` round this outwards with integer square roots and add
    ``1 + 4^s·2^-30`` units of slack for float64 error in the normalisation and the PCA rotation
    (relative error ~1e-13, far below 2^-30). Clipping to ``[−1, 1]`` in :func:`quantize` only
    moves a coordinate towards its exact value, so it stays inside the bound.

    Consequences for a forger: ``|u_i| ≤ √high < 2^s + √d/2 + 1`` for every accepted vector, so
    scaling a vector by more than ``1 ± ε/2`` is rejected, and a stored template slot
    ``u_i + 2^s ≥ −(√d/2 + 1)`` can only borrow from its neighbour when A's match-time mask
    ``r_i < √d/2 + 1`` (probability ``< 8·2^-(s+1+κ)`` per slot, 2^-46 for the defaults).
    """

    low: int
    high: int
    unit: int

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.unit <= self.high:
            raise ParameterError(
                f"invalid norm bounds [{self.low}, {self.high}] around {self.unit}"
            )

    @classmethod
    def for_encoding(cls, dim: int, scale_bits: int) -> NormBounds:
        """Bounds for unit vectors of ``dim`` coordinates quantised with ``2^scale_bits``."""
        if dim < 1 or scale_bits < 1:
            raise ParameterError(f"need dim ≥ 1 and scale_bits ≥ 1, got {dim}, {scale_bits}")
        unit = 1 << (2 * scale_bits)
        cross = math.isqrt(dim * unit) + 1  # ≥ 2^s·√d
        slack = 1 + (unit >> 30)
        low = unit - cross - slack
        high = unit + cross + (dim + 3) // 4 + slack
        if low <= 0:
            raise ParameterError(
                f"2^{scale_bits} is too small for {dim} dimensions: rounding noise could cancel "
                "the whole norm"
            )
        return cls(low, high, unit)

    @property
    def epsilon(self) -> float:
        """Relative half-width ``max(H − 4^s, 4^s − L) / 4^s`` (documentation, benchmarks)."""
        return max(self.high - self.unit, self.unit - self.low) / self.unit

    def contains(self, value: int) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class MeanBound:
    """The wolf check of templates: ``⟨u, m⟩ ≤ limit`` for the public population mean ``m``.

    ``direction``: ``m = q(R·μ̂)``, the unit population-mean direction of the model's embeddings
    (fitted on LFW DevTrain people, :mod:`pura.protocols.population`) in the encoded space —
    rotated by the deployment's PCA and quantised with ``2^s`` like a template. ``max_cosine``
    ``c``: the largest ``cos(y, μ̂)`` an admitted template may have (calibrated so that no real
    LFW face exceeds it). ``limit``: ``c`` in the integer units of ``⟨u, m⟩``, rounded outwards by
    the worst-case rounding error of both factors: with ``u = 2^s·y + δ``, ``m = 2^s·μ̂' + η``
    (``|δ_i|, |η_i| ≤ 1/2``), ``|⟨u, m⟩ − 4^s·⟨y, μ̂⟩| ≤ 2^s·√d + d/4``, so every unit vector with
    ``cos ≤ c`` passes and nothing with ``cos > c + √d·2^-s + d·4^(-s-1)`` does (d = 128,
    s = 11: ``+0.0055``) — plus the ``1 ± ε/2`` scaling the norm check allows.

    Why a bound on the inner product with the mean: a template's reach (the share of random
    probes within τ of it) grows with how close it lies to where faces are dense; the population
    centroid is the extreme case ("wolf", issue 13 item 14), and no real face lies as close to it
    as the centroid itself (docs/security.md, "Admission").
    """

    direction: tuple[int, ...]
    limit: int
    max_cosine: float
    model_id: str

    def __repr__(self) -> str:
        return f"MeanBound(model_id={self.model_id!r}, max_cosine={self.max_cosine})"

    @classmethod
    def for_direction(
        cls, rotated_unit: Sequence[float], scale_bits: int, max_cosine: float, model_id: str
    ) -> MeanBound:
        """``rotated_unit``: ``R·μ̂`` (unit vector in the space templates are encoded in)."""
        values = [float(v) for v in rotated_unit]
        dim = len(values)
        norm = math.sqrt(sum(v * v for v in values))
        if dim < 1 or not abs(norm - 1.0) < 1e-6:
            raise ParameterError(f"population mean direction must be a unit vector ({norm:.6f})")
        if not 0.0 < max_cosine < 1.0:
            raise ParameterError(f"max_cosine must lie in (0, 1), got {max_cosine}")
        unit = 1 << scale_bits
        direction = tuple(max(-unit, min(unit, round(v * unit))) for v in values)
        slack = math.isqrt(dim * unit * unit) + 1 + (dim + 3) // 4 + 1
        limit = math.ceil(max_cosine * unit * unit) + slack
        return cls(direction, limit, max_cosine, model_id)

    @property
    def dim(self) -> int:
        return len(self.direction)

    def offset_exponents(self) -> tuple[list[int], int]:
        """``(m_i + M)`` (non-negative, for :class:`~pura.crypto.paillier.MultiExp`) and ``M``."""
        shift = max(0, -min(self.direction))
        return [m + shift for m in self.direction], shift


@dataclass(frozen=True)
class NormLayout:
    """Everything A and B must agree on for both rounds (derived from key and template layout).

    ``content_limit``: an honest masked slot holds ``value + 2^s + r`` with
    ``value + 2^s ∈ [0, 2^(s+1)]`` and ``r < 2^(s+1+κ)``, so it is below ``2^(s+1+κ) + 2^(s+1)``;
    B rejects anything larger. ``compare`` sizes the blinded comparison for norms of vectors
    that passed that check: ``|u_i| < content_limit``, so ``‖u‖² < d·content_limit²``.
    """

    template: TemplateLayout
    compare: CompareLayout
    bounds: NormBounds
    #: A's wolf check of templates (None: not run; B needs no copy, it only sees blinded bits).
    mean: MeanBound | None = None

    def with_mean(self, mean: MeanBound) -> NormLayout:
        """This layout with the wolf check of templates switched on (A's side)."""
        if mean.dim != self.template.dim:
            raise ParameterError(f"population mean of dimension {mean.dim}, templates have "
                                 f"{self.template.dim}")
        if mean.limit >= 1 << self.compare.dist_bits:
            raise ParameterError("mean bound exceeds the comparison layout")
        return dataclasses.replace(self, mean=mean)

    @classmethod
    def for_key(cls, key: PublicKey, template: TemplateLayout) -> NormLayout:
        template.check_key(key)
        bounds = NormBounds.for_encoding(template.dim, template.scale_bits)
        limit = (1 << template.mask_bits) + 2 * template.bound
        norm_bits = (template.dim * limit * limit).bit_length()
        return cls(template, CompareLayout.for_key(key, norm_bits, template.kappa), bounds)

    @property
    def content_limit(self) -> int:
        """Exclusive upper bound of an honest masked slot content."""
        return (1 << self.template.mask_bits) + 2 * self.template.bound

    def slot_counts(self) -> list[int]:
        """Used slots of each packed ciphertext of one vector (full ones, then the tail)."""
        t = self.template
        return [t.slots_per_ct] * t.n_full + ([t.tail] if t.tail else [])


# --------------------------------------------------------------------------------------------
# What A asks of B
# --------------------------------------------------------------------------------------------


class NormHelper(Protocol):
    """What A asks of B for norms (implemented by :class:`NormServerB`, and by B's transport)."""

    def norm_square(self, request: NormRequest) -> NormReply: ...

    def norm_check(self, request: NormCheckRequest) -> NormCheckReply: ...


# --------------------------------------------------------------------------------------------
# Round 1: blinded square sum (A)
# --------------------------------------------------------------------------------------------


@dataclass
class NormState:
    """A's secret state of round 1: the masks (never sent, hidden from ``repr``)."""

    repack: bool
    masks: list[list[list[int]]]  # vector → packed ciphertext → slot masks r

    def __repr__(self) -> str:
        return f"NormState(vectors={len(self.masks)}, repack={self.repack})"

    def offsets(self, layout: TemplateLayout, vector: int) -> list[int]:
        """``c_i = 2^s + r_i`` of one vector, in coordinate order."""
        return [layout.bound + r for ct in self.masks[vector] for r in ct]


def start_norms(
    vectors: Sequence[Sequence[Ciphertext]],
    layout: NormLayout,
    share_a: KeyShare,
    pool: RandomnessPool,
    *,
    repack: bool,
    engine: LocalEngine = SERIAL,
    rng: random.Random | None = None,
) -> tuple[NormState, NormRequest]:
    """A: mask every slot of every packed vector and partially decrypt (see module docstring).

    ``vectors``: each one the ``cts_per_template`` packed ciphertexts of a template or query.
    ``rng`` draws the masks (OS CSPRNG unless a test seeds it).
    """
    t = layout.template
    key = share_a.public_key
    if not 0 < len(vectors) <= MAX_VECTORS:
        raise ProtocolError(f"need 1..{MAX_VECTORS} vectors, got {len(vectors)}")
    counts = layout.slot_counts()
    for v in vectors:
        if len(v) != len(counts):
            raise ProtocolError(f"vector has {len(v)} packed ciphertexts, layout wants "
                                f"{len(counts)}")
        if any(c.key != key for c in v):
            raise KeyMismatchError("vector was encrypted under another key")
    rng = rng if rng is not None else secrets.SystemRandom()
    masks = [[[rng.getrandbits(t.mask_bits) for _ in range(n)] for n in counts] for _ in vectors]
    masked = [
        ct + key.encrypt(t.packed.pack_raw(m), pool)
        for v, vm in zip(vectors, masks, strict=True)
        for ct, m in zip(v, vm, strict=True)
    ]
    partials = engine.map_chunks(partial(partial_decrypt_batch, share_a), masked)
    request = NormRequest(t.dim, t.slot_bits, len(vectors), repack, tuple(masked),
                          tuple(partials))
    return NormState(repack, masks), request


# --------------------------------------------------------------------------------------------
# Round 1: B
# --------------------------------------------------------------------------------------------


def _decode_vector(
    plaintexts: Sequence[int], layout: NormLayout
) -> list[int] | None:
    """Slot contents of one vector, or ``None`` if any slot lies outside the honest range."""
    t = layout.template
    limit = layout.content_limit
    out: list[int] = []
    for pt, n in zip(plaintexts, layout.slot_counts(), strict=True):
        if pt >> (n * t.slot_bits):
            return None  # a carry reached an unused slot, or a residue wrapped mod N
        contents = t.packed.unpack_raw(pt, n)
        if any(c >= limit for c in contents):
            return None
        out += contents
    return out


def helper_norms(
    request: NormRequest,
    layout: NormLayout,
    share_b: KeyShare,
    pool: RandomnessPool,
    engine: LocalEngine = SERIAL,
) -> NormReply:
    """B: decrypt, range-check each slot, return fresh ``[Σv²]``, ``[v_i]`` (and packing).

    B refuses a request whose shape differs from its layout (so A cannot make it decrypt a
    plaintext with fewer mask bits than agreed). A vector with an out-of-range slot gets
    ``valid = 0`` and no ciphertexts: it is a malformed client upload, and nothing computed
    from it could be trusted.
    """
    t = layout.template
    if (request.dim, request.slot_bits) != (t.dim, t.slot_bits):
        raise ProtocolError(
            f"norm request layout dim={request.dim}/slot={request.slot_bits} differs from "
            f"B's {t.dim}/{t.slot_bits}"
        )
    per = t.cts_per_template
    n = request.n_vectors
    if not 0 < n <= MAX_VECTORS or len(request.masked) != n * per \
            or len(request.partials) != n * per:
        raise ProtocolError(f"norm request has {len(request.masked)} ciphertexts for {n} vectors")
    key = share_b.public_key
    mine = engine.map_chunks(partial(partial_decrypt_batch, share_b), request.masked)
    plain = [combine(pa, pb) for pa, pb in zip(request.partials, mine, strict=True)]
    valid: list[int] = []
    sums: list[Ciphertext] = []
    dims: list[Ciphertext] = []
    packed: list[Ciphertext] = []
    for j in range(n):
        vec = _decode_vector(plain[j * per:(j + 1) * per], layout)
        valid.append(0 if vec is None else 1)
        if vec is None:
            continue
        total, coords, packing = fresh_vector(vec, t, key, pool, repack=request.repack)
        sums.append(total)
        dims += coords
        packed += packing
    return NormReply(key, tuple(valid), tuple(sums), tuple(dims), tuple(packed))


def fresh_vector(
    vec: Sequence[int], layout: TemplateLayout, key: PublicKey, pool: RandomnessPool,
    *, repack: bool,
) -> tuple[Ciphertext, tuple[Ciphertext, ...], tuple[Ciphertext, ...]]:
    """B: fresh ``[Σv²]``, ``[v_i]`` and (``repack``) the canonical packing of a vector it
    checked. Fresh, never derived from what A sent: B's answer must not carry anything a
    deviating A or client put into its ciphertexts (both admissions of a query use it)."""
    total = key.encrypt(sum(v * v for v in vec), pool)
    dims = tuple(key.encrypt(v, pool) for v in vec)
    s = layout.slots_per_ct
    packed = tuple(key.encrypt(layout.packed.pack_raw(vec[i:i + s]), pool)
                   for i in range(0, layout.dim, s)) if repack else ()
    return total, dims, packed


# --------------------------------------------------------------------------------------------
# Round 1: A finishes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NormedVector:
    """A vector as the servers now define it: ``[‖u‖²]`` (not yet range-checked) and either
    the per-dimension ``[u_i]`` (queries) or the canonical packing of ``u + 2^s`` (templates)."""

    norm: Ciphertext
    dims: tuple[Ciphertext, ...]
    packed: tuple[Ciphertext, ...]
    #: ``[⟨u, m⟩]`` with the population mean (templates, when :attr:`NormLayout.mean` is set).
    mean_dot: Ciphertext | None = None

    def __repr__(self) -> str:
        return f"NormedVector(dims={len(self.dims)}, packed={len(self.packed)})"


def weighted_sums(jobs: Sequence[tuple[Sequence[Ciphertext], Sequence[int]]]) -> list[Ciphertext]:
    """``Π_i b_i^(e_i)`` per (bases, exponents) job; module-level so process pools can run it."""
    return [MultiExp(bases).power_product(exps) for bases, exps in jobs]


def weighted_sum_pairs(
    jobs: Sequence[tuple[Sequence[Ciphertext], Sequence[int], Sequence[int]]],
) -> list[tuple[Ciphertext, Ciphertext]]:
    """``(Π b_i^(e_i), Π b_i^(f_i))`` per job over one shared window table (the cross term of
    the norm and the wolf check's ``[⟨v, m + M⟩]``: the second product costs ~1/8 of the first,
    whose exponents are ~4× longer and which also pays for the table)."""
    out: list[tuple[Ciphertext, Ciphertext]] = []
    for bases, exps, more in jobs:
        table = MultiExp(bases)
        out.append((table.power_product(exps), table.power_product(more)))
    return out


def finish_norms(
    state: NormState,
    reply: NormReply,
    layout: NormLayout,
    pool: RandomnessPool,
    engine: LocalEngine = SERIAL,
) -> list[NormedVector | None]:
    """A: ``[‖u‖²]`` and the re-randomised vector for every valid input (``None`` if rejected)."""
    t = layout.template
    n = len(state.masks)
    n_ok = sum(reply.valid)
    per = t.cts_per_template if state.repack else 0
    if len(reply.valid) != n or len(reply.sums) != n_ok or len(reply.dims) != n_ok * t.dim \
            or len(reply.packed) != n_ok * per:
        raise ProtocolError(f"norm reply does not answer {n} vectors of the agreed shape")
    ok = [j for j in range(n) if reply.valid[j]]
    offsets = [state.offsets(t, j) for j in ok]
    bases = [reply.dims[i * t.dim:(i + 1) * t.dim] for i in range(n_ok)]
    mean = layout.mean if state.repack else None
    dots: list[Ciphertext | None] = [None] * n_ok
    if mean is None:
        cross = engine.map_chunks(weighted_sums, list(zip(bases, offsets, strict=True)))
    else:
        # Wolf check: [⟨u, m⟩] = Π [v_i]^(m_i + M) − M·Σ[v_i] − ⟨c, m⟩, from the same fresh
        # [v_i] as the norm (so it describes the vector that is stored), exponents made
        # non-negative by the shift M.
        shifted, shift = mean.offset_exponents()
        pairs = engine.map_chunks(weighted_sum_pairs, [(b, c, shifted) for b, c in
                                                       zip(bases, offsets, strict=True)])
        cross = [p[0] for p in pairs]
        for i, (b, c) in enumerate(zip(bases, offsets, strict=True)):
            total = b[0]
            for ct in b[1:]:
                total = total + ct
            dots[i] = (pairs[i][1] - total * shift).add_plain(
                -sum(ci * mi for ci, mi in zip(c, mean.direction, strict=True))
            ).rerandomize(pool)
    out: list[NormedVector | None] = [None] * n
    for i, j in enumerate(ok):
        c = offsets[i]
        norm = (reply.sums[i] - cross[i] * 2).add_plain(sum(v * v for v in c)).rerandomize(pool)
        if state.repack:
            packed = tuple(
                p.add_plain(-t.packed.pack_raw(m)).rerandomize(pool)
                for p, m in zip(reply.packed[i * per:(i + 1) * per], state.masks[j], strict=True)
            )
            out[j] = NormedVector(norm, (), packed, dots[i])
        else:
            dims = tuple(b.add_plain(-ci).rerandomize(pool) for b, ci in zip(bases[i], c,
                                                                             strict=True))
            out[j] = NormedVector(norm, dims, ())
    return out


# --------------------------------------------------------------------------------------------
# Round 2: norm-range check
# --------------------------------------------------------------------------------------------


#: Most comparisons one vector gets in round 2: its norm's two bounds and the wolf check.
MAX_CHECKS_PER_VECTOR = 3


@dataclass
class NormCheckState:
    """A's secret flip bits of round 2 (per norm: lower bound, upper bound and, for templates
    under a :class:`MeanBound`, the wolf check)."""

    flips: list[int]
    per_vector: int = 2

    def __repr__(self) -> str:
        return f"NormCheckState(comparisons={len(self.flips)}, per_vector={self.per_vector})"


def start_norm_check(
    norms: Sequence[Ciphertext],
    layout: NormLayout,
    share_a: KeyShare,
    pool: RandomnessPool,
    engine: LocalEngine = SERIAL,
    rng: random.Random | None = None,
    mean_dots: Sequence[Ciphertext] | None = None,
) -> tuple[NormCheckState, NormCheckRequest]:
    """A: blinded ``2(n − L) + 1`` and ``2(H − n) + 1`` per norm (both ``> 0`` ⇔ ``n ∈ [L, H]``)
    and, with ``mean_dots`` (``[⟨u, m⟩]`` per norm), ``2(T − ⟨u, m⟩) + 1`` (``> 0`` ⇔ the
    template is not too close to the population mean, :class:`MeanBound`). All of them share
    the one packed joint decryption: the wolf check costs B no extra round."""
    if not 0 < len(norms) <= MAX_VECTORS:
        raise ProtocolError(f"need 1..{MAX_VECTORS} norms, got {len(norms)}")
    if mean_dots is not None and (layout.mean is None or len(mean_dots) != len(norms)):
        raise ProtocolError("wolf check needs the layout's mean bound and one value per norm")
    rng = rng if rng is not None else secrets.SystemRandom()
    lo, hi = layout.bounds.low, layout.bounds.high
    raw: list[Ciphertext] = []
    flips: list[int] = []
    for k, n in enumerate(norms):
        values = [(n * 2).add_plain(1 - 2 * lo), (n * -2).add_plain(2 * hi + 1)]
        if mean_dots is not None and layout.mean is not None:
            values.append((mean_dots[k] * -2).add_plain(2 * layout.mean.limit + 1))
        for e in values:
            flip, r1, r2 = layout.compare.blinds(rng)
            raw.append(_blinded(e, flip, r1, r2))
            flips.append(flip)
    offsets = [layout.compare.w_offset] * len(raw)
    packed, partials = _pack_and_open(raw, offsets, layout.compare, share_a, pool, engine)
    request = NormCheckRequest(layout.compare.slot_bits, len(raw), tuple(packed), tuple(partials))
    return NormCheckState(flips, 3 if mean_dots is not None else 2), request


def helper_norm_check(
    request: NormCheckRequest,
    layout: NormLayout,
    share_b: KeyShare,
    engine: LocalEngine = SERIAL,
) -> NormCheckReply:
    """B: the sign bit of every blinded comparison (uniform in B's view: A flipped it).

    B does not know which comparisons are norm bounds and which are wolf checks, and needs
    not: it learns only flipped bits. How many a ticket may ask is B's guard's business
    (:mod:`pura.protocols.helper_guard`)."""
    m = request.n_comparisons
    if request.slot_bits != layout.compare.slot_bits \
            or not 0 < m <= MAX_CHECKS_PER_VECTOR * MAX_VECTORS:
        raise ProtocolError("norm check request does not match B's comparison layout")
    contents = _open_slots(request.packed, request.partials, m, layout.compare, share_b, engine)
    return NormCheckReply(share_b.public_key,
                          tuple(_sign_bit(c, layout.compare) for c in contents))


def norm_check_verdicts(state: NormCheckState, reply: NormCheckReply) -> list[tuple[bool, bool]]:
    """A: per vector, (norm in ``[L, H]``, wolf check passed — ``True`` when not run)."""
    if len(reply.bits) != len(state.flips):
        raise ProtocolError(f"norm check reply has {len(reply.bits)} bits, "
                            f"expected {len(state.flips)}")
    ok = [b ^ f == 1 for b, f in zip(reply.bits, state.flips, strict=True)]
    k = state.per_vector
    return [(ok[i] and ok[i + 1], k < 3 or ok[i + 2]) for i in range(0, len(ok), k)]


def finish_norm_check(state: NormCheckState, reply: NormCheckReply) -> list[bool]:
    """A: per vector, whether it passed every check (norm in ``[L, H]``, wolf check)."""
    return [a and b for a, b in norm_check_verdicts(state, reply)]


# --------------------------------------------------------------------------------------------
# A's entry points and B's server object
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedQuery:
    """A query after admission: B-made ``[u_i]`` (re-randomised) and the servers' ``[‖u‖²]``."""

    dims: tuple[Ciphertext, ...]
    norm: Ciphertext

    def __repr__(self) -> str:
        return f"CheckedQuery(dims={len(self.dims)})"


_REJECTED = (
    "is not the fixed-point encoding of a unit vector ({what}); it was rejected, not matched"
)
_WOLF = (
    "lies closer to the population mean of faces than any real face (cosine above {c}): a "
    "'wolf' that would match many strangers; it was rejected, not stored"
)


def _run_rounds(
    vectors: Sequence[Sequence[Ciphertext]],
    layout: NormLayout,
    share_a: KeyShare,
    pool: RandomnessPool,
    helper: NormHelper,
    *,
    repack: bool,
    engine: LocalEngine,
    rng: random.Random | None,
) -> list[NormedVector | EmbeddingRangeError]:
    state, request = start_norms(vectors, layout, share_a, pool, repack=repack, engine=engine,
                                 rng=rng)
    normed = finish_norms(state, helper.norm_square(request), layout, pool, engine)
    return check_normed(normed, layout, share_a, pool, helper,
                        wolf=layout.mean is not None and repack, engine=engine, rng=rng)


def check_normed(
    normed: Sequence[NormedVector | None],
    layout: NormLayout,
    share_a: KeyShare,
    pool: RandomnessPool,
    helper: NormHelper,
    *,
    wolf: bool,
    engine: LocalEngine = SERIAL,
    rng: random.Random | None = None,
    unvalid: str = _REJECTED.format(what="a coordinate lies far outside ±2^s"),
) -> list[NormedVector | EmbeddingRangeError]:
    """Round 2 for vectors whose round 1 is done (this module's or sealed admission's,
    :mod:`pura.protocols.sealed`): the norm-range check and, with ``wolf``, the wolf check, in
    one packed joint decryption. ``None`` entries (B refused them in round 1) become
    ``unvalid`` errors."""
    out: list[NormedVector | EmbeddingRangeError] = [
        v if v is not None else EmbeddingRangeError(unvalid) for v in normed
    ]
    checked = [v for v in normed if v is not None]
    if not checked:
        return out
    dots = [v.mean_dot for v in checked]
    if wolf and any(d is None for d in dots):
        raise ProtocolError("wolf check without the templates' inner products")
    c_state, c_request = start_norm_check(
        [v.norm for v in checked], layout, share_a, pool, engine, rng,
        mean_dots=[d for d in dots if d is not None] if wolf else None)
    verdicts = iter(norm_check_verdicts(c_state, helper.norm_check(c_request)))
    for j, v in enumerate(normed):
        if v is None:
            continue
        in_range, not_wolf = next(verdicts)
        if not in_range:
            out[j] = EmbeddingRangeError(_REJECTED.format(
                what=f"its squared norm lies outside [{layout.bounds.low}, {layout.bounds.high}]"
            ))
        elif not not_wolf and layout.mean is not None:
            out[j] = EmbeddingRangeError(_WOLF.format(c=layout.mean.max_cosine))
    return out


def admit_query(
    packed: Sequence[Ciphertext],
    layout: NormLayout,
    share_a: KeyShare,
    pool: RandomnessPool,
    helper: NormHelper,
    engine: LocalEngine = SERIAL,
    rng: random.Random | None = None,
) -> CheckedQuery:
    """A, before the exact stage: two rounds with B; raises :class:`EmbeddingRangeError`.

    The returned query replaces the client's: its coordinates are B's re-encryption of what B
    decoded and checked, and its norm is computed by the servers (nothing uploaded is trusted).
    ``packed``: the client's ``[q(x) + 2^s]`` (:class:`~pura.protocols.messages.PaillierQuery`).
    No range assumption is made about what the client encrypted: B's slot check and the
    re-encryption in :func:`finish_norms` define the query from here on.
    """
    (result,) = _run_rounds([packed], layout, share_a, pool, helper,
                            repack=False, engine=engine, rng=rng)
    if isinstance(result, EmbeddingRangeError):
        raise EmbeddingRangeError("query " + str(result))
    return CheckedQuery(result.dims, result.norm)


_Item = TypeVar("_Item")


def split_lanes(items: Sequence[_Item], lanes: int) -> list[Sequence[_Item]]:
    """``items`` cut into at most ``lanes`` contiguous parts of at least :data:`MIN_LANE`."""
    count = max(1, min(lanes, len(items) // MIN_LANE))
    size, extra = divmod(len(items), count)
    out: list[Sequence[_Item]] = []
    start = 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def admit_templates(
    templates: Sequence[Sequence[Ciphertext]],
    layout: NormLayout,
    share_a: KeyShare,
    pool: RandomnessPool,
    helper: NormHelper,
    engine: LocalEngine = SERIAL,
    rng: random.Random | None = None,
    lanes: int = ADMIT_LANES,
) -> list[AdmittedTemplate | EmbeddingRangeError]:
    """A, at enrolment: what to store for each uploaded packed template, or why it was refused.

    ``templates``: each upload's packed ciphertexts (any uploaded norm is ignored). The result
    per item is the canonical re-packed template with the servers' norm, or an
    :class:`EmbeddingRangeError` (per item, so one bad upload does not fail a BulkEnroll).
    Two rounds with B per lane: the batch is cut into up to ``lanes`` contiguous sub-batches
    that run concurrently (see :data:`ADMIT_LANES`).
    """
    parts = split_lanes(templates, lanes)
    if len(parts) == 1:
        results = _run_rounds(templates, layout, share_a, pool, helper, repack=True,
                              engine=engine, rng=rng)
    else:
        with ThreadPoolExecutor(len(parts), thread_name_prefix="pura-admit-lane") as lanes_ex:
            futures = [lanes_ex.submit(_run_rounds, part, layout, share_a, pool, helper,
                                       repack=True, engine=engine, rng=rng) for part in parts]
            results = [r for f in futures for r in f.result()]
    return [
        EmbeddingRangeError("template " + str(r)) if isinstance(r, EmbeddingRangeError)
        else AdmittedTemplate(r.packed, r.norm)
        for r in results
    ]


def decoy_template(
    layout: TemplateLayout, key: PublicKey, pool: RandomnessPool
) -> AdmittedTemplate:
    """A's never-matching stand-in for ``Verify`` of an unknown subject (issue 13, item 13).

    Same shape, and so the same exact-stage cost, as a stored template: the zero vector packed
    like ``u + 2^s``, with the norm ``4·4^s + 1``. Every distance to it is then
    ``D = ‖u‖² + 4·4^s + 1 > 4·4^s ≥ τ`` (no threshold of unit vectors exceeds ``4·4^s``), so it
    can never be the reason for a "match", and ``D`` stays far inside the comparison layout
    (``< 2^dist_bits``). Not admitted (its norm is outside ``[L, H]`` on purpose): only A makes
    one, and it is never stored.
    """
    s = layout.slots_per_ct
    zero = [0] * layout.dim
    packed = tuple(key.encrypt(layout.packed.pack(zero[i:i + s]), pool)
                   for i in range(0, layout.dim, s))
    return AdmittedTemplate(packed, key.encrypt(4 * layout.bound * layout.bound + 1, pool))


class NormServerB:
    """B's side of both rounds (holds share 2; no per-request state). A :class:`NormHelper`."""

    def __init__(
        self,
        share: KeyShare,
        layout: NormLayout,
        pool: RandomnessPool | None = None,
        engine: LocalEngine = SERIAL,
    ) -> None:
        if share.index != 2:
            raise ParameterError("the norm helper must hold key share 2")
        self.share = share
        self.layout = layout
        self.pool = pool if pool is not None else RandomnessPool(share.public_key)
        self.engine = engine

    def __repr__(self) -> str:
        return f"NormServerB(key={self.share.public_key.key_id})"

    def norm_square(self, request: NormRequest) -> NormReply:
        return helper_norms(request, self.layout, self.share, self.pool, self.engine)

    def norm_check(self, request: NormCheckRequest) -> NormCheckReply:
        return helper_norm_check(request, self.layout, self.share, self.engine)


__all__ = [
    "ADMIT_LANES",
    "MAX_CHECKS_PER_VECTOR",
    "MAX_VECTORS",
    "CheckedQuery",
    "MeanBound",
    "NormBounds",
    "NormCheckState",
    "NormHelper",
    "NormLayout",
    "NormServerB",
    "NormState",
    "NormedVector",
    "admit_query",
    "admit_templates",
    "check_normed",
    "decoy_template",
    "finish_norm_check",
    "finish_norms",
    "fresh_vector",
    "helper_norm_check",
    "helper_norms",
    "norm_check_verdicts",
    "split_lanes",
    "start_norm_check",
    "start_norms",
    "weighted_sum_pairs",
    "weighted_sums",
]
