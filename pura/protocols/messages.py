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

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Self

from pura.crypto.paillier import Ciphertext, PartialDecryption, PublicKey
from pura.errors import KeyMismatchError, ProtocolError

_MAGIC = b"PM"
VERSION = 1
#: Upper bound on any list length in a message (a 10⁶-item list of 768-byte values is 768 MB).
MAX_ITEMS = 1_000_000


class _Writer:
    def __init__(self, kind: int, key: PublicKey) -> None:
        self.key = key
        self.buf = bytearray(_MAGIC + bytes([VERSION, kind]) + key.fingerprint)

    def u32(self, value: int) -> _Writer:
        if not 0 <= value < 1 << 32:
            raise ProtocolError(f"field value {value} does not fit u32")
        self.buf += struct.pack(">I", value)
        return self

    def cts(self, items: Sequence[Ciphertext]) -> _Writer:
        self.u32(len(items))
        for c in items:
            if c.key != self.key:
                raise KeyMismatchError("message mixes ciphertexts of two keys")
            self.buf += c.raw_bytes()
        return self

    def pds(self, items: Sequence[PartialDecryption]) -> _Writer:
        self.u32(len(items))
        for p in items:
            if p.key != self.key:
                raise KeyMismatchError("message mixes partial decryptions of two keys")
            self.buf += p.raw_bytes()
        return self

    def done(self) -> bytes:
        return bytes(self.buf)


class _Reader:
    def __init__(self, data: bytes, kind: int, key: PublicKey, name: str) -> None:
        self.key = key
        self.name = name
        head = len(_MAGIC) + 2 + len(key.fingerprint)
        if len(data) < head or not data.startswith(_MAGIC):
            raise ProtocolError(f"{name}: not a Pura protocol message")
        if data[2] != VERSION or data[3] != kind:
            raise ProtocolError(f"{name}: version {data[2]} kind {data[3]} not expected")
        if data[4:head] != key.fingerprint:
            raise KeyMismatchError(f"{name}: made under key {data[4:head].hex()}, not {key.key_id}")
        self.data = memoryview(data)
        self.pos = head

    def _take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise ProtocolError(f"{self.name}: truncated")
        out = bytes(self.data[self.pos:self.pos + size])
        self.pos += size
        return out

    def u32(self) -> int:
        value: int = struct.unpack(">I", self._take(4))[0]
        return value

    def _count(self) -> int:
        n = self.u32()
        if n > MAX_ITEMS or n * self.key.ciphertext_bytes > len(self.data) - self.pos:
            raise ProtocolError(f"{self.name}: list of {n} items exceeds the message")
        return n

    def cts(self) -> tuple[Ciphertext, ...]:
        w = self.key.ciphertext_bytes
        return tuple(Ciphertext.from_raw(self.key, self._take(w)) for _ in range(self._count()))

    def pds(self, index: int) -> tuple[PartialDecryption, ...]:
        w = self.key.ciphertext_bytes
        return tuple(
            PartialDecryption.from_raw(self.key, index, self._take(w)) for _ in range(self._count())
        )

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError(f"{self.name}: {len(self.data) - self.pos} trailing bytes")


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

    KIND: ClassVar[int] = 1
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

    KIND: ClassVar[int] = 2
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
class AdmittedTemplate:
    """A template as the servers define it: B's canonical re-packing of the range-checked
    vector ``u`` (slots ``u_i + 2^s``) and the servers' ``[‖u‖²]``, inside the unit-norm bounds.

    Only :func:`pura.protocols.norms.admit_templates` makes one. Its kind differs from
    :class:`PaillierTemplate`, so bytes a client uploads never parse as an admitted template.
    """

    KIND: ClassVar[int] = 9
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

    KIND: ClassVar[int] = 3
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

    KIND: ClassVar[int] = 4
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

    KIND: ClassVar[int]
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

    KIND: ClassVar[int] = 5


@dataclass(frozen=True)
class CompareReply:
    """B → A: fresh ``[β_j]``, ``[β_j·y_D,j]``, ``[β_j·y_I,j]`` per comparison."""

    KIND: ClassVar[int] = 6
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

    KIND: ClassVar[int] = 20


@dataclass(frozen=True)
class ArgminReply:
    """B → A: fresh one-hot ``[e_j]`` of the winner and fresh ``[y_{j*}]`` (its masked distance)."""

    KIND: ClassVar[int] = 21
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

    KIND: ClassVar[int] = 7
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

    KIND: ClassVar[int] = 8
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
    n = r.u32()
    if n > MAX_ITEMS or 4 * n > len(r.data) - r.pos:
        raise ProtocolError(f"{r.name}: list of {n} bits exceeds the message")
    bits = tuple(r.u32() for _ in range(n))
    if any(b not in (0, 1) for b in bits):
        raise ProtocolError(f"{r.name}: a bit is neither 0 nor 1")
    return bits


@dataclass(frozen=True)
class NormRequest:
    """A → B: ``n_vectors`` masked vectors, each ``cts_per_template`` packed ciphertexts.

    ``repack`` asks B for a canonical packed re-encryption as well (templates at enrolment).
    """

    KIND: ClassVar[int] = 16
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

    KIND: ClassVar[int] = 17
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

    KIND: ClassVar[int] = 18


@dataclass(frozen=True)
class NormCheckReply:
    """B → A: B's comparison bits, each XOR-ed with A's secret flip (uniform in B's view)."""

    KIND: ClassVar[int] = 19
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
    "ThresholdReply",
    "ThresholdRequest",
]
