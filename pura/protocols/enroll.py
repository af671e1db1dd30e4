"""What a client produces for the Paillier part of enrolment and of a query.

Enrolment: the client quantises its embedding (``pura.crypto.encoding``) to integers
``q(y)_i ∈ [−2^s, 2^s]`` and uploads :class:`~pura.protocols.messages.PaillierTemplate`:
``q(y) + 2^s`` packed ``slots_per_ct`` values per ciphertext in slots of
``slot_bits = s + 2 + κ`` bits. Nothing else: A and B compute the squared norm themselves and
store an :class:`~pura.protocols.messages.AdmittedTemplate` (:mod:`pura.protocols.norms`), so a
client cannot shift distances with a forged norm.

Why that slot width: in the exact-distance protocol A adds a uniform mask ``r_i < 2^(s+1+κ)`` to
every slot before B decrypts. The slot then holds ``q_i + 2^s + r_i < 2^(s+1) + 2^(s+1+κ) ≤
2^(s+2+κ)``: no carry into the next slot (exactness), and ``q_i + 2^s ∈ [0, 2^(s+1)]`` is hidden
within statistical distance ``2^(s+1) / 2^(s+1+κ) = 2^-κ`` per slot.

Query: packed exactly like a template (``[q(x) + 2^s]``, ``cts_per_template`` ciphertexts), and
again no norm. The servers never compute with a client's query ciphertexts directly: admission
(:func:`pura.protocols.norms.admit_query`) has B decode the masked packing, range-check it and
re-encrypt every coordinate, so a per-dimension upload (129 ciphertexts, and 128 slot shifts at A
to pack it for the admission round) bought nothing but bytes and A's CPU time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pura.crypto.paillier import Ciphertext, PackedLayout, PublicKey, RandomnessPool
from pura.crypto.params import STATISTICAL_SECURITY_BITS
from pura.errors import DimensionError, KeyMismatchError, PackingOverflowError, ParameterError
from pura.protocols.messages import AdmittedTemplate, PaillierQuery, PaillierTemplate


@dataclass(frozen=True)
class TemplateLayout:
    """Packing of one template under one key; both servers derive it from (key, dim, s, κ)."""

    dim: int
    scale_bits: int
    slots_per_ct: int
    kappa: int = STATISTICAL_SECURITY_BITS

    def __post_init__(self) -> None:
        if self.dim < 1 or self.slots_per_ct < 1 or self.kappa < 1 or self.scale_bits < 1:
            raise ParameterError(f"invalid template layout {self}")

    @classmethod
    def for_key(
        cls, key: PublicKey, dim: int, scale_bits: int, kappa: int = STATISTICAL_SECURITY_BITS
    ) -> TemplateLayout:
        """The densest layout: as many ``s + 2 + κ``-bit slots as fit below ``N/2``."""
        slots = PackedLayout.max_slots(key, scale_bits + 2 + kappa)
        if slots < 1:
            raise ParameterError(f"a {key.modulus_bits}-bit key cannot hold one template slot")
        return cls(dim, scale_bits, slots, kappa)

    @property
    def bound(self) -> int:
        """Largest absolute coordinate value ``2^s``."""
        return 1 << self.scale_bits

    @property
    def slot_bits(self) -> int:
        return self.scale_bits + 2 + self.kappa

    @property
    def mask_bits(self) -> int:
        """A's per-slot masks are uniform in ``[0, 2^mask_bits)``."""
        return self.scale_bits + 1 + self.kappa

    @property
    def packed(self) -> PackedLayout:
        return PackedLayout(self.slot_bits, self.slots_per_ct, self.bound)

    @property
    def n_full(self) -> int:
        """Ciphertexts of a template whose every slot is used."""
        return self.dim // self.slots_per_ct

    @property
    def tail(self) -> int:
        """Slots used in the last, partly filled ciphertext (0 if none)."""
        return self.dim % self.slots_per_ct

    @property
    def cts_per_template(self) -> int:
        return self.n_full + (1 if self.tail else 0)

    @property
    def dist_bits(self) -> int:
        """Every ``D = Σ (x_i − y_i)²`` with ``|x_i|, |y_i| ≤ 2^s`` is below ``2^dist_bits``."""
        return (self.dim * (2 * self.bound) ** 2).bit_length()

    def check_key(self, key: PublicKey) -> None:
        self.packed.check_fits(key)

    def check_vector(self, values: Sequence[int]) -> None:
        if len(values) != self.dim:
            raise DimensionError(f"expected {self.dim} coordinates, got {len(values)}")
        if any(not -self.bound <= int(v) <= self.bound for v in values):
            raise PackingOverflowError(f"a coordinate lies outside ±2^{self.scale_bits}")


def encrypt_template(
    values: Sequence[int], layout: TemplateLayout, key: PublicKey, pool: RandomnessPool
) -> PaillierTemplate:
    """Client side of enrolment: packed ``[q(y) + 2^s]`` (the servers compute the norm)."""
    return PaillierTemplate(_pack_encrypt(values, layout, key, pool))


def _pack_encrypt(
    values: Sequence[int], layout: TemplateLayout, key: PublicKey, pool: RandomnessPool
) -> tuple[Ciphertext, ...]:
    layout.check_vector(values)
    layout.check_key(key)
    s = layout.slots_per_ct
    ints = [int(v) for v in values]
    return tuple(
        key.encrypt(layout.packed.pack(ints[i:i + s]), pool) for i in range(0, layout.dim, s)
    )


def encrypt_query(
    values: Sequence[int], layout: TemplateLayout, key: PublicKey, pool: RandomnessPool
) -> PaillierQuery:
    """Client side of a query: packed ``[q(x) + 2^s]`` like a template (the servers compute
    the norm and re-encrypt every coordinate at admission)."""
    return PaillierQuery(_pack_encrypt(values, layout, key, pool))


def check_template(
    template: PaillierTemplate | AdmittedTemplate | PaillierQuery, layout: TemplateLayout,
    key: PublicKey,
) -> None:
    """A's admission check of a template's or query's *shape* (its values are encrypted)."""
    what = "query" if isinstance(template, PaillierQuery) else "template"
    if len(template.packed) != layout.cts_per_template:
        raise DimensionError(
            f"{what} has {len(template.packed)} packed ciphertexts, "
            f"layout wants {layout.cts_per_template}"
        )
    norm = [template.norm] if isinstance(template, AdmittedTemplate) else []
    if any(c.key != key for c in (*template.packed, *norm)):
        raise KeyMismatchError(f"{what} was encrypted under another key")


__all__ = ["TemplateLayout", "check_template", "encrypt_query", "encrypt_template"]
