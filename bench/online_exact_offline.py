"""Offline phase of the share-based exact stage (issue 16): dealer-free, threshold Paillier.

A and B make one query's :class:`~bench.online_exact_shares.CorrelationsA` /
:class:`~bench.online_exact_shares.CorrelationsB` with the product's own key (A holds share 1,
B share 2; neither can decrypt alone) and convert Paillier ciphertexts into additive shares.
Every value either party decrypts is a product it is meant to learn, statistically masked by
the other party (``2^-κ``, κ = 40, as the product's masks). Three messages::

    A → B  [a^A_i]                                      (d fresh encryptions)
    B → A  [a^B_i], [u_ℓ], [v], [δ_c,j]; P = pack([⟨a^A,b^B_j⟩ + ρ_j], [⟨a^A,a^B⟩ + ρ_χ]),
           B's partial decryption of P                  → A opens P: A's share of the cross terms
    A → B  Q = pack([⟨a^B,b^A_j⟩ + σ_j]), O = pack([scalar_ℓ·u_ℓ + R − t_ℓ], [Σ_j M_j δ_c,j]),
           A's partial decryptions                      → B opens Q and O

``[x]`` is an encryption under the joint key. B's multi-exponentiations run over A's ``d``
ciphertexts (one Straus table, :class:`~pura.crypto.paillier.MultiExp`), A's over B's. OLE
(``t^A + t^B = scalar·u``) for every blinded comparison and for the index opening; a random
1-of-k OT (B: ``c``, ``M_c``; A: ``M_0..M_{k-1}``) for the winner's threshold value. Nothing in
here knows about rounds of the online phase; it only fills the dataclasses.

Conversions (:class:`TemplateConversion`, :class:`QueryConversion`): one masked joint decryption
turns packed ciphertexts into shares — B learns ``y + 2^s + r`` per slot (exactly what it
learns in today's distance round), A keeps ``−r``. Stored templates use A's precomputed partial
decryptions (``PreparedTemplate``) and its ``PartialPool``, so A does no full exponentiation for
them; the servers' norms ride in one extra packed ciphertext per query.
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
from pura.protocols.secure_distance import PreparedTemplate

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
        out_q, sigma = self._cross_terms(enc_a_b, cross)
        out_o, t_shares = self._oles(enc_u, enc_onehot)
        self._finish(opened, sigma, t_shares)
        cts = [*out_q, *out_o]
        return _cts_bytes(cts) + _cts_bytes([self.share.partial_decrypt(c) for c in cts])

    def _cross_terms(self, enc_a_b: Sequence[Ciphertext],
                     layout: PackedLayout) -> tuple[list[Ciphertext], list[int]]:
        table = MultiExp(enc_a_b)
        products = [table.power_product(bj) for bj in self.b]
        sigma = _small(self.rng, self.shape.k, cross_bits(self.shape) + self.shape.kappa)
        return _pack(products, sigma, layout, self.pool), sigma

    def _oles(self, enc_u: Sequence[Ciphertext],
              enc_onehot: Sequence[Ciphertext]) -> tuple[list[Ciphertext], list[int]]:
        """``[scalar·u + R − t]`` per OLE (B learns ``t^B``; A keeps ``t − R``) and
        ``[Σ_j M_j·δ_c,j] = [M_c]`` for the random OT (B learns ``M_c``)."""
        kappa = self.shape.kappa
        big = 1 << (ole_bits() + kappa)
        ts = _small(self.rng, len(enc_u), ole_bits() + kappa)
        values = [u * sc for u, sc in zip(enc_u, self._scalars(), strict=True)]
        ot = MultiExp(enc_onehot).power_product(self.ot_masks)
        layout = _layout(self.key, ole_bits() + kappa + 2, len(values) + 1)
        packed = _pack([*values, ot], [big - t for t in ts] + [0], layout, self.pool)
        return packed, [(t - big) % MOD for t in ts]

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
        onehot = [1 if j == self.choice else 0 for j in range(s.k)]
        encs = [*self.a, *self.u, *onehot]
        return (_cts_bytes(self.key.encrypt_many(encs, self.pool)) + _cts_bytes(packed)
                + _cts_bytes([self.share.partial_decrypt(c) for c in packed]))

    def receive(self, message: bytes) -> bytes:
        """Message 3 in: open A's packed cross terms, OLE shares and ``M_c``; nothing to say."""
        s, k = self.shape, self.shape.k
        cross = self._cross_layout()
        n_ole = s.n_pairs + k + 1
        ole = _layout(self.key, ole_bits() + s.kappa + 2, n_ole + 1)
        n_q, n_o = -(-k // cross.n_slots), -(-(n_ole + 1) // ole.n_slots)
        w = self.key.ciphertext_bytes
        if len(message) != 2 * w * (n_q + n_o):
            raise ProtocolError("offline message of the wrong size")
        cts = _parse_cts(self.key, message[:w * (n_q + n_o)], n_q + n_o)
        theirs = _parse_pds(self.key, 1, message[w * (n_q + n_o):], n_q + n_o)
        mine = [self.share.partial_decrypt(c) for c in cts]
        phi = _open(mine[:n_q], theirs[:n_q], cross, k)
        oles = _open(mine[n_q:], theirs[n_q:], ole, n_ole + 1)
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


def norm_layout(key: PublicKey, template: TemplateLayout, count: int) -> PackedLayout:
    """Squared norms are below ``d·4^s·2``; masked with κ extra bits."""
    bits = (2 * template.dim * template.bound ** 2).bit_length() + template.kappa + 1
    return _layout(key, bits, count)


@dataclass
class ConversionA:
    """A's masks (its shares are their negatives) between request and B's open."""

    template_masks: list[list[int]]
    norm_masks: list[int]

    def __repr__(self) -> str:
        return "ConversionA(<secret>)"


def _template_counts(layout: TemplateLayout) -> list[int]:
    return [layout.slots_per_ct] * layout.n_full + ([layout.tail] if layout.tail else [])


def convert_templates_request(
    prepared: Sequence[PreparedTemplate], layout: TemplateLayout, masks: PartialPool,
    pool: RandomnessPool, rng: random.Random,
) -> tuple[ConversionA, bytes]:
    """A: mask every packed ciphertext of the candidates (``PartialPool``: A's own part of the
    mask costs no full exponentiation; the template's part was precomputed) and the k norms
    (one packed ciphertext, one full partial decryption)."""
    key = masks.share.public_key
    cts, pds, all_masks = [], [], []
    for p in prepared:
        mine = []
        for ct, pd, n in zip(p.template.packed, p.partials, _template_counts(layout),
                             strict=True):
            r = _small(rng, n, layout.mask_bits)
            mask_ct, mask_pd = masks.encrypt_with_partial(layout.packed.pack_raw(r))
            cts.append(ct + mask_ct)
            pds.append(pd.times(mask_pd))
            mine += r
        all_masks.append(mine)
    nl = norm_layout(key, layout, len(prepared))
    norm_r = _small(rng, len(prepared), nl.slot_bits - 1)
    norms = _pack([p.template.norm for p in prepared], norm_r, nl, pool)
    cts += norms
    pds += [masks.share.partial_decrypt(c) for c in norms]
    return ConversionA(all_masks, norm_r), _cts_bytes(cts) + _cts_bytes(pds)


def convert_templates_open(
    message: bytes, k: int, layout: TemplateLayout, share: KeyShare,
) -> tuple[ObjArray, ObjArray]:
    """B: open ``y + 2^s + r`` per coordinate and ``n + r`` per norm; returns B's shares of
    ``y`` (k, d) and ``n`` (k,). B refuses anything outside the agreed slot layouts."""
    key = share.public_key
    nl = norm_layout(key, layout, k)
    n_t = layout.cts_per_template * k
    n_n = -(-k // nl.n_slots)
    w = key.ciphertext_bytes
    if len(message) != 2 * w * (n_t + n_n):
        raise ProtocolError("conversion request of the wrong size")
    cts = _parse_cts(key, message[:w * (n_t + n_n)], n_t + n_n)
    theirs = _parse_pds(key, 1, message[w * (n_t + n_n):], n_t + n_n)
    mine = [share.partial_decrypt(c) for c in cts]
    rows: list[list[int]] = []
    counts = _template_counts(layout)
    for j in range(k):
        row: list[int] = []
        for i, n in enumerate(counts):
            pos = j * len(counts) + i
            row += _open([mine[pos]], [theirs[pos]], layout.packed, n)
        rows.append([v - layout.bound for v in row])
    norms = _open(mine[n_t:], theirs[n_t:], nl, k)
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
    "ConversionA",
    "OfflineA",
    "OfflineB",
    "convert_query_open",
    "convert_query_request",
    "convert_templates_open",
    "convert_templates_request",
    "inputs_a",
    "norm_layout",
    "template_shares_a",
]
