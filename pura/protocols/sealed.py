"""Sealed admission: a template's norm and wolf check without decrypting what the client sent.

Why a second admission protocol. The joint-decryption admission (:mod:`pura.protocols.norms`)
has both servers partially decrypt the client's packed ciphertexts so that B can read a masked
vector: six 3072-bit partial decryptions per template (three at A, three at B, ~45 ms each),
plus 132 fresh encryptions at B. That is a floor of ≈ 0.35 CPU-s per template before any other
work, i.e. under 6 templates/s on two cores even if nothing else cost anything (issue 14 asks
for ≥ 10). The masked vector does not have to travel as a Paillier ciphertext: the client can
mask it itself and seal it to B, and the only thing that then needs homomorphic work is the
cross term of the norm.

Upload (client, :func:`seal_template`; :class:`~pura.protocols.messages.SealedTemplate`)::

    seed σ (32 random bytes)      → r_i, ρ_i = SHAKE-256(domain ‖ key ‖ σ)   (uniform, i < d)
    c_i = 2^s + r_i,  r_i < 2^(s+1+κ)          (the masks of the legacy admission)
    v_i = q(y)_i + c_i ∈ [0, 2^(s+1+κ) + 2^(s+1))
    box   = Seal_B(v; context = key ‖ layout ‖ SHA-256(masks))   (:mod:`pura.crypto.seal`)
    masks = [c_i] = (1 + c_i N)·h_N^(ρ_i)      (one per coordinate, randomness from σ)

Round 1 (A → B → A, :func:`start_sealed` / :func:`helper_sealed` / :func:`finish_sealed`)::

    A: re-derives c, ρ from σ and checks every mask ciphertext in one batch (below); forwards
       boxes + masks                                                    → SealedAdmitRequest
    B: opens each box (bound to its masks), range-checks every v_i, and computes
         P = Π_i [c_i]^(v_i) = [⟨c, v⟩]      (bucket multi-exponentiation, 128 bases)
       packs P + R (R uniform, κ bits above ⟨c, v⟩'s bound) of ~19 templates per ciphertext,
       adds its partial decryption of each packed ciphertext, and fresh [S + 2R] (S = Σ v_i²),
       [⟨v, m⟩] (the wolf check's mean direction) and [pack(v)]        → SealedAdmitReply
    A: partially decrypts, combines: w = ⟨c, v⟩ + R per template (R hides ⟨c, v⟩);
         [‖u‖²] = [S + 2R] − 2w + ‖c‖²     (= Σ (v_i − c_i)², u = v − c = q(y))
         [⟨u, m⟩] = [⟨v, m⟩] − ⟨c, m⟩,   stored [pack(u + 2^s)] = [pack(v)] − pack(r)
       all re-randomised (B knows the randomness of what it made)

Round 2 is the legacy norm-range and wolf check, unchanged
(:func:`pura.protocols.norms.check_normed`).

Cost per template (3072 bits, d = 128, measured in ``bench/README.md``): B one 128-base
multi-exponentiation with 54-bit exponents (~14 ms), five fresh encryptions, 1/19 of a packed
partial decryption; A ~1/64 of a batch check (~6 ms), 1/19 of a partial decryption, five
re-randomisations. No per-coordinate encryption at either server: the client makes the 128
mask ciphertexts (~70 ms on one core), which is where the work belongs (enrolment is once).

Why the batch check is sound. A draws ``α_ji`` uniform below ``2^κ`` after the upload and
checks ``Π_ji [c_ji]^(α_ji) = (1 + N·Σ α_ji c_ji)·h_N^(Σ α_ji ρ_ji)``. Write a client's
ciphertext as the honest one times ``(1+N)^(a_ji)·w_ji^N`` (every unit mod N² has that form).
The check's ``(1+N)`` component requires ``Σ α_ji a_ji ≡ 0 (mod N)``; if some ``a_ji`` is not
``0 mod N`` it is non-zero mod one prime factor ``p'`` of N, and over the choice of ``α_ji``
(fixed the others) at most one value below ``2^κ < p'`` satisfies it: a forged *plaintext*
passes with probability ``≤ 2^-κ``. A forged mask is the only way to forge a norm here (B
computes ``S`` and ``⟨c, v⟩`` from the ``v`` it checked), so a client that cheats is refused
with probability ``1 − 2^-κ`` per attempt.

Randomness the client chose badly (a component ``w^N`` outside ⟨h_N⟩) cannot change a
plaintext. It matters only if a stored ciphertext carried it: nothing stored is derived from a
client's ciphertext (B's fresh encryptions are), and the one value that is — the packed cross
term — is jointly decrypted in this round, where :func:`~pura.crypto.paillier.combine` detects a
component of odd order (``c^(sk1+sk2) ≢ 1 mod N``) and the batch fails; the server then isolates
the culprit (``NodeA._admit_isolating``). A component of order a power of two is killed by the
slot shifts and by ``sk1 + sk2 ≡ 0 (mod 2α)``, and is harmless because nothing keeps it.

What each party learns. B: ``v = q(y) + c`` with ``c_i`` uniform over ``2^(s+1+κ)`` values
(2^-κ-close to independent of ``q(y)`` per coordinate, as in the legacy admission), whether each
template was valid, and the masked mask ciphertexts (semantically secure: B never learns σ).
``⟨c, v⟩ + R`` is decrypted at A, not B. A: ``⟨c, v⟩ + R`` with ``R`` uniform over ``2^κ``
times the range of ``⟨c, v⟩`` (2^-κ-close to independent of it), ciphertexts, and the verdicts.
Round 2 leaks what it leaked before (flipped sign bits to B).

Who must be honest. A must not read the box: it is sealed to B's X25519 key, which the client
takes from the key set it pins (:class:`~pura.keys.PublicKeys`; the key id hashes it). A and B
must not collude (the standing assumption of the whole design). Boxes are bound to their mask
ciphertexts, so A cannot pair one upload's box with another's masks without B refusing it.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from pura.crypto.paillier import (
    Ciphertext,
    KeyShare,
    PackedLayout,
    PublicKey,
    RandomnessPool,
    bucket_power_product,
    combine,
    encrypt_derived,
    h_power,
    partial_decrypt_batch,
)
from pura.crypto.seal import SealPrivateKey, SealPublicKey
from pura.engine.local import SERIAL, LocalEngine
from pura.errors import (
    EmbeddingRangeError,
    KeyMismatchError,
    PackingOverflowError,
    ParameterError,
    ProtocolError,
    SealError,
)
from pura.protocols.enroll import TemplateLayout
from pura.protocols.messages import (
    AdmittedTemplate,
    SealedAdmitReply,
    SealedAdmitRequest,
    SealedTemplate,
)
from pura.protocols.norms import (
    ADMIT_LANES,
    MAX_VECTORS,
    NormedVector,
    NormHelper,
    NormLayout,
    check_normed,
    split_lanes,
)
from pura.protocols.secure_min import _horner_pack

DOMAIN = b"pura-sealed-admission-v1"
SEED_BYTES = 32


# --------------------------------------------------------------------------------------------
# Layout and the masks a seed stands for
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SealedLayout:
    """What A and B agree on beyond the norm layout: the packing of the masked cross terms."""

    norms: NormLayout
    key: PublicKey

    @property
    def template(self) -> TemplateLayout:
        return self.norms.template

    @property
    def value_bytes(self) -> int:
        """Bytes per masked coordinate in a box (big-endian, unsigned)."""
        return (self.norms.content_limit.bit_length() + 7) // 8

    @property
    def cross_bound_bits(self) -> int:
        """Every honest ``⟨c, v⟩`` is below ``2^cross_bound_bits``."""
        t = self.template
        c_max = t.bound + (1 << t.mask_bits)
        return (t.dim * c_max * self.norms.content_limit).bit_length()

    @property
    def cross(self) -> PackedLayout:
        """Slots of ``⟨c, v⟩ + R``, ``R < 2^(bound + κ)``: no carry, and ``R`` hides the term."""
        bits = self.cross_bound_bits + self.template.kappa + 1
        slots = PackedLayout.max_slots(self.key, bits)
        if slots < 1:
            raise ParameterError("the key is too small for one sealed cross term")
        return PackedLayout(bits, slots)

    @classmethod
    def for_norms(cls, norms: NormLayout, key: PublicKey) -> SealedLayout:
        norms.template.check_key(key)
        return cls(norms, key)


def derive_masks(
    seed: bytes, layout: TemplateLayout, key: PublicKey
) -> tuple[list[int], list[int]]:
    """``(c_i = 2^s + r_i, ρ_i)`` for every coordinate: the masks and their encryption
    randomness, both uniform (bit-masked SHAKE-256 output), both A's and the client's only."""
    if len(seed) != SEED_BYTES:
        raise ProtocolError(f"a sealed upload's seed has {SEED_BYTES} bytes, got {len(seed)}")
    rb, pb = (layout.mask_bits + 7) // 8, (key.randomness_bits + 7) // 8
    stream = hashlib.shake_256(DOMAIN + key.fingerprint + seed).digest(layout.dim * (rb + pb))
    r_mask, p_mask = (1 << layout.mask_bits) - 1, (1 << key.randomness_bits) - 1
    offsets, rho = [], []
    for i in range(layout.dim):
        at = i * (rb + pb)
        offsets.append(layout.bound + (int.from_bytes(stream[at:at + rb], "big") & r_mask))
        rho.append(int.from_bytes(stream[at + rb:at + rb + pb], "big") & p_mask)
    return offsets, rho


def mask_digest(masks: Sequence[Ciphertext]) -> bytes:
    """SHA-256 over an upload's mask ciphertexts (what its box is bound to)."""
    return hashlib.sha256(b"".join(m.raw_bytes() for m in masks)).digest()


def box_context_from_digest(key: PublicKey, layout: TemplateLayout, digest: bytes) -> bytes:
    """What a box is bound to: the key, the layout and its upload's mask digest."""
    return (DOMAIN + key.fingerprint + layout.dim.to_bytes(4, "big")
            + layout.slot_bits.to_bytes(4, "big") + digest)


def box_context(key: PublicKey, layout: TemplateLayout, masks: Sequence[Ciphertext]) -> bytes:
    """What a box is bound to: the key, the layout and its upload's mask ciphertexts."""
    return box_context_from_digest(key, layout, mask_digest(masks))


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


def seal_template(
    values: Sequence[int],
    layout: TemplateLayout,
    key: PublicKey,
    seal: SealPublicKey,
    rng: random.Random | None = None,
) -> SealedTemplate:
    """Client side of sealed enrolment (module docstring). ``rng`` draws the seed (OS CSPRNG
    unless a test seeds it); the box's ephemeral key always comes from the OS."""
    layout.check_vector(values)
    layout.check_key(key)
    seed = (rng if rng is not None else secrets.SystemRandom()).randbytes(SEED_BYTES)
    offsets, rho = derive_masks(seed, layout, key)
    masks = tuple(encrypt_derived(key, c, p) for c, p in zip(offsets, rho, strict=True))
    width = SealedLayout.for_norms(NormLayout.for_key(key, layout), key).value_bytes
    plain = b"".join((int(q) + c).to_bytes(width, "big")
                     for q, c in zip(values, offsets, strict=True))
    return SealedTemplate(seed, seal.seal(plain, box_context(key, layout, masks)), masks)


def check_sealed_shape(upload: SealedTemplate, layout: TemplateLayout, key: PublicKey) -> None:
    """A's shape checks before anything is computed (the values are hidden)."""
    if len(upload.seed) != SEED_BYTES:
        raise ProtocolError(f"a sealed upload's seed has {SEED_BYTES} bytes")
    if len(upload.masks) != layout.dim:
        raise ProtocolError(f"sealed upload has {len(upload.masks)} mask ciphertexts, the "
                            f"layout has {layout.dim} coordinates")
    if any(m.key != key for m in upload.masks):
        raise KeyMismatchError("sealed upload was encrypted under another key")


# --------------------------------------------------------------------------------------------
# A: check the masks, ask B
# --------------------------------------------------------------------------------------------


def _mask_check(
    uploads: Sequence[SealedTemplate],
    derived: Sequence[tuple[list[int], list[int]]],
    key: PublicKey,
    kappa: int,
    rng: random.Random,
) -> bool:
    """One batch check of every mask ciphertext of ``uploads`` (module docstring)."""
    bases = [m for u in uploads for m in u.masks]
    alphas = [rng.getrandbits(kappa) for _ in bases]
    offsets = [c for off, _ in derived for c in off]
    rho = [p for _, r in derived for p in r]
    lhs = bucket_power_product(bases, alphas)
    plain = sum(a * c for a, c in zip(alphas, offsets, strict=True)) % key.n
    rand = sum(a * p for a, p in zip(alphas, rho, strict=True))
    rhs = (1 + plain * key.n) * h_power(key, rand) % key.n_squared
    return int(lhs.value) == int(rhs)


def check_masks(
    uploads: Sequence[SealedTemplate],
    layout: TemplateLayout,
    key: PublicKey,
    rng: random.Random | None = None,
) -> tuple[list[bool], list[tuple[list[int], list[int]]]]:
    """A: which uploads' mask ciphertexts encrypt the masks of their seeds, and the derived
    masks. One batch check for all; only if it fails, one per upload (so a forged upload costs
    its sender a refusal and the honest items of its batch nothing)."""
    rng = rng if rng is not None else secrets.SystemRandom()
    derived = [derive_masks(u.seed, layout, key) for u in uploads]
    if not uploads:
        return [], derived
    if _mask_check(uploads, derived, key, layout.kappa, rng):
        return [True] * len(uploads), derived
    return [_mask_check([u], [d], key, layout.kappa, rng)
            for u, d in zip(uploads, derived, strict=True)], derived


@dataclass
class SealedState:
    """A's secret state of round 1: each forwarded upload's masks (hidden from ``repr``)."""

    offsets: list[list[int]]  # per forwarded upload: c_i = 2^s + r_i

    def __repr__(self) -> str:
        return f"SealedState(vectors={len(self.offsets)})"


def start_sealed(
    uploads: Sequence[SealedTemplate],
    derived: Sequence[tuple[list[int], list[int]]],
    layout: SealedLayout,
    direction: Sequence[int],
) -> tuple[SealedState, SealedAdmitRequest]:
    """A: the request for uploads whose masks passed :func:`check_masks`."""
    if not 0 < len(uploads) <= MAX_VECTORS:
        raise ProtocolError(f"need 1..{MAX_VECTORS} uploads, got {len(uploads)}")
    t = layout.template
    request = SealedAdmitRequest(t.dim, t.slot_bits, tuple(direction),
                                 tuple(u.box for u in uploads),
                                 tuple(m for u in uploads for m in u.masks))
    return SealedState([list(d[0]) for d in derived]), request


# --------------------------------------------------------------------------------------------
# B
# --------------------------------------------------------------------------------------------


def open_box(
    box: bytes, digest: bytes, layout: SealedLayout, seal: SealPrivateKey
) -> list[int] | None:
    """B: the masked vector of one upload (its box bound to the mask ``digest``), or ``None`` if
    the box does not open or a value lies outside the honest range (a malformed upload: nothing
    computed from it could be trusted). Sealed admission and the derived heads both read boxes
    through here."""
    t = layout.template
    try:
        plain = seal.open(box, box_context_from_digest(layout.key, t, digest))
    except SealError:
        return None
    width = layout.value_bytes
    if len(plain) != t.dim * width:
        return None
    values = [int.from_bytes(plain[i * width:(i + 1) * width], "big") for i in range(t.dim)]
    limit = layout.norms.content_limit
    return values if all(v < limit for v in values) else None


def cross_products(
    jobs: Sequence[tuple[Sequence[Ciphertext], Sequence[int]]],
) -> list[Ciphertext]:
    """``Π_i [c_i]^(v_i)`` per job (module-level so process pools can run it)."""
    return [bucket_power_product(bases, exps) for bases, exps in jobs]


def _check_request(request: SealedAdmitRequest, layout: SealedLayout) -> None:
    t = layout.template
    if (request.dim, request.slot_bits) != (t.dim, t.slot_bits):
        raise ProtocolError(f"sealed admission layout dim={request.dim}/slot="
                            f"{request.slot_bits} differs from B's {t.dim}/{t.slot_bits}")
    if not 0 < request.n_vectors <= MAX_VECTORS:
        raise ProtocolError(f"sealed admission of {request.n_vectors} templates; B allows "
                            f"1..{MAX_VECTORS}")
    if len(request.direction) != t.dim or any(abs(m) > t.bound for m in request.direction):
        raise ProtocolError("sealed admission's mean direction is not a quantised unit vector")


def helper_sealed(
    request: SealedAdmitRequest,
    layout: SealedLayout,
    share_b: KeyShare,
    seal: SealPrivateKey,
    pool: RandomnessPool,
    engine: LocalEngine = SERIAL,
) -> SealedAdmitReply:
    """B: open, check, and answer every template of the request (module docstring)."""
    _check_request(request, layout)
    t, key = layout.template, share_b.public_key
    per = [request.masks[j * t.dim:(j + 1) * t.dim] for j in range(request.n_vectors)]
    opened = [open_box(b, mask_digest(m), layout, seal)
              for b, m in zip(request.boxes, per, strict=True)]
    ok = [(m, v) for m, v in zip(per, opened, strict=True) if v is not None]
    valid = tuple(0 if v is None else 1 for v in opened)
    if not ok:
        return SealedAdmitReply(key, valid, (), (), (), (), ())
    products = engine.map_chunks(cross_products, ok)
    cross = layout.cross
    r_bits = cross.slot_bits - 1
    masks = [pool.rng.getrandbits(r_bits) for _ in ok]
    packed_cross: list[Ciphertext] = []
    for at in range(0, len(ok), cross.n_slots):
        acc = _horner_pack(products[at:at + cross.n_slots], cross.slot_bits)
        packed_cross.append(acc + key.encrypt(cross.pack_raw(masks[at:at + cross.n_slots]), pool))
    partials = engine.map_chunks(partial(partial_decrypt_batch, share_b), packed_cross)
    s = t.slots_per_ct
    sums, dots, packed = [], [], []
    for (_, v), r in zip(ok, masks, strict=True):
        sums.append(key.encrypt(sum(x * x for x in v) + 2 * r, pool))
        dots.append(key.encrypt(sum(x * m for x, m in zip(v, request.direction, strict=True)),
                                pool))
        packed += [key.encrypt(t.packed.pack_raw(v[i:i + s]), pool) for i in range(0, t.dim, s)]
    return SealedAdmitReply(key, valid, tuple(packed_cross), tuple(partials), tuple(sums),
                            tuple(dots), tuple(packed))


# --------------------------------------------------------------------------------------------
# A finishes round 1
# --------------------------------------------------------------------------------------------


def finish_sealed(
    state: SealedState,
    reply: SealedAdmitReply,
    layout: SealedLayout,
    share_a: KeyShare,
    direction: Sequence[int],
    pool: RandomnessPool,
    engine: LocalEngine = SERIAL,
) -> list[NormedVector | None]:
    """A: ``[‖u‖²]``, ``[⟨u, m⟩]`` and the stored packing per valid template (``None`` where B
    refused the box). Raises :class:`~pura.errors.DecryptionError` if a packed cross term does
    not decrypt (a client's ciphertext with malformed randomness: the caller isolates it)."""
    t = layout.template
    n = len(state.offsets)
    ok = [j for j in range(n) if j < len(reply.valid) and reply.valid[j]]
    cross = layout.cross
    n_packed = -(-len(ok) // cross.n_slots)
    if len(reply.valid) != n or len(reply.sums) != len(ok) or len(reply.dots) != len(ok) \
            or len(reply.packed) != len(ok) * t.cts_per_template \
            or len(reply.cross) != n_packed or len(reply.cross_partials) != n_packed:
        raise ProtocolError(f"sealed admission reply does not answer {n} templates")
    mine = engine.map_chunks(partial(partial_decrypt_batch, share_a), list(reply.cross))
    terms: list[int] = []
    try:
        for at, (pa, pb) in enumerate(zip(mine, reply.cross_partials, strict=True)):
            count = min(cross.n_slots, len(ok) - at * cross.n_slots)
            terms += cross.unpack_raw(combine(pa, pb), count)
    except PackingOverflowError as exc:
        raise ProtocolError("sealed cross terms exceed the agreed slot layout") from exc
    out: list[NormedVector | None] = [None] * n
    per = t.cts_per_template
    s = t.slots_per_ct
    for i, j in enumerate(ok):
        c = state.offsets[j]
        norm = reply.sums[i].add_plain(sum(x * x for x in c) - 2 * terms[i]).rerandomize(pool)
        dot = reply.dots[i].add_plain(
            -sum(x * m for x, m in zip(c, direction, strict=True))).rerandomize(pool)
        r = [x - t.bound for x in c]
        stored = tuple(
            p.add_plain(-t.packed.pack_raw(r[k * s:(k + 1) * s])).rerandomize(pool)
            for k, p in enumerate(reply.packed[i * per:(i + 1) * per])
        )
        out[j] = NormedVector(norm, (), stored, dot)
    return out


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


class SealedHelper(NormHelper, Protocol):
    """What A asks of B for sealed admission (round 2 is :class:`NormHelper`'s)."""

    def sealed_admit(self, request: SealedAdmitRequest) -> SealedAdmitReply: ...


_FORGED = ("refused at admission: its mask ciphertexts do not encrypt the masks of "
           "its seed (a forged or corrupted upload)")
_UNOPENED = ("refused at admission: B could not open its sealed vector, or a "
             "coordinate lies far outside ±2^s")


def _admit_part(
    uploads: Sequence[SealedTemplate],
    layout: SealedLayout,
    share_a: KeyShare,
    pool: RandomnessPool,
    helper: SealedHelper,
    engine: LocalEngine,
    rng: random.Random | None,
) -> list[NormedVector | EmbeddingRangeError]:
    key = share_a.public_key
    mean = layout.norms.mean
    # Without A's wolf-check layout (tests, tools) B's inner product is with the zero vector.
    direction = mean.direction if mean is not None else (0,) * layout.template.dim
    passed, derived = check_masks(uploads, layout.template, key, rng)
    out: list[NormedVector | EmbeddingRangeError] = [EmbeddingRangeError(_FORGED)] * len(uploads)
    send = [j for j, good in enumerate(passed) if good]
    if not send:
        return out
    state, request = start_sealed([uploads[j] for j in send], [derived[j] for j in send],
                                  layout, direction)
    normed = finish_sealed(state, helper.sealed_admit(request), layout, share_a,
                           direction, pool, engine)
    checked = check_normed(normed, layout.norms, share_a, pool, helper, wolf=mean is not None,
                           engine=engine, rng=rng, unvalid=_UNOPENED)
    for j, result in zip(send, checked, strict=True):
        out[j] = result
    return out


def admit_sealed(
    uploads: Sequence[SealedTemplate],
    layout: SealedLayout,
    share_a: KeyShare,
    pool: RandomnessPool,
    helper: SealedHelper,
    engine: LocalEngine = SERIAL,
    rng: random.Random | None = None,
    lanes: int = ADMIT_LANES,
) -> list[AdmittedTemplate | EmbeddingRangeError]:
    """A, at enrolment: what to store for each sealed upload, or why it was refused (per item).

    Lanes as in :func:`pura.protocols.norms.admit_templates`: while B works on one sub-batch,
    A works on the other.
    """
    for u in uploads:
        check_sealed_shape(u, layout.template, share_a.public_key)
    parts = split_lanes(uploads, lanes)
    if len(parts) == 1:
        results = _admit_part(uploads, layout, share_a, pool, helper, engine, rng)
    else:
        with ThreadPoolExecutor(len(parts), thread_name_prefix="pura-seal-lane") as ex:
            futures = [ex.submit(_admit_part, p, layout, share_a, pool, helper, engine, rng)
                       for p in parts]
            results = [r for f in futures for r in f.result()]
    return [
        EmbeddingRangeError("template " + str(r)) if isinstance(r, EmbeddingRangeError)
        else AdmittedTemplate(r.packed, r.norm)
        for r in results
    ]


__all__ = [
    "DOMAIN",
    "SEED_BYTES",
    "SealedHelper",
    "SealedLayout",
    "SealedState",
    "admit_sealed",
    "box_context",
    "box_context_from_digest",
    "check_masks",
    "check_sealed_shape",
    "cross_products",
    "derive_masks",
    "finish_sealed",
    "helper_sealed",
    "mask_digest",
    "open_box",
    "seal_template",
    "start_sealed",
]
