"""B-assisted block refresh: write pending heads into their slots and erase deleted ones.

A cannot move a value from slot ``i`` of a client's head ciphertext into slot ``s`` of block
ciphertext ``i`` without rotations and masking multiplications that would burn the level the
scoring needs. B (secret key holder) can, if it never sees a real value. One round:

1. **A** (:func:`prepare_refresh`) adds fresh uniform masks ``R_i`` (``|R| ≤ 2^40``, every slot)
   to the ``m`` block ciphertexts and independent masks ``R'_j`` to each pending head
   ciphertext, and sends them with the (head → slot) writes and the slots to clear.
2. **B** (:func:`answer_refresh`) decrypts, and for every touched slot computes the *delta*
   ``Δ_i[s] = (y_j[i] + R'_j[i]) − (old_i[s] + R_i[s])`` (write) or ``−(old_i[s] + R_i[s])``
   (clear); ``Δ`` is 0 elsewhere. It returns ``m`` fresh encryptions of ``Δ``.
3. **A** (:func:`finish_refresh`) sets ``new_i = old_i + Enc(Δ_i) + C_i`` with the plaintext
   correction ``C_i[s] = R_i[s] − R'_j[i]`` (write) or ``R_i[s] + decoy_i[s]`` (clear).
   Then ``new_i[s] = y_j[i]`` at written slots, a fresh decoy at cleared ones, ``old`` elsewhere.

   (Written with row ``i`` holding coordinate ``i`` for readability; in the diagonal layout of
   :mod:`pura.crypto.ckks` row ``r`` at slot ``s`` holds coordinate ``(s + r) mod m``, so both
   sides index the head through :func:`~pura.crypto.ckks.slot_column`.)

Why a delta and not a full re-encryption: B's decoding of values near 2^40 rounds at ~2^-13;
with a delta only the touched slots see that rounding, once, and untouched templates keep their
precision across any number of refreshes (only the sparse plaintext corrections add ~1e-6).

Every written head a client uploaded is range-checked in the same round
(:mod:`pura.protocols.head_admission`): A sends its blinded comparisons, B returns their sign
bits with the deltas, and A applies the refresh only if every head passed
(:class:`~pura.errors.EmbeddingRangeError` otherwise; the server then isolates and drops the
failing heads). So no client head is ever placed, hence searchable, unless it is within a unit
vector's range. Heads B derived from sealed uploads (:mod:`pura.protocols.derived_heads`) are
the first coordinates of a norm-checked template and carry no check: the request names the
checked ones. The check protects A's gallery from clients; A vouching for a head it derived
with B gives a deviating A nothing it could not do to its own gallery anyway.

What B learns: every value it decrypts is ``v + R`` with ``R`` uniform on ``[−2^40, 2^40]`` and
``|v| ≤ 1`` (statistical distance ≤ 2^-40 from uniform), plus the slot numbers touched (which
mean nothing without A's slot → subject table). What A learns: only ciphertexts. The decrypted
CKKS values never leave B (Li–Micciancio: CKKS key recovery needs decryptions).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pura.crypto.ckks import REFRESH_MASK_BITS, CKKSContext, slot_column, uniform_reals
from pura.errors import DimensionError, EmbeddingRangeError, NotFoundError, ProtocolError
from pura.gallery.packing import DecoySource, HeadBlock, TemplateId
from pura.protocols.head_admission import (
    CHECKS_PER_HEAD,
    HeadCheckState,
    answer_head_checks,
    finish_head_checks,
    prepare_head_checks,
)

from . import _wire

FloatArray = npt.NDArray[np.float64]
#: What B accepts for a masked head value ``y + R`` (``|y| ≤ 1`` for a unit vector's PCA head,
#: ``|R| ≤ 2^REFRESH_MASK_BITS``), with a margin for CKKS noise. A coarse range check only: it
#: refuses the heads near 2^80 that made every later refresh fail (issue 13, item 1) before
#: anything is re-encrypted; the precise bound is :mod:`pura.protocols.head_admission`'s.
HEAD_BOUND = 2.0**REFRESH_MASK_BITS + 2.0
_REQ_MAGIC = b"PURA-RFQ"
_RESP_MAGIC = b"PURA-RFP"
_ID_BYTES = 16


@dataclass(frozen=True)
class RefreshRequest:
    """A → B: masked block ciphertexts, masked head ciphertexts, writes and clears."""

    request_id: bytes
    key_id: bytes
    block: tuple[bytes, ...]
    heads: tuple[bytes, ...]
    write_slots: tuple[int, ...]  # write_slots[j] receives heads[j]
    clear_slots: tuple[int, ...]
    #: CHECKS_PER_HEAD blinded range comparisons per *checked* written head, in write order.
    checks: tuple[bytes, ...] = ()
    #: Indices (into ``write_slots``) of the heads that carry checks; ``None``: every head.
    #: Heads B derived from sealed uploads (:mod:`pura.protocols.derived_heads`) carry none.
    checked: tuple[int, ...] | None = None

    @property
    def checked_writes(self) -> tuple[int, ...]:
        return tuple(range(len(self.write_slots))) if self.checked is None else self.checked

    def __repr__(self) -> str:
        return (
            f"RefreshRequest(id={self.request_id.hex()[:8]}, m={len(self.block)}, "
            f"writes={len(self.write_slots)}, clears={len(self.clear_slots)})"
        )

    def to_bytes(self) -> bytes:
        header = {
            "id": self.request_id.hex(),
            "key": self.key_id.hex(),
            "m": len(self.block),
            "writes": list(self.write_slots),
            "clears": list(self.clear_slots),
        }
        if self.checked is not None:
            header["checked"] = list(self.checked)
        return _wire.pack(_REQ_MAGIC, header, [*self.block, *self.heads, *self.checks])

    @classmethod
    def from_bytes(cls, data: bytes) -> RefreshRequest:
        header, blobs = _wire.unpack(_REQ_MAGIC, data)
        m = _wire.field(header, "m", int)
        writes = _wire.int_list(header, "writes")
        clears = _wire.int_list(header, "clears")
        n = len(writes)
        checked = tuple(_wire.int_list(header, "checked")) if "checked" in header else None
        n_checked = n if checked is None else len(checked)
        if m < 1 or len(blobs) != m + n + n_checked * CHECKS_PER_HEAD:
            raise ProtocolError(
                f"refresh request: {len(blobs)} blobs for m={m}, {n} heads and their checks"
            )
        return cls(
            request_id=_wire.hex_field(header, "id"),
            key_id=_wire.hex_field(header, "key"),
            block=tuple(blobs[:m]),
            heads=tuple(blobs[m:m + n]),
            write_slots=tuple(writes),
            clear_slots=tuple(clears),
            checks=tuple(blobs[m + n:]),
            checked=checked,
        )


@dataclass(frozen=True)
class RefreshResponse:
    """B → A: ``m`` fresh encryptions of the deltas."""

    request_id: bytes
    deltas: tuple[bytes, ...]
    #: Sign bits of every head's range comparisons, in request order.
    bits: tuple[int, ...] = ()

    def __repr__(self) -> str:
        return f"RefreshResponse(id={self.request_id.hex()[:8]}, m={len(self.deltas)})"

    def to_bytes(self) -> bytes:
        header = {"id": self.request_id.hex(), "bits": list(self.bits)}
        return _wire.pack(_RESP_MAGIC, header, list(self.deltas))

    @classmethod
    def from_bytes(cls, data: bytes) -> RefreshResponse:
        header, blobs = _wire.unpack(_RESP_MAGIC, data)
        bits = _wire.int_list(header, "bits")
        if any(b not in (0, 1) for b in bits):
            raise ProtocolError("refresh response: head check bits must be 0 or 1")
        return cls(request_id=_wire.hex_field(header, "id"), deltas=tuple(blobs), bits=tuple(bits))


@dataclass(frozen=True)
class RefreshState:
    """A's secret side of one refresh (masks, decoys). Never serialised, never sent."""

    request_id: bytes
    block_id: int
    block_version: int
    writes: tuple[tuple[int, TemplateId], ...]
    clears: tuple[int, ...]
    block_masks: FloatArray  # (m, slots)
    head_masks: FloatArray  # (n_writes, slots)
    decoys: FloatArray  # (n_clears, m)
    head_checks: tuple[HeadCheckState, ...] = ()  # one per checked write
    checked: tuple[int, ...] = ()  # indices into writes of the checked heads

    def __repr__(self) -> str:
        return f"RefreshState(id={self.request_id.hex()[:8]}, block={self.block_id})"


def prepare_refresh(
    ctx: CKKSContext,
    block: HeadBlock,
    heads: Mapping[TemplateId, bytes],
    decoys: DecoySource,
    rng: random.Random | None = None,
    unchecked: frozenset[TemplateId] = frozenset(),
) -> tuple[RefreshRequest, RefreshState]:
    """A: mask the block and the pending heads of ``block`` (``heads``: template id → head ct).

    ``rng`` defaults to ``random.SystemRandom()`` (OS CSPRNG); tests inject a seeded one.
    ``unchecked``: templates whose heads B derived from their admitted vectors
    (:mod:`pura.protocols.derived_heads`) and which therefore need no range check; every other
    head is checked.
    """
    rng = rng if rng is not None else random.SystemRandom()
    writes = tuple(sorted(block.pending.items()))
    clears = tuple(sorted(s for s in block.clearing if s not in block.pending))
    missing = [t for _, t in writes if t not in heads]
    if missing:
        raise NotFoundError(f"no head ciphertext for pending templates {missing[:5]}")
    m, slots = block.head_dim, block.slot_count
    block_masks = np.stack([uniform_reals(rng, slots, REFRESH_MASK_BITS) for _ in range(m)])
    head_masks = np.stack(
        [uniform_reals(rng, slots, REFRESH_MASK_BITS) for _ in writes]
    ) if writes else np.zeros((0, slots))
    masked_block = [
        ctx.ciphertext_to_bytes(ctx.add_plain(ctx.ciphertext_from_bytes(raw), block_masks[i]))
        for i, raw in enumerate(block.ciphertexts)
    ]
    masked_heads = [
        ctx.ciphertext_to_bytes(ctx.add_plain(ctx.ciphertext_from_bytes(heads[t]), head_masks[j]))
        for j, (_, t) in enumerate(writes)
    ]
    checks: list[bytes] = []
    head_states: list[HeadCheckState] = []
    checked = tuple(j for j, (_, t) in enumerate(writes) if t not in unchecked)
    for j in checked:
        cts, check_state = prepare_head_checks(ctx, ctx.head_from_bytes(heads[writes[j][1]]), m,
                                               rng)
        checks += cts
        head_states.append(check_state)
    request_id = rng.randbytes(_ID_BYTES)
    request = RefreshRequest(
        request_id, ctx.key_id, tuple(masked_block), tuple(masked_heads),
        tuple(s for s, _ in writes), clears, tuple(checks),
        None if len(checked) == len(writes) else checked,
    )
    decoy_heads = decoys(len(clears)) if clears else np.zeros((0, m))
    if decoy_heads.shape != (len(clears), m):
        raise DimensionError(f"decoy source returned {decoy_heads.shape}, need {(len(clears), m)}")
    state = RefreshState(
        request_id, block.block_id, block.version, writes, clears,
        block_masks, head_masks, np.asarray(decoy_heads, dtype=np.float64), tuple(head_states),
        checked,
    )
    return request, state


def _validate(ctx: CKKSContext, req: RefreshRequest) -> None:
    slots = ctx.slot_count
    touched = [*req.write_slots, *req.clear_slots]
    if len(set(touched)) != len(touched) or not all(0 <= s < slots for s in touched):
        raise ProtocolError("refresh request: slots out of range or touched twice")
    if len(req.heads) != len(req.write_slots) or not 1 <= len(req.block) <= slots:
        raise ProtocolError("refresh request: inconsistent number of ciphertexts")
    if req.key_id != ctx.key_id:
        raise ProtocolError("refresh request is for another CKKS key")
    checked = req.checked_writes
    if len(set(checked)) != len(checked) or not all(0 <= j < len(req.heads) for j in checked):
        raise ProtocolError("refresh request: checked heads out of range or repeated")
    if len(req.checks) != CHECKS_PER_HEAD * len(checked):
        raise ProtocolError("refresh request: every checked head needs its range checks")


def answer_refresh(ctx: CKKSContext, req: RefreshRequest) -> RefreshResponse:
    """B: decrypt the masked values, compute the per-slot deltas, re-encrypt them."""
    _validate(ctx, req)
    values = np.stack([ctx.decrypt(ctx.ciphertext_from_bytes(raw)) for raw in req.block])
    m = values.shape[0]
    heads = [ctx.decrypt(ctx.ciphertext_from_bytes(raw))[:m] for raw in req.heads]
    if any(not np.all(np.abs(h) <= HEAD_BOUND) for h in heads):
        raise ProtocolError("a head lies outside the masked range of a unit vector's head")
    delta = np.zeros_like(values)
    for head, slot in zip(heads, req.write_slots, strict=True):
        delta[:, slot] = slot_column(head, slot) - values[:, slot]  # diagonal layout
    for slot in req.clear_slots:
        delta[:, slot] = -values[:, slot]
    deltas = tuple(ctx.encrypt_vector_bytes(row) for row in delta)
    bits: list[int] = []
    for j in range(len(req.checked_writes)):
        bits += answer_head_checks(ctx, req.checks[CHECKS_PER_HEAD * j:CHECKS_PER_HEAD * (j + 1)],
                                   m)
    return RefreshResponse(req.request_id, deltas, tuple(bits))


def finish_refresh(
    ctx: CKKSContext, block: HeadBlock, state: RefreshState, resp: RefreshResponse
) -> None:
    """A: ``new = old + Enc(Δ) + C`` per ciphertext, then publish into ``block``.

    Raises :class:`ProtocolError` if the response is for another request or the block changed
    since :func:`prepare_refresh` (two refreshes of one block must not interleave).
    """
    if resp.request_id != state.request_id or len(resp.deltas) != block.head_dim:
        raise ProtocolError("refresh response does not answer this request")
    if block.block_id != state.block_id or block.version != state.block_version:
        raise ProtocolError(f"block {block.block_id} changed during its refresh")
    _check_heads(state, resp)
    correction = np.zeros_like(state.block_masks)
    for j, (slot, _) in enumerate(state.writes):
        correction[:, slot] = (state.block_masks[:, slot]
                               - slot_column(state.head_masks[j, : block.head_dim], slot))
    for c, slot in enumerate(state.clears):
        correction[:, slot] = state.block_masks[:, slot] + slot_column(state.decoys[c], slot)
    new_cts = []
    for i, raw in enumerate(block.ciphertexts):
        summed = ctx.add(ctx.ciphertext_from_bytes(raw), ctx.ciphertext_from_bytes(resp.deltas[i]))
        new_cts.append(ctx.ciphertext_to_bytes(ctx.add_plain(summed, correction[i])))
    block.apply_refresh(new_cts, dict(state.writes), state.clears)


def _check_heads(state: RefreshState, resp: RefreshResponse) -> None:
    """Refuse the whole refresh if any written head failed its range check (the caller
    isolates the failing heads and refreshes without them)."""
    sizes = [len(c.flips) for c in state.head_checks]
    if len(resp.bits) != sum(sizes) or len(state.head_checks) != len(state.checked):
        raise ProtocolError("refresh response does not carry every head check")
    bad, pos = [], 0
    written = [state.writes[j] for j in state.checked]
    for (_, template), check, size in zip(written, state.head_checks, sizes, strict=True):
        if not finish_head_checks(check, resp.bits[pos:pos + size]):
            bad.append(template)
        pos += size
    if bad:
        raise EmbeddingRangeError(f"{len(bad)} head(s) outside a unit vector's range; "
                                  "the refresh was not applied")


def refresh_block(
    ctx_a: CKKSContext,
    ctx_b: CKKSContext,
    block: HeadBlock,
    heads: Mapping[TemplateId, bytes],
    decoys: DecoySource,
    rng: random.Random | None = None,
) -> int:
    """Both parties in one process (tests, single-host demo), through the byte encodings.

    Returns the bytes exchanged (request + response).
    """
    request, state = prepare_refresh(ctx_a, block, heads, decoys, rng)
    wire_req = request.to_bytes()
    response = answer_refresh(ctx_b, RefreshRequest.from_bytes(wire_req))
    wire_resp = response.to_bytes()
    finish_refresh(ctx_a, block, state, RefreshResponse.from_bytes(wire_resp))
    return len(wire_req) + len(wire_resp)


__all__ = [
    "RefreshRequest",
    "RefreshResponse",
    "RefreshState",
    "answer_refresh",
    "finish_refresh",
    "prepare_refresh",
    "refresh_block",
]
