"""Paillier-side protocol messages (client → A and A ↔ B), with compact versioned encodings.

Wire format of every message here::

    b"PM" | version (1 B) | kind (1 B) | key fingerprint (8 B) | fields...

Fields are big-endian ``u32`` integers and lists (``u32`` count, then fixed-width items).
Ciphertexts and partial decryptions are written at the key's fixed width ``|N²|`` without a
per-item header (the key id is in the message header once). Parsing validates the header, the
key binding (:class:`KeyMismatchError`), every ciphertext (:class:`InvalidCiphertextError`: range,
unit, non-trivial randomness), counts against the bytes actually present, and that nothing
trails; any other inconsistency is a :class:`ProtocolError`.

Only shapes go over the wire, never anything a party must keep: A's masks and flip bits stay in
A's round state objects (:mod:`pura.protocols.secure_distance`, :mod:`pura.protocols.secure_min`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum, unique
from typing import ClassVar, Self

from pura import wire
from pura.crypto.paillier import Ciphertext, PartialDecryption, PublicKey
from pura.errors import KeyMismatchError, ProtocolError

_MAGIC = b"PM"
VERSION = 1
#: Upper bound on any list length in a message (a 10⁶-item list of 768-byte values is 768 MB).
MAX_ITEMS = 1_000_000


@unique
class Kind(IntEnum):
    """The kind byte of every message in this module, registered in one place.

    Why one registry: the reader refuses a message whose kind byte is not the one it expects, so
    two classes sharing a number would parse each other's bytes (a reply accepted as a request).
    ``@unique`` makes a duplicate number an import error; numbers are part of the wire format and
    of stored templates (``ADMITTED_TEMPLATE``), so never renumber one. 15 is unassigned.
    """

    PAILLIER_QUERY = 1
    PAILLIER_TEMPLATE = 2
    BLINDED_PRODUCT_REQUEST = 3
    BLINDED_PRODUCT_REPLY = 4
    COMPARE_REQUEST = 5
    COMPARE_REPLY = 6
    THRESHOLD_REQUEST = 7
    THRESHOLD_REPLY = 8
    ADMITTED_TEMPLATE = 9
    SEALED_TEMPLATE = 10
    SEALED_ADMIT_REQUEST = 11
    SEALED_ADMIT_REPLY = 12
    SEALED_QUERY = 13
    SEALED_QUERY_REQUEST = 14
    NORM_REQUEST = 16
    NORM_REPLY = 17
    NORM_CHECK_REQUEST = 18
    NORM_CHECK_REPLY = 19
    ARGMIN_REQUEST = 20
    ARGMIN_REPLY = 21


class _Writer(wire.Writer):
    """:class:`pura.wire.Writer` with the message header and fixed-width Paillier values."""

    def __init__(self, kind: Kind, key: PublicKey) -> None:
        super().__init__(_MAGIC + bytes([VERSION, kind]) + key.fingerprint)
        self.key = key

    def cts(self, items: Sequence[Ciphertext]) -> _Writer:
        self.u32(len(items))
        for c in items:
            if c.key != self.key:
                raise KeyMismatchError("message mixes ciphertexts of two keys")
            self.raw(c.raw_bytes())
        return self

    def pds(self, items: Sequence[PartialDecryption]) -> _Writer:
        self.u32(len(items))
        for p in items:
            if p.key != self.key:
                raise KeyMismatchError("message mixes partial decryptions of two keys")
            self.raw(p.raw_bytes())
        return self


class _Reader(wire.Reader):
    """:class:`pura.wire.Reader` that checks the header (magic, version, kind, key) first."""

    def __init__(self, data: bytes, kind: Kind, key: PublicKey, name: str) -> None:
        super().__init__(data, what=name)
        self.key = key
        self.name = name
        if len(data) < len(_MAGIC) + 2 + len(key.fingerprint):
            raise self.fail("not a Pura protocol message")
        self.expect(_MAGIC, "not a Pura protocol message")
        version, got = self.take(2)
        if version != VERSION or got != kind:
            raise self.fail(f"version {version} kind {got} not expected")
        made = self.take(len(key.fingerprint))
        if made != key.fingerprint:
            raise KeyMismatchError(f"{name}: made under key {made.hex()}, not {key.key_id}")

    def cts(self, *, unit_check: bool = True) -> tuple[Ciphertext, ...]:
        w = self.key.ciphertext_bytes
        return tuple(Ciphertext.from_raw(self.key, self.take(w), unit_check=unit_check)
                     for _ in range(self.count(MAX_ITEMS, w)))

    def pds(self, index: int) -> tuple[PartialDecryption, ...]:
        w = self.key.ciphertext_bytes
        return tuple(PartialDecryption.from_raw(self.key, index, self.take(w))
                     for _ in range(self.count(MAX_ITEMS, w)))


def _key_of(items: Sequence[Ciphertext]) -> PublicKey:
    if not items:
        raise ProtocolError("a message needs at least one ciphertext")
    return items[0].key


# --------------------------------------------------------------------------------------------
# Client → A
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaillierQuery:
    """The Paillier part of a query: packed ``[q(x) + 2^s]`` like a template, nothing else.

    There is deliberately no squared-norm field: a client-supplied ``[‖q(x)‖²]`` let a client
    shift every distance (docs/security.md, "Exact distance"). A and B compute the norm of the
    vector they decode (:func:`pura.protocols.norms.admit_query`), and B re-encrypts every
    coordinate it decoded, so nothing the client encrypted is used as it was sent.
    """

    KIND: ClassVar[Kind] = Kind.PAILLIER_QUERY
    packed: tuple[Ciphertext, ...]

    def to_bytes(self) -> bytes:
        return _Writer(self.KIND, _key_of(self.packed)).cts(self.packed).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> PaillierQuery:
        r = _Reader(data, cls.KIND, key, "PaillierQuery")
        packed = r.cts()
        r.end()
        if not packed:
            raise ProtocolError("PaillierQuery needs ≥ 1 packed ciphertext")
        return cls(packed)


@dataclass(frozen=True)
class PaillierTemplate:
    """An enrolment upload: packed ``[q(y) + 2^s]`` ciphertexts, and no squared norm.

    A never uses it in a distance as it is: :meth:`pura.protocols.identify.ServerA.admit` turns
    it into an :class:`AdmittedTemplate` (or rejects it).
    """

    KIND: ClassVar[Kind] = Kind.PAILLIER_TEMPLATE
    packed: tuple[Ciphertext, ...]

    def to_bytes(self) -> bytes:
        return _Writer(self.KIND, _key_of(self.packed)).cts(self.packed).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> PaillierTemplate:
        r = _Reader(data, cls.KIND, key, "PaillierTemplate")
        packed = r.cts()
        r.end()
        if not packed:
            raise ProtocolError("PaillierTemplate needs ≥ 1 packed ciphertext")
        return cls(packed)


@dataclass(frozen=True)
class SealedTemplate:
    """An enrolment upload for sealed admission (:mod:`pura.protocols.sealed`).

    ``seed``: what A derives the masks ``c`` and their encryption randomness from (A's to
    know). ``box``: the masked vector ``v = q(y) + c``, sealed to B (A relays it, cannot open
    it). ``masks``: ``[c_i]`` per coordinate under the threshold key, with the derived
    randomness, so A can check them without encrypting anything itself.
    """

    KIND: ClassVar[Kind] = Kind.SEALED_TEMPLATE
    seed: bytes = field(repr=False)
    box: bytes = field(repr=False)
    masks: tuple[Ciphertext, ...]

    def __repr__(self) -> str:
        return f"SealedTemplate(masks={len(self.masks)}, box={len(self.box)} B)"

    def to_bytes(self) -> bytes:
        w = _Writer(self.KIND, _key_of(self.masks))
        return w.part(self.seed).part(self.box).cts(self.masks).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> SealedTemplate:
        r = _Reader(data, cls.KIND, key, "SealedTemplate")
        seed, box = r.part(), r.part()
        masks = r.cts(unit_check=False)  # A's batch check covers it (pura.protocols.sealed)
        r.end()
        if not masks:
            raise ProtocolError("SealedTemplate needs ≥ 1 mask ciphertext")
        return cls(seed, box, masks)


@dataclass(frozen=True)
class SealedQuery:
    """The Paillier part of a query for sealed admission (:mod:`pura.protocols.sealed_query`).

    ``seed``: what A derives the masks ``c`` from (A's to know). ``box``: the masked vector
    ``v = q(x) + c``, sealed to B (A relays it, cannot open it). No ciphertext at all: B
    encrypts every coordinate it checked (as in the joint-decryption admission), so A can
    compute the norm's cross term ``Π [v_i]^(c_i)`` itself and nothing needs decrypting.
    """

    KIND: ClassVar[Kind] = Kind.SEALED_QUERY
    key: PublicKey = field(repr=False)
    seed: bytes = field(repr=False)
    box: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"SealedQuery(box={len(self.box)} B)"

    def to_bytes(self) -> bytes:
        return _Writer(self.KIND, self.key).part(self.seed).part(self.box).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> SealedQuery:
        r = _Reader(data, cls.KIND, key, "SealedQuery")
        seed, box = r.part(), r.part()
        r.end()
        return cls(key, seed, box)


def _kind_of(data: bytes) -> int:
    kind_at = len(_MAGIC) + 1
    return data[kind_at] if len(data) > kind_at else -1


def query_upload_from_bytes(key: PublicKey, data: bytes) -> PaillierQuery | SealedQuery:
    """Either query upload, by its kind byte (sealed, or packed ciphertexts for key sets
    without a sealing key)."""
    if _kind_of(data) == Kind.SEALED_QUERY:
        return SealedQuery.from_bytes(key, data)
    return PaillierQuery.from_bytes(key, data)


def template_upload_from_bytes(key: PublicKey, data: bytes) -> PaillierTemplate | SealedTemplate:
    """Either enrolment upload, by its kind byte (sealed admission or the joint-decryption
    admission of key sets without a sealing key)."""
    if _kind_of(data) == Kind.SEALED_TEMPLATE:
        return SealedTemplate.from_bytes(key, data)
    return PaillierTemplate.from_bytes(key, data)


@dataclass(frozen=True)
class AdmittedTemplate:
    """A template as the servers define it: B's canonical re-packing of the range-checked
    vector ``u`` (slots ``u_i + 2^s``) and the servers' ``[‖u‖²]``, inside the unit-norm bounds.

    Only :func:`pura.protocols.norms.admit_templates` makes one. Its kind differs from
    :class:`PaillierTemplate`, so bytes a client uploads never parse as an admitted template.
    """

    KIND: ClassVar[Kind] = Kind.ADMITTED_TEMPLATE
    packed: tuple[Ciphertext, ...]
    norm: Ciphertext

    def to_bytes(self) -> bytes:
        return _Writer(self.KIND, self.norm.key).cts(self.packed).cts([self.norm]).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> AdmittedTemplate:
        r = _Reader(data, cls.KIND, key, "AdmittedTemplate")
        packed, norm = r.cts(), r.cts()
        r.end()
        if not packed or len(norm) != 1:
            raise ProtocolError("AdmittedTemplate needs ≥ 1 packed ciphertext and one norm")
        return cls(packed, norm[0])


# --------------------------------------------------------------------------------------------
# A ↔ B: exact distance (blinded multiplication)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlindedProductRequest:
    """A → B: the query's per-dimension ciphertexts and the candidates' masked, packed vectors.

    ``masked`` holds packed plaintexts of ``slot_bits``-bit slots (A's partial decryptions of them
    in ``partials``); the slot stream order is fixed by
    :func:`pura.protocols.secure_distance.stream_order` for ``(dim, n_candidates)``.
    """

    KIND: ClassVar[Kind] = Kind.BLINDED_PRODUCT_REQUEST
    dim: int
    slot_bits: int
    n_candidates: int
    query: tuple[Ciphertext, ...]
    masked: tuple[Ciphertext, ...]
    partials: tuple[PartialDecryption, ...]

    def to_bytes(self) -> bytes:
        w = _Writer(self.KIND, _key_of(self.query))
        w.u32(self.dim).u32(self.slot_bits).u32(self.n_candidates)
        return w.cts(self.query).cts(self.masked).pds(self.partials).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> BlindedProductRequest:
        r = _Reader(data, cls.KIND, key, "BlindedProductRequest")
        dim, slot_bits, k = r.u32(), r.u32(), r.u32()
        query, masked, partials = r.cts(), r.cts(), r.pds(1)
        r.end()
        return cls(dim, slot_bits, k, query, masked, partials)


@dataclass(frozen=True)
class BlindedProductReply:
    """B → A: ``[⟨q(x), v_j⟩]`` per candidate, re-randomised by B."""

    KIND: ClassVar[Kind] = Kind.BLINDED_PRODUCT_REPLY
    products: tuple[Ciphertext, ...]

    def to_bytes(self) -> bytes:
        return _Writer(self.KIND, _key_of(self.products)).cts(self.products).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> BlindedProductReply:
        r = _Reader(data, cls.KIND, key, "BlindedProductReply")
        products = r.cts()
        r.end()
        return cls(products)


# --------------------------------------------------------------------------------------------
# A ↔ B: secure minimum and threshold
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PackedComparisons:
    """Shared wire form of every "packed blinded comparisons + A's partial decryptions" request.

    Both the argmin tournament and the norm-range check send exactly this shape; the subclasses
    differ only in their message kind (so one can never be replayed as the other).
    """

    KIND: ClassVar[Kind]
    slot_bits: int
    n_comparisons: int
    packed: tuple[Ciphertext, ...]
    partials: tuple[PartialDecryption, ...]

    def to_bytes(self) -> bytes:
        w = _Writer(self.KIND, _key_of(self.packed)).u32(self.slot_bits).u32(self.n_comparisons)
        return w.cts(self.packed).pds(self.partials).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> Self:
        r = _Reader(data, cls.KIND, key, cls.__name__)
        slot_bits, m = r.u32(), r.u32()
        packed, partials = r.cts(), r.pds(1)
        r.end()
        return cls(slot_bits, m, packed, partials)


@dataclass(frozen=True)
class CompareRequest(_PackedComparisons):
    """A → B: one tournament round; per comparison three packed slots (w, y_D, y_I)."""

    KIND: ClassVar[Kind] = Kind.COMPARE_REQUEST


@dataclass(frozen=True)
class CompareReply:
    """B → A: fresh ``[β_j]``, ``[β_j·y_D,j]``, ``[β_j·y_I,j]`` per comparison."""

    KIND: ClassVar[Kind] = Kind.COMPARE_REPLY
    bits: tuple[Ciphertext, ...]
    sel_dist: tuple[Ciphertext, ...]
    sel_index: tuple[Ciphertext, ...]

    def to_bytes(self) -> bytes:
        w = _Writer(self.KIND, _key_of(self.bits))
        return w.cts(self.bits).cts(self.sel_dist).cts(self.sel_index).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> CompareReply:
        r = _Reader(data, cls.KIND, key, "CompareReply")
        bits, sel_d, sel_i = r.cts(), r.cts(), r.cts()
        r.end()
        return cls(bits, sel_d, sel_i)


@dataclass(frozen=True)
class ArgminRequest(_PackedComparisons):
    """A → B: the one-round argmin of ``n_comparisons`` = k candidates: ``k(k−1)/2`` pairwise
    blinded differences, then ``k`` masked distances, packed (:mod:`pura.protocols.secure_min`)."""

    KIND: ClassVar[Kind] = Kind.ARGMIN_REQUEST


@dataclass(frozen=True)
class ArgminReply:
    """B → A: fresh one-hot ``[e_j]`` of the winner and fresh ``[y_{j*}]`` (its masked distance)."""

    KIND: ClassVar[Kind] = Kind.ARGMIN_REPLY
    onehot: tuple[Ciphertext, ...]
    masked_min: Ciphertext

    def to_bytes(self) -> bytes:
        w = _Writer(self.KIND, self.masked_min.key)
        return w.cts(self.onehot).cts([self.masked_min]).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> ArgminReply:
        r = _Reader(data, cls.KIND, key, "ArgminReply")
        onehot, masked = r.cts(), r.cts()
        r.end()
        if len(masked) != 1 or not onehot:
            raise ProtocolError("ArgminReply needs ≥ 1 indicator and one masked minimum")
        return cls(onehot, masked[0])


@dataclass(frozen=True)
class ThresholdRequest:
    """A → B: blinded ``τ − D_min`` comparison and the two ciphertexts B chooses between.

    ``k`` is the number of candidates: both choices must decrypt below it (B checks the one it
    opens), so the opening can never reveal anything but a position. ``choice_partials`` are A's
    partial decryptions of the two choices, which B needs to run that check.
    """

    KIND: ClassVar[Kind] = Kind.THRESHOLD_REQUEST
    slot_bits: int
    k: int
    packed: Ciphertext
    partial: PartialDecryption
    choices: tuple[Ciphertext, Ciphertext]
    choice_partials: tuple[PartialDecryption, PartialDecryption]

    def to_bytes(self) -> bytes:
        w = _Writer(self.KIND, self.packed.key).u32(self.slot_bits).u32(self.k)
        w.cts([self.packed]).pds([self.partial]).cts(self.choices)
        return w.pds(self.choice_partials).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> ThresholdRequest:
        r = _Reader(data, cls.KIND, key, "ThresholdRequest")
        slot_bits, k = r.u32(), r.u32()
        packed, partial, choices, choice_partials = r.cts(), r.pds(1), r.cts(), r.pds(1)
        r.end()
        if len(packed) != 1 or len(partial) != 1 or len(choices) != 2 \
                or len(choice_partials) != 2:
            raise ProtocolError("ThresholdRequest needs one packed value and two choices, each "
                                "with A's partial decryption")
        return cls(slot_bits, k, packed[0], partial[0], (choices[0], choices[1]),
                   (choice_partials[0], choice_partials[1]))


@dataclass(frozen=True)
class ThresholdReply:
    """B → A: B's (flipped) comparison bit and B's partial decryption of the chosen index."""

    KIND: ClassVar[Kind] = Kind.THRESHOLD_REPLY
    bit: int
    partial: PartialDecryption

    def to_bytes(self) -> bytes:
        return _Writer(self.KIND, self.partial.key).u32(self.bit).pds([self.partial]).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> ThresholdReply:
        r = _Reader(data, cls.KIND, key, "ThresholdReply")
        bit, partial = r.u32(), r.pds(2)
        r.end()
        if bit not in (0, 1) or len(partial) != 1:
            raise ProtocolError("ThresholdReply needs a bit and one partial decryption")
        return cls(bit, partial[0])


# --------------------------------------------------------------------------------------------
# A ↔ B: server-computed norms (pura.protocols.norms)
# --------------------------------------------------------------------------------------------


def _write_bits(w: _Writer, bits: Sequence[int]) -> _Writer:
    w.u32(len(bits))
    for b in bits:
        w.u32(b)
    return w


def _read_bits(r: _Reader) -> tuple[int, ...]:
    bits = tuple(r.u32() for _ in range(r.count(MAX_ITEMS, 4)))
    if any(b not in (0, 1) for b in bits):
        raise ProtocolError(f"{r.name}: a bit is neither 0 nor 1")
    return bits


@dataclass(frozen=True)
class NormRequest:
    """A → B: ``n_vectors`` masked vectors, each ``cts_per_template`` packed ciphertexts.

    ``repack`` asks B for a canonical packed re-encryption as well (templates at enrolment).
    """

    KIND: ClassVar[Kind] = Kind.NORM_REQUEST
    dim: int
    slot_bits: int
    n_vectors: int
    repack: bool
    masked: tuple[Ciphertext, ...]
    partials: tuple[PartialDecryption, ...]

    def to_bytes(self) -> bytes:
        w = _Writer(self.KIND, _key_of(self.masked))
        w.u32(self.dim).u32(self.slot_bits).u32(self.n_vectors).u32(int(self.repack))
        return w.cts(self.masked).pds(self.partials).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> NormRequest:
        r = _Reader(data, cls.KIND, key, "NormRequest")
        dim, slot_bits, n, repack = r.u32(), r.u32(), r.u32(), r.u32()
        masked, partials = r.cts(), r.pds(1)
        r.end()
        if repack not in (0, 1):
            raise ProtocolError("NormRequest: repack must be 0 or 1")
        return cls(dim, slot_bits, n, bool(repack), masked, partials)


@dataclass(frozen=True)
class NormReply:
    """B → A: per vector a validity bit; for the valid ones fresh ``[Σv²]``, ``[v_i]``, packing."""

    KIND: ClassVar[Kind] = Kind.NORM_REPLY
    key: PublicKey = field(repr=False)
    valid: tuple[int, ...]
    sums: tuple[Ciphertext, ...]
    dims: tuple[Ciphertext, ...]
    packed: tuple[Ciphertext, ...]

    def to_bytes(self) -> bytes:
        w = _write_bits(_Writer(self.KIND, self.key), self.valid)
        return w.cts(self.sums).cts(self.dims).cts(self.packed).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> NormReply:
        r = _Reader(data, cls.KIND, key, "NormReply")
        valid = _read_bits(r)
        sums, dims, packed = r.cts(), r.cts(), r.cts()
        r.end()
        return cls(key, valid, sums, dims, packed)


@dataclass(frozen=True)
class NormCheckRequest(_PackedComparisons):
    """A → B: ``n_comparisons`` blinded comparisons (two per norm), packed, + A's partials."""

    KIND: ClassVar[Kind] = Kind.NORM_CHECK_REQUEST


@dataclass(frozen=True)
class NormCheckReply:
    """B → A: B's comparison bits, each XOR-ed with A's secret flip (uniform in B's view)."""

    KIND: ClassVar[Kind] = Kind.NORM_CHECK_REPLY
    key: PublicKey = field(repr=False)
    bits: tuple[int, ...]

    def to_bytes(self) -> bytes:
        return _write_bits(_Writer(self.KIND, self.key), self.bits).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> NormCheckReply:
        r = _Reader(data, cls.KIND, key, "NormCheckReply")
        bits = _read_bits(r)
        r.end()
        return cls(key, bits)



@dataclass(frozen=True)
class SealedAdmitRequest:
    """A → B: sealed admission of ``n_vectors`` templates (:mod:`pura.protocols.sealed`).

    Per template: the box sealed to B and the ``dim`` mask ciphertexts it is bound to (A has
    checked that they encrypt the masks its seed derives). ``direction``: the population mean
    direction of the wolf check (signed, ``|m_i| ≤ 2^s``).
    """

    KIND: ClassVar[Kind] = Kind.SEALED_ADMIT_REQUEST
    dim: int
    slot_bits: int
    direction: tuple[int, ...]
    boxes: tuple[bytes, ...] = field(repr=False)
    masks: tuple[Ciphertext, ...] = field(repr=False)

    @property
    def n_vectors(self) -> int:
        return len(self.boxes)

    def to_bytes(self) -> bytes:
        w = _Writer(self.KIND, _key_of(self.masks))
        w.u32(self.dim).u32(self.slot_bits).u32(len(self.direction))
        for m in self.direction:
            w.u32(m + _SIGNED_OFFSET)
        return w.blobs(self.boxes).cts(self.masks).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> SealedAdmitRequest:
        r = _Reader(data, cls.KIND, key, "SealedAdmitRequest")
        dim, slot_bits = r.u32(), r.u32()
        direction = tuple(r.u32() - _SIGNED_OFFSET for _ in range(r.count(MAX_ITEMS, 4)))
        boxes, masks = tuple(r.blobs()), r.cts(unit_check=False)  # A checked them
        r.end()
        if not boxes or len(masks) != len(boxes) * dim:
            raise ProtocolError(f"SealedAdmitRequest: {len(masks)} masks for {len(boxes)} boxes "
                                f"of dimension {dim}")
        return cls(dim, slot_bits, direction, boxes, masks)


@dataclass(frozen=True)
class SealedAdmitReply:
    """B → A: per template a validity bit; for the valid ones the packed, masked cross terms
    ``⟨c, v⟩ + R`` with B's partial decryptions, and fresh ``[S + 2R]``, ``[⟨v, m⟩]`` and the
    canonical packing ``[pack(v)]``."""

    KIND: ClassVar[Kind] = Kind.SEALED_ADMIT_REPLY
    key: PublicKey = field(repr=False)
    valid: tuple[int, ...]
    cross: tuple[Ciphertext, ...]
    cross_partials: tuple[PartialDecryption, ...]
    sums: tuple[Ciphertext, ...]
    dots: tuple[Ciphertext, ...]
    packed: tuple[Ciphertext, ...]

    def to_bytes(self) -> bytes:
        w = _write_bits(_Writer(self.KIND, self.key), self.valid)
        w.cts(self.cross).pds(self.cross_partials)
        return w.cts(self.sums).cts(self.dots).cts(self.packed).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> SealedAdmitReply:
        r = _Reader(data, cls.KIND, key, "SealedAdmitReply")
        valid = _read_bits(r)
        cross, partials = r.cts(), r.pds(2)
        sums, dots, packed = r.cts(), r.cts(), r.cts()
        r.end()
        return cls(key, valid, cross, partials, sums, dots, packed)


@dataclass(frozen=True)
class SealedQueryRequest:
    """A → B: admit one sealed query (:mod:`pura.protocols.sealed_query`): the layout and the
    client's box. B answers with a :class:`NormReply` (fresh ``[Σv²]`` and ``[v_i]``)."""

    KIND: ClassVar[Kind] = Kind.SEALED_QUERY_REQUEST
    key: PublicKey = field(repr=False)
    dim: int
    slot_bits: int
    box: bytes = field(repr=False)

    @property
    def n_vectors(self) -> int:
        return 1

    def to_bytes(self) -> bytes:
        w = _Writer(self.KIND, self.key).u32(self.dim).u32(self.slot_bits)
        return w.part(self.box).done()

    @classmethod
    def from_bytes(cls, key: PublicKey, data: bytes) -> SealedQueryRequest:
        r = _Reader(data, cls.KIND, key, "SealedQueryRequest")
        dim, slot_bits, box = r.u32(), r.u32(), r.part()
        r.end()
        return cls(key, dim, slot_bits, box)


#: Signed 32-bit values travel as ``value + 2^31`` in a ``u32``.
_SIGNED_OFFSET = 1 << 31


__all__ = [
    "MAX_ITEMS",
    "VERSION",
    "AdmittedTemplate",
    "ArgminReply",
    "ArgminRequest",
    "BlindedProductReply",
    "BlindedProductRequest",
    "CompareReply",
    "CompareRequest",
    "NormCheckReply",
    "NormCheckRequest",
    "NormReply",
    "NormRequest",
    "PaillierQuery",
    "PaillierTemplate",
    "SealedAdmitReply",
    "SealedAdmitRequest",
    "SealedQuery",
    "SealedQueryRequest",
    "SealedTemplate",
    "ThresholdReply",
    "ThresholdRequest",
    "query_upload_from_bytes",
    "template_upload_from_bytes",
]
