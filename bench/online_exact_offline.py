"""Offline phase of the share-based exact stage (issue 16): dealer-free, threshold Paillier.

A and B make one query's :class:`~bench.online_exact_shares.CorrelationsA` /
:class:`~bench.online_exact_shares.CorrelationsB` with the product's own key (A holds share 1,
B share 2; neither can decrypt alone) and convert Paillier ciphertexts into additive shares.
Every value either party decrypts is a product it is meant to learn, statistically masked by
the other party (``2^-κ``, κ = 40, as the product's masks). Three messages::

    A → B  [a^A_i]                                      (d fresh encryptions)
    B → A  [a^B_i], [u_ℓ·2^off_ℓ], [δ_c,j·2^off];
           P = pack([⟨a^A,b^B_j⟩ + ρ_j], [⟨a^A,a^B⟩ + ρ_χ]),
           B's partial decryption of P                  → A opens P: A's share of the cross terms
    A → B  [⟨a^B,b^A_j⟩ + σ_j] (Horner, from bit 0), [scalar_ℓ·u_ℓ + R − t_ℓ], [Σ_j M_j δ_c,j]
           at the offsets of :class:`BundlePlan`, A's partial decryptions → B opens them

``[x]`` is an encryption under the joint key. B's multi-exponentiations run over A's ``d``
ciphertexts (one Straus table, :class:`~pura.crypto.paillier.MultiExp`), A's over B's. OLE
(``t^A + t^B = scalar·u``) for every blinded comparison and for the index opening; a random
1-of-k OT (B: ``c``, ``M_c``; A: ``M_0..M_{k-1}``) for the winner's threshold value. Nothing in
here knows about rounds of the online phase; it only fills the dataclasses.

Conversions (:func:`convert_templates_request` / :func:`convert_query_request`): one masked
joint decryption turns packed ciphertexts into shares — B learns ``y + 2^s + r`` per slot
(exactly what it learns in today's distance round), A keeps ``−r``. Stored templates use A's
per-template partial decryptions (``PreparedTemplate``, :func:`prepare_norms`) and its
``PartialPool``, so A does no full exponentiation for them; the servers' norms ride in spare
slots of the merged tails (:class:`ConversionPlan`).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.online_exact_shares import (
    MOD,
    RING_BITS,
    Blinds,
    CorrelationsA,
    CorrelationsB,
    InputShares,
    ObjArray,
    Shape,
)
from pura.crypto.paillier import (
    Ciphertext,
    KeyShare,
    MultiExp,
    PackedLayout,
    PartialDecryption,
    PartialPool,
    PublicKey,
    RandomnessPool,
    combine,
)
from pura.errors import PackingOverflowError, ProtocolError
from pura.protocols.enroll import TemplateLayout
from pura.protocols.norms import CheckedQuery
from pura.protocols.secure_distance import PreparedTemplate, assemble_vectors, slot_counts

# --------------------------------------------------------------------------------------------
# layouts and wire helpers
# --------------------------------------------------------------------------------------------


def _layout(key: PublicKey, slot_bits: int, count: int) -> PackedLayout:
    return PackedLayout(slot_bits, min(count, PackedLayout.max_slots(key, slot_bits)))


def cross_bits(shape: Shape) -> int:
    """``⟨a^A, b^B⟩ < d·2^(2·triple_bits)``: the bits of one cross term of a triple."""
    return 2 * shape.triple_bits + (shape.dim - 1).bit_length()


def ole_bits() -> int:
    """``scalar·u < 2^256`` (both in ``Z_M``)."""
    return 2 * RING_BITS


def _cts_bytes(cts: Sequence[Ciphertext | PartialDecryption]) -> bytes:
    return b"".join(c.raw_bytes() for c in cts)


def _parse_cts(key: PublicKey, data: bytes, count: int) -> list[Ciphertext]:
    w = key.ciphertext_bytes
    if len(data) != w * count:
        raise ProtocolError(f"expected {count} ciphertexts, got {len(data)} bytes")
    return [Ciphertext.from_raw(key, data[i * w:(i + 1) * w]) for i in range(count)]


def _parse_pds(key: PublicKey, index: int, data: bytes, count: int) -> list[PartialDecryption]:
    w = key.ciphertext_bytes
    if len(data) != w * count:
        raise ProtocolError(f"expected {count} partial decryptions, got {len(data)} bytes")
    return [PartialDecryption.from_raw(key, index, data[i * w:(i + 1) * w])
            for i in range(count)]


def _horner(values: Sequence[Ciphertext], slot_bits: int) -> Ciphertext:
    """``Σ_i [x_i]·2^(i·slot_bits)`` with ``(n−1)·slot_bits`` squarings."""
    acc = values[-1]
    for ct in reversed(values[:-1]):
        acc = acc.shift_slots(slot_bits) + ct
    return acc


def _pack(values: Sequence[Ciphertext], offsets: Sequence[int], layout: PackedLayout,
          pool: RandomnessPool) -> list[Ciphertext]:
    """Pack ciphertexts of non-negative-after-offset values into as few ciphertexts as fit,
    add the plaintext offsets (the masks) and re-randomise (the receiver must not link the
    result to the inputs it made)."""
    out = []
    for i in range(0, len(values), layout.n_slots):
        ct = _horner(values[i:i + layout.n_slots], layout.slot_bits)
        ct = ct.add_plain(layout.pack_raw(offsets[i:i + layout.n_slots]))
        out.append(ct.rerandomize(pool))
    return out


def _open(mine: Sequence[PartialDecryption], theirs: Sequence[PartialDecryption],
          layout: PackedLayout, count: int) -> list[int]:
    """Combine the two parts of every packed ciphertext and unpack ``count`` slot contents."""
    out: list[int] = []
    for pa, pb in zip(theirs, mine, strict=True):
        n = min(layout.n_slots, count - len(out))
        try:
            out += layout.unpack_raw(combine(pa, pb), n)
        except PackingOverflowError as exc:
            raise ProtocolError("opened plaintext exceeds the agreed slot layout") from exc
    if len(out) != count:
        raise ProtocolError(f"opened {len(out)} values, expected {count}")
    return out


def _small(rng: random.Random, count: int, bits: int) -> list[int]:
    return [rng.getrandbits(bits) for _ in range(count)]


def _arr(values: Sequence[int]) -> ObjArray:
    return np.array(list(values), dtype=object)


@dataclass(frozen=True)
class BundlePlan:
    """Where A's answer puts every value B opens: the k cross terms ``Q`` packed from bit 0 of
    the first ciphertext (Horner), then every OLE value and the OT value at fixed bit offsets.

    Why offsets and not Horner for the OLEs: B encrypts each OLE input already multiplied by
    ``2^offset`` (free for B), so A's ``[v·2^off]^σ`` lands in its slot directly and A spends
    no squarings on packing; the cross terms share the first ciphertext, which saves one
    partial decryption on each side. Both parties derive the plan from ``(key, shape)``.
    """

    cross_width: int
    ole_width: int
    ole: tuple[tuple[int, int], ...]  # (ciphertext, bit offset) per OLE value, then the OT value
    n_cts: int

    @classmethod
    def for_shape(cls, key: PublicKey, shape: Shape) -> BundlePlan:
        cw, ow = cross_bits(shape) + shape.kappa + 1, ole_bits() + shape.kappa + 2
        room = key.plaintext_bits
        if shape.k * cw > room or ow > room:
            raise ProtocolError("the key is too small for one query's correlations")
        ct, used, spots = 0, shape.k * cw, []
        for _ in range(shape.n_pairs + shape.k + 2):
            if used + ow > room:
                ct, used = ct + 1, 0
            spots.append((ct, used))
            used += ow
        return cls(cw, ow, tuple(spots), ct + 1)

    def ends(self, k: int) -> list[int]:
        """Bits used in every ciphertext (B refuses plaintexts above them)."""
        out = [k * self.cross_width] + [0] * (self.n_cts - 1)
        for ct, off in self.ole:
            out[ct] = max(out[ct], off + self.ole_width)
        return out


# --------------------------------------------------------------------------------------------
# correlations
# --------------------------------------------------------------------------------------------


class OfflineA:
    """A's side of one query's correlations (share 1). Pools start empty on purpose: the
    benchmark charges every fixed-base exponentiation to the offline phase."""

    def __init__(self, shape: Shape, share: KeyShare, pool: RandomnessPool,
                 rng: random.Random | None = None) -> None:
        if share.index != 1:
            raise ProtocolError("A holds share 1")
        self.shape, self.share, self.key, self.pool = shape, share, share.public_key, pool
        self.rng = rng if rng is not None else secrets.SystemRandom()
        k, d, bits = shape.k, shape.dim, shape.triple_bits
        self.a = _small(self.rng, d, bits)
        self.b = [_small(self.rng, d, bits) for _ in range(k)]
        self.blinds = Blinds.draw(shape, self.rng)
        self.ot_masks = [self.rng.getrandbits(RING_BITS) for _ in range(k)]
        self._result: CorrelationsA | None = None

    def __repr__(self) -> str:
        return f"OfflineA(k={self.shape.k})"

    def encrypt_mask(self) -> bytes:
        """Message 1: ``[a^A_i]``."""
        return _cts_bytes(self.key.encrypt_many(self.a, self.pool))

    def _scalars(self) -> list[int]:
        bl = self.blinds
        return [*bl.r1, *([bl.rho] * self.shape.k), bl.pi]

    def answer(self, message: bytes) -> bytes:
        """Message 3, after opening B's packed cross terms (A's shares of ``c``, ``c0``)."""
        s, k, d = self.shape, self.shape.k, self.shape.dim
        n_ole = s.n_pairs + k + 1
        w = self.key.ciphertext_bytes
        cross = _layout(self.key, cross_bits(s) + s.kappa + 1, k + 1)
        n_p = -(-(k + 1) // cross.n_slots)
        sizes = [d, n_ole, k, n_p, n_p]
        if len(message) != w * sum(sizes):
            raise ProtocolError("offline reply of the wrong size")
        parts, pos = [], 0
        for n in sizes:
            parts.append(message[pos:pos + w * n])
            pos += w * n
        enc_a_b = _parse_cts(self.key, parts[0], d)
        enc_u = _parse_cts(self.key, parts[1], n_ole)
        enc_onehot = _parse_cts(self.key, parts[2], k)
        packed = _parse_cts(self.key, parts[3], n_p)
        theirs = _parse_pds(self.key, 2, parts[4], n_p)
        mine = [self.share.partial_decrypt(c) for c in packed]
        opened = _open(mine, theirs, cross, k + 1)
        plan = BundlePlan.for_shape(self.key, s)
        cts, sigma, t_shares = self._bundle(enc_a_b, enc_u, enc_onehot, plan)
        self._finish(opened, sigma, t_shares)
        return _cts_bytes(cts) + _cts_bytes([self.share.partial_decrypt(c) for c in cts])

    def _bundle(self, enc_a_b: Sequence[Ciphertext], enc_u: Sequence[Ciphertext],
                enc_onehot: Sequence[Ciphertext], plan: BundlePlan
                ) -> tuple[list[Ciphertext], list[int], list[int]]:
        """``[⟨a^B, b^A_j⟩ + σ_j]`` (B learns ``φ_j + σ_j``), ``[scalar·v + R − t]`` per OLE
        (B learns ``t^B``; A keeps ``t − R``) and ``[Σ_j M_j·δ_c,j] = [M_c]`` for the random OT
        (B learns ``M_c``), at the plan's offsets; re-randomised."""
        s = self.shape
        table = MultiExp(enc_a_b)
        cross = _horner([table.power_product(bj) for bj in self.b], plan.cross_width)
        sigma = _small(self.rng, s.k, cross_bits(s) + s.kappa)
        big = 1 << (ole_bits() + s.kappa)
        ts = _small(self.rng, len(enc_u), ole_bits() + s.kappa)
        values = [u * sc for u, sc in zip(enc_u, self._scalars(), strict=True)]
        values.append(MultiExp(enc_onehot).power_product(self.ot_masks))
        offsets = [big - t for t in ts] + [0]
        acc: list[Ciphertext | None] = [cross] + [None] * (plan.n_cts - 1)
        plain = [sum(v << (j * plan.cross_width) for j, v in enumerate(sigma))]
        plain += [0] * (plan.n_cts - 1)
        for ct_val, off_val, (ct, bit) in zip(values, offsets, plan.ole, strict=True):
            cur = acc[ct]
            acc[ct] = ct_val if cur is None else cur + ct_val
            plain[ct] += off_val << bit
        out = []
        for ct_opt, p in zip(acc, plain, strict=True):
            if ct_opt is None:
                raise ProtocolError("empty ciphertext in the bundle plan")
            out.append(ct_opt.add_plain(p).rerandomize(self.pool))
        return out, sigma, [(t - big) % MOD for t in ts]

    def _finish(self, opened: list[int], sigma: list[int], t_shares: list[int]) -> None:
        s, k = self.shape, self.shape.k
        a, b = _arr(self.a), np.array(self.b, dtype=object)
        c = (b @ a + _arr(opened[:k]) - _arr(sigma)) % MOD
        c0 = (int(a @ a) + 2 * opened[k]) % MOD
        n = s.n_pairs
        self._result = CorrelationsA(
            a, b, c, c0, _arr(self.blinds.r1), _arr(self.blinds.r2), _arr(t_shares[:n]),
            self.blinds.rho, self.blinds.thr_r2, _arr(t_shares[n:n + k]), self.blinds.pi,
            t_shares[n + k], _arr(self.ot_masks),
        )

    def result(self) -> CorrelationsA:
        if self._result is None:
            raise ProtocolError("offline phase not finished")
        return self._result


class OfflineB:
    """B's side of one query's correlations (share 2)."""

    def __init__(self, shape: Shape, share: KeyShare, pool: RandomnessPool,
                 rng: random.Random | None = None) -> None:
        if share.index != 2:
            raise ProtocolError("B holds share 2")
        self.shape, self.share, self.key, self.pool = shape, share, share.public_key, pool
        self.rng = rng if rng is not None else secrets.SystemRandom()
        k, d, bits = shape.k, shape.dim, shape.triple_bits
        self.a = _small(self.rng, d, bits)
        self.b = [_small(self.rng, d, bits) for _ in range(k)]
        self.u = [self.rng.getrandbits(RING_BITS) for _ in range(shape.n_pairs + k + 1)]
        self.choice = self.rng.randrange(k)
        self._rho: list[int] = []
        self._result: CorrelationsB | None = None

    def __repr__(self) -> str:
        return f"OfflineB(k={self.shape.k})"

    def _cross_layout(self) -> PackedLayout:
        s = self.shape
        return _layout(self.key, cross_bits(s) + s.kappa + 1, s.k + 1)

    def reply(self, message: bytes) -> bytes:
        """Message 2: B's encryptions, and its masked cross terms over A's ``[a^A]``."""
        s = self.shape
        enc_a_a = _parse_cts(self.key, message, s.dim)
        table = MultiExp(enc_a_a)
        products = [table.power_product(bj) for bj in self.b] + [table.power_product(self.a)]
        self._rho = _small(self.rng, s.k + 1, cross_bits(s) + s.kappa)
        packed = _pack(products, self._rho, self._cross_layout(), self.pool)
        plan = BundlePlan.for_shape(self.key, s)
        bits = [bit for _, bit in plan.ole]
        shifted = [v << bit for v, bit in zip(self.u, bits, strict=False)]
        onehot = [(1 << bits[-1]) if j == self.choice else 0 for j in range(s.k)]
        encs = [*self.a, *shifted, *onehot]
        return (_cts_bytes(self.key.encrypt_many(encs, self.pool)) + _cts_bytes(packed)
                + _cts_bytes([self.share.partial_decrypt(c) for c in packed]))

    def receive(self, message: bytes) -> bytes:
        """Message 3 in: open A's packed cross terms, OLE shares and ``M_c``; nothing to say."""
        s, k = self.shape, self.shape.k
        plan = BundlePlan.for_shape(self.key, s)
        n_ole, n, w = s.n_pairs + k + 1, plan.n_cts, self.key.ciphertext_bytes
        if len(message) != 2 * w * n:
            raise ProtocolError("offline message of the wrong size")
        cts = _parse_cts(self.key, message[:w * n], n)
        theirs = _parse_pds(self.key, 1, message[w * n:], n)
        plain = [combine(pa, self.share.partial_decrypt(c))
                 for pa, c in zip(theirs, cts, strict=True)]
        if any(p >> end for p, end in zip(plain, plan.ends(k), strict=True)):
            raise ProtocolError("opened plaintext exceeds the agreed layout")
        cw, ow = plan.cross_width, plan.ole_width
        phi = [(plain[0] >> (j * cw)) & ((1 << cw) - 1) for j in range(k)]
        oles = [(plain[ct] >> bit) & ((1 << ow) - 1) for ct, bit in plan.ole]
        a, b = _arr(self.a), np.array(self.b, dtype=object)
        c = (b @ a - _arr(self._rho[:k]) + _arr(phi)) % MOD
        c0 = (int(a @ a) - 2 * self._rho[k]) % MOD
        t = [v % MOD for v in oles[:n_ole]]
        n = s.n_pairs
        self._result = CorrelationsB(
            a, b, c, c0, _arr(self.u[:n]), _arr(t[:n]), _arr(self.u[n:n + k]),
            _arr(t[n:n + k]), self.u[n + k], t[n + k], self.choice, oles[n_ole] % MOD,
        )
        return b""

    def result(self) -> CorrelationsB:
        if self._result is None:
            raise ProtocolError("offline phase not finished")
        return self._result


# --------------------------------------------------------------------------------------------
# conversions: Paillier ciphertexts -> additive shares (one masked joint decryption)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConversionPlan:
    """Where every coordinate and norm of k candidates sits in the masked ciphertexts.

    Stream order as today's distance round (``secure_distance.slot_counts``): the full
    ciphertexts of candidate 0, 1, …, then the merged tails; each squared norm takes two
    adjacent slots (``2·slot_bits`` bits: norm + a mask of ``2·slot_bits − 2`` bits) in the
    spare slots of the merged tails, then in extra ciphertexts. Both parties derive it from
    ``(layout, k)``; nothing about it is sent.
    """

    counts: tuple[int, ...]          # template slots used per stream ciphertext
    norms: tuple[tuple[int, int], ...]  # (ciphertext, first slot) per candidate norm
    n_cts: int

    @classmethod
    def for_k(cls, layout: TemplateLayout, k: int) -> ConversionPlan:
        counts = slot_counts(layout, k)
        spc, first_tail = layout.slots_per_ct, layout.n_full * k
        if spc < 2:
            raise ProtocolError("a squared norm needs two slots per ciphertext")
        used = list(counts)
        plan: list[tuple[int, int]] = []
        for m in range(first_tail if layout.tail else len(counts), len(counts)):
            while spc - used[m] >= 2 and len(plan) < k:
                plan.append((m, used[m]))
                used[m] += 2
        extra = len(counts)
        while len(plan) < k:
            if len(used) == extra or spc - used[-1] < 2:
                used.append(0)
            plan.append((len(used) - 1, used[-1]))
            used[-1] += 2
        return cls(tuple(counts), tuple(plan), len(used))


@dataclass
class ConversionA:
    """A's masks (its shares are their negatives) between request and B's open."""

    template_masks: list[list[int]]
    norm_masks: list[int]

    def __repr__(self) -> str:
        return "ConversionA(<secret>)"


def prepare_norms(prepared: Sequence[PreparedTemplate], share: KeyShare) -> list[PartialDecryption]:
    """A, once per stored template (like ``PreparedTemplate``): its partial decryption of the
    servers' ``[‖y‖²]``, so converting a candidate needs no full exponentiation at A."""
    return [share.partial_decrypt(p.template.norm) for p in prepared]


def _shifted(items: Sequence[tuple[Ciphertext, PartialDecryption, int]]
             ) -> tuple[Ciphertext, PartialDecryption]:
    """``Σ c·2^(shift)`` and A's part of it, from parts at bit offsets (Horner over shifts)."""
    order = sorted(items, key=lambda t: t[2], reverse=True)
    ct, pd, top = order[0]
    for c, d, off in order[1:]:
        ct, pd = ct.shift_slots(top - off) + c, pd.shift_slots(top - off).times(d)
        top = off
    if top:
        ct, pd = ct.shift_slots(top), pd.shift_slots(top)
    return ct, pd


def convert_templates_request(
    prepared: Sequence[PreparedTemplate], norm_parts: Sequence[PartialDecryption],
    layout: TemplateLayout, masks: PartialPool, rng: random.Random,
) -> tuple[ConversionA, bytes]:
    """A: today's distance-round masking, moved offline: every stream ciphertext gets a fresh
    packed mask (``PartialPool``: no full exponentiation), A's part comes from its per-template
    precomputation, shifted like the ciphertexts. B learns ``y + 2^s + r`` per coordinate."""
    k, w = len(prepared), layout.slot_bits
    plan = ConversionPlan.for_k(layout, k)
    parts: list[list[tuple[Ciphertext, PartialDecryption, int]]] = [[] for _ in range(plan.n_cts)]
    for j, p in enumerate(prepared):
        for i in range(layout.n_full):
            parts[j * layout.n_full + i].append((p.template.packed[i], p.partials[i], 0))
    if layout.tail:
        g = layout.slots_per_ct // layout.tail
        for j, p in enumerate(prepared):
            m = layout.n_full * k + j // g
            parts[m].append((p.template.packed[-1], p.partials[-1], (j % g) * layout.tail * w))
    for j, (m, slot) in enumerate(plan.norms):
        parts[m].append((prepared[j].template.norm, norm_parts[j], slot * w))
    stream_r = [_small(rng, n, layout.mask_bits) for n in plan.counts]
    norm_r = _small(rng, k, 2 * w - 2)
    mask_ints = [sum(r << (i * w) for i, r in enumerate(rs)) for rs in stream_r]
    mask_ints += [0] * (plan.n_cts - len(mask_ints))
    for j, (m, slot) in enumerate(plan.norms):
        mask_ints[m] += norm_r[j] << (slot * w)
    cts, pds = [], []
    for items, mask in zip(parts, mask_ints, strict=True):
        ct, pd = _shifted(items)
        mask_ct, mask_pd = masks.encrypt_with_partial(mask)
        cts.append(ct + mask_ct)
        pds.append(pd.times(mask_pd))
    flat = [r for rs in stream_r for r in rs]
    state = ConversionA(assemble_vectors(layout, k, flat), norm_r)
    return state, _cts_bytes(cts) + _cts_bytes(pds)


def convert_templates_open(
    message: bytes, k: int, layout: TemplateLayout, share: KeyShare,
) -> tuple[ObjArray, ObjArray]:
    """B: open ``y + 2^s + r`` per coordinate and ``n + r`` per norm; returns B's shares of
    ``y`` (k, d) and ``n`` (k,). B refuses anything outside the agreed layout (no carry out
    of a slot, nothing above the last used slot)."""
    key, w = share.public_key, layout.slot_bits
    plan = ConversionPlan.for_k(layout, k)
    n, width = plan.n_cts, key.ciphertext_bytes
    if len(message) != 2 * width * n:
        raise ProtocolError("conversion request of the wrong size")
    cts = _parse_cts(key, message[:width * n], n)
    theirs = _parse_pds(key, 1, message[width * n:], n)
    plain = [combine(pa, share.partial_decrypt(c)) for pa, c in zip(theirs, cts, strict=True)]
    used = [plan.counts[m] if m < len(plan.counts) else 0 for m in range(n)]
    for m, slot in plan.norms:
        used[m] = max(used[m], slot + 2)
    if any(p >> (u * w) for p, u in zip(plain, used, strict=True)):
        raise ProtocolError("masked plaintext exceeds the agreed slot layout")
    low = (1 << w) - 1
    contents = [(plain[m] >> (i * w)) & low for m, c in enumerate(plan.counts) for i in range(c)]
    rows = [[v - layout.bound for v in row] for row in assemble_vectors(layout, k, contents)]
    norms = [(plain[m] >> (slot * w)) & ((1 << (2 * w)) - 1) for m, slot in plan.norms]
    return np.array(rows, dtype=object) % MOD, _arr(norms) % MOD


def template_shares_a(state: ConversionA) -> tuple[ObjArray, ObjArray]:
    """A's shares of the candidates and their norms: the negated masks."""
    return (-np.array(state.template_masks, dtype=object)) % MOD, (-_arr(state.norm_masks)) % MOD


def convert_query_request(
    query: CheckedQuery, layout: TemplateLayout, share: KeyShare, pool: RandomnessPool,
    rng: random.Random,
) -> tuple[list[int], bytes]:
    """A: pack the admitted query's per-dimension ``[u_i]`` (slot shifts), add ``2^s + r_i``,
    re-randomise and partially decrypt. Online if the query arrives now — this is the
    public-key work a client-uploaded sharing (or folding into admission) would remove."""
    r = _small(rng, layout.dim, layout.mask_bits)
    offsets = [v + layout.bound for v in r]
    packed = _pack(list(query.dims), offsets, layout.packed, pool)
    return r, _cts_bytes(packed) + _cts_bytes([share.partial_decrypt(c) for c in packed])


def convert_query_open(message: bytes, layout: TemplateLayout, share: KeyShare) -> ObjArray:
    """B: open ``u + 2^s + r``; B's share of ``u`` is the content minus ``2^s``."""
    key = share.public_key
    n = -(-layout.dim // layout.slots_per_ct)
    w = key.ciphertext_bytes
    if len(message) != 2 * w * n:
        raise ProtocolError("query conversion of the wrong size")
    cts = _parse_cts(key, message[:w * n], n)
    theirs = _parse_pds(key, 1, message[w * n:], n)
    mine = [share.partial_decrypt(c) for c in cts]
    contents = _open(mine, theirs, layout.packed, layout.dim)
    shares: ObjArray = _arr([v - layout.bound for v in contents]) % MOD
    return shares


def inputs_a(query_masks: Sequence[int], state: ConversionA) -> InputShares:
    y, n = template_shares_a(state)
    u: ObjArray = (-_arr(query_masks)) % MOD
    return InputShares(u, y, n)


__all__ = [
    "BundlePlan",
    "ConversionA",
    "ConversionPlan",
    "OfflineA",
    "OfflineB",
    "convert_query_open",
    "convert_query_request",
    "convert_templates_open",
    "convert_templates_request",
    "inputs_a",
    "prepare_norms",
    "template_shares_a",
]
