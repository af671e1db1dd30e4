"""Per-epoch secret re-layout of a CKKS block: B can no longer align views across epochs.

Why (issue 12): to serve its candidate copies B must map its ranking to block slots, so every
preselection request names the blocks and rotations, and B can line up the score views of all
queries of a gallery version slot by slot. Stacked, those views are a queries × slots matrix of
rank ``head_dim`` whose row space is the gallery's head subspace (``b_subspace_cosine``), and
repeated probes of a person hit the same slots (``b_slot_alignment``). A fresh *secret*
permutation of every block's slots after each gallery change makes views of different epochs
unalignable: slot ``s`` of one epoch and slot ``s`` of the next hold unrelated templates.

One round, A and B, per block (B never sees a gallery value, A never sees a plaintext):

1. **A** (:func:`prepare_relayout`) adds fresh uniform masks ``R_r`` (``|R| ≤ 2^36``,
   :data:`RELAYOUT_MASK_BITS`, every slot, OS CSPRNG) to the ``m`` work-level rows and sends
   them. No slot numbers.
2. **B** (:func:`answer_relayout`) decrypts each row, checks the range (a row whose values lie
   outside the masked range is not a masked block row) and returns a fresh *head-level*
   (top-level) encryption of it: B lifts the rows one level up.
3. **A** (:func:`finish_relayout`) removes ``R_r`` and applies its secret permutation with
   :meth:`~pura.crypto.ckks.CKKSContext.permute_residues`, which spends the level B gave back:
   the new rows are at the work level again, with ``new[s] = old[source[s]]``.

The permutation keeps every slot's residue modulo ``m`` (:func:`draw_source`), which is what the
diagonal layout allows without moving values between rows; within each of the ``m`` residue
classes the ``slots/m`` heads are shuffled uniformly. What B learns: masked values within
statistical distance 2^-37 of uniform per value (:data:`RELAYOUT_MASK_BITS`), the block's size
and that a re-layout happened (an epoch boundary). Not the permutation: the rows it returns are
permuted by A afterwards. What A learns: ciphertexts only. Precision: B decodes values near
2^36 in double precision, so every re-layout adds a rounding of ~1·10^-5 rms to every
coordinate (measured in the tests); the errors of successive epochs add up as a random walk,
~10^-3 after 10^4 epochs, the size of B's flooding noise (docs/security.md).

Rejected: permuting by B (B would know the permutation); re-placing every head (A keeps no heads
once placed); a per-query permutation (the same ~8–11 s of A's CPU per block on every query
instead of once per gallery change; figures in docs/security.md).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pura.crypto.ckks import CKKSContext, check_head_dim, uniform_reals
from pura.errors import ProtocolError
from pura.gallery.packing import HeadBlock

from . import _wire

FloatArray = npt.NDArray[np.float64]
#: Mask width of the re-layout (bits). Narrower than the refresh's 40 on purpose: every slot of
#: every block passes through B's double-precision decoding once per *epoch*, so the rounding
#: at 2^bits (ulp 2^(bits−52)) accumulates over epochs as a random walk. At 40 bits it is
#: 1.7·10^-4 rms per coordinate per epoch (measured), 1.7·10^-2 after 10^4 epochs, which
#: would wreck preselection in a long-lived deployment; at 36 bits it is 16× smaller, and each
#: value B sees stays within statistical distance 2^-37 of uniform (docs/security.md).
RELAYOUT_MASK_BITS = 36
IntArray = npt.NDArray[np.int64]
#: What B accepts for a masked row value ``v + R`` (``|v| ≤ 1``), with a margin for CKKS noise.
_ROW_BOUND = 2.0**RELAYOUT_MASK_BITS + 2.0
_REQ_MAGIC = b"PURA-RLQ"
_RESP_MAGIC = b"PURA-RLP"
_ID_BYTES = 16


@dataclass(frozen=True)
class RelayoutRequest:
    """A → B: the ``m`` masked rows of one block (no slot numbers). ``namespace`` and
    ``block`` name the gallery block, as every preselection request already does, so that B
    can count queries per layout epoch (:class:`~pura.protocols.helper_guard.Quotas`)."""

    request_id: bytes
    key_id: bytes
    rows: tuple[bytes, ...]
    namespace: str = ""
    block: int = -1

    def __repr__(self) -> str:
        return f"RelayoutRequest(id={self.request_id.hex()[:8]}, m={len(self.rows)})"

    def to_bytes(self) -> bytes:
        header = {"id": self.request_id.hex(), "key": self.key_id.hex(), "m": len(self.rows),
                  "ns": self.namespace, "block": self.block}
        return _wire.pack(_REQ_MAGIC, header, list(self.rows))

    @classmethod
    def from_bytes(cls, data: bytes) -> RelayoutRequest:
        header, blobs = _wire.unpack(_REQ_MAGIC, data)
        if _wire.field(header, "m", int) != len(blobs) or not blobs:
            raise ProtocolError(f"relayout request: {len(blobs)} rows, header says otherwise")
        return cls(_wire.hex_field(header, "id"), _wire.hex_field(header, "key"), tuple(blobs),
                   _wire.field(header, "ns", str), _wire.field(header, "block", int))


@dataclass(frozen=True)
class RelayoutResponse:
    """B → A: ``m`` fresh head-level encryptions of the masked rows."""

    request_id: bytes
    rows: tuple[bytes, ...]

    def __repr__(self) -> str:
        return f"RelayoutResponse(id={self.request_id.hex()[:8]}, m={len(self.rows)})"

    def to_bytes(self) -> bytes:
        return _wire.pack(_RESP_MAGIC, {"id": self.request_id.hex()}, list(self.rows))

    @classmethod
    def from_bytes(cls, data: bytes) -> RelayoutResponse:
        header, blobs = _wire.unpack(_RESP_MAGIC, data)
        return cls(_wire.hex_field(header, "id"), tuple(blobs))


@dataclass(frozen=True)
class RelayoutState:
    """A's secret side of one re-layout: the masks and the permutation. Never sent."""

    request_id: bytes
    block_id: int
    block_version: int
    masks: FloatArray  # (m, slots)
    source: IntArray  # new slot s holds what old slot source[s] held
    salt: bytes  # the new layout's secret salt (B's copy tags), from the same rng

    def __repr__(self) -> str:
        return f"RelayoutState(id={self.request_id.hex()[:8]}, block={self.block_id})"


def draw_source(slots: int, head_dim: int, rng: random.Random) -> IntArray:
    """A secret permutation of ``slots`` keeping residues mod ``head_dim``: within every
    residue class a uniform shuffle (Fisher–Yates with ``rng``; the OS CSPRNG in production).
    ``source[s]`` is the old slot whose content lands in slot ``s``."""
    check_head_dim(head_dim, slots)
    source = np.arange(slots, dtype=np.int64)
    for residue in range(head_dim):
        members = list(range(residue, slots, head_dim))
        shuffled = members[:]
        rng.shuffle(shuffled)
        source[members] = shuffled
    return source


def prepare_relayout(
    ctx: CKKSContext, block: HeadBlock, rng: random.Random | None = None, namespace: str = ""
) -> tuple[RelayoutRequest, RelayoutState]:
    """A: draw the block's next permutation and mask its rows. The block must have no
    pending writes or clears (refresh it first): those are addressed by slot."""
    if block.needs_refresh:
        raise ProtocolError(f"block {block.block_id} has pending writes; refresh it first")
    rng = rng if rng is not None else random.SystemRandom()
    m, slots = block.head_dim, block.slot_count
    masks = np.stack([uniform_reals(rng, slots, RELAYOUT_MASK_BITS) for _ in range(m)])
    rows = tuple(
        ctx.ciphertext_to_bytes(ctx.add_plain(ctx.ciphertext_from_bytes(raw), masks[r]))
        for r, raw in enumerate(block.ciphertexts)
    )
    request_id = rng.randbytes(_ID_BYTES)
    state = RelayoutState(request_id, block.block_id, block.version, masks,
                          draw_source(slots, m, rng), rng.randbytes(16))
    return RelayoutRequest(request_id, ctx.key_id, rows, namespace, block.block_id), state


def answer_relayout(ctx: CKKSContext, req: RelayoutRequest, max_rows: int) -> RelayoutResponse:
    """B: decrypt, range-check and re-encrypt every row one level up (head level).

    ``max_rows``: B's own bound on a block's rows (its parameter set's ``head_dim``), so a
    request cannot make B re-encrypt arbitrary numbers of ciphertexts."""
    if req.key_id != ctx.key_id:
        raise ProtocolError("relayout request is for another CKKS key")
    if not 1 <= len(req.rows) <= max_rows:
        raise ProtocolError(f"relayout request: {len(req.rows)} rows, B allows 1..{max_rows}")
    lifted = []
    for raw in req.rows:
        values = ctx.decrypt(ctx.ciphertext_from_bytes(raw))
        if not np.all(np.abs(values) <= _ROW_BOUND):
            raise ProtocolError("relayout request: a row lies outside the masked range")
        lifted.append(ctx.encrypt_head_level_bytes(values))
    return RelayoutResponse(req.request_id, tuple(lifted))


def finish_relayout(
    ctx: CKKSContext, block: HeadBlock, state: RelayoutState, resp: RelayoutResponse
) -> IntArray:
    """A: unmask, permute, publish into ``block``; returns the permutation applied."""
    if resp.request_id != state.request_id or len(resp.rows) != block.head_dim:
        raise ProtocolError("relayout response does not answer this request")
    if block.block_id != state.block_id or block.version != state.block_version:
        raise ProtocolError(f"block {block.block_id} changed during its re-layout")
    unmasked = [ctx.add_plain(ctx.head_from_bytes(raw), -state.masks[r])
                for r, raw in enumerate(resp.rows)]
    rows = ctx.permute_residues(unmasked, state.source, block.head_dim)
    block.apply_relayout([ctx.ciphertext_to_bytes(r) for r in rows], state.source, state.salt)
    return state.source


def relayout_block(
    ctx_a: CKKSContext, ctx_b: CKKSContext, block: HeadBlock, rng: random.Random | None = None
) -> IntArray:
    """Both parties in one process (tests, in-process pipelines), through the byte encodings."""
    request, state = prepare_relayout(ctx_a, block, rng)
    response = answer_relayout(ctx_b, RelayoutRequest.from_bytes(request.to_bytes()),
                               block.head_dim)
    return finish_relayout(ctx_a, block, state, RelayoutResponse.from_bytes(response.to_bytes()))


__all__ = [
    "RELAYOUT_MASK_BITS",
    "RelayoutRequest",
    "RelayoutResponse",
    "RelayoutState",
    "answer_relayout",
    "draw_source",
    "finish_relayout",
    "prepare_relayout",
    "relayout_block",
]
