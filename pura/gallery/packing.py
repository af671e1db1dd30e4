"""Dimension-major CKKS blocks of gallery heads: slot assignment, insert, delete, free-slot reuse.

Layout (architecture "Gallery heads"): block ``b`` is ``m = head_dim`` ciphertexts; ciphertext
``(b, i)`` holds coordinate ``i`` of one template per slot. A query scores a whole block with
``m`` ct×ct products, so every slot costs ~3 µs whether it holds a template or not.

PFIP's packing goal: a new template goes into a free slot of the *current* block right away (no
waiting for a full batch). Here that is bookkeeping only — :meth:`BlockLayout.assign` reserves
the slot and marks it *pending*; the B-assisted block refresh (:mod:`pura.protocols.refresh`)
writes the pending heads and erases the *clearing* slots in one round, then
:meth:`HeadBlock.apply_refresh` publishes the new ciphertexts.

Empty slots are never zero: a new block is encrypted with *decoy* heads (drawn like real faces,
see :meth:`pura.crypto.encoding.PCARotation.sample_decoy_heads`) and erased slots get a decoy
again, so B cannot count templates or spot empty slots from the scores it decrypts.

Persistence is the store's job: a block is ``metadata_bytes()`` (small JSON: slot tables,
version) plus ``ciphertexts`` (``m`` serialized CKKS ciphertexts). The slot→template table is
A's secret: it is what turns B's positions into identities.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pura.crypto.ckks import CKKSCiphertext, CKKSContext
from pura.errors import AlreadyExistsError, DimensionError, NotFoundError, StoreError

TemplateId = int
FloatArray = npt.NDArray[np.float64]
#: Returns ``n`` decoy heads, shape ``(n, head_dim)``.
DecoySource = Callable[[int], FloatArray]
_META_VERSION = 1


@dataclass
class HeadBlock:
    """One block: ``head_dim`` ciphertexts (bytes) and the slot tables that give them meaning.

    ``live``: slot → template whose head is in the ciphertexts now. ``pending``: slot → template
    reserved but not yet written (refresh pending). ``clearing``: slots whose current content
    must be erased by the next refresh (deleted templates; a pending write also erases).
    """

    block_id: int
    slot_count: int
    head_dim: int
    ciphertexts: list[bytes]
    live: dict[int, TemplateId] = field(default_factory=dict)
    pending: dict[int, TemplateId] = field(default_factory=dict)
    clearing: set[int] = field(default_factory=set)
    version: int = 0

    def __post_init__(self) -> None:
        if len(self.ciphertexts) != self.head_dim:
            raise DimensionError(
                f"block {self.block_id}: {len(self.ciphertexts)} ciphertexts for head_dim "
                f"{self.head_dim}"
            )

    def __repr__(self) -> str:
        return (
            f"HeadBlock(id={self.block_id}, live={len(self.live)}, pending={len(self.pending)}, "
            f"clearing={len(self.clearing)}, version={self.version})"
        )

    @property
    def needs_refresh(self) -> bool:
        return bool(self.pending or self.clearing)

    def occupied(self) -> int:
        return len(self.live) + len(self.pending)

    def free_slot(self) -> int | None:
        """Lowest slot holding neither a live nor a pending template (freed slots are reused)."""
        if self.occupied() >= self.slot_count:
            return None
        taken = self.live.keys() | self.pending.keys()
        return next(s for s in range(self.slot_count) if s not in taken)

    def template_at(self, slot: int) -> TemplateId | None:
        """The template whose head is *in the ciphertexts* at ``slot`` (None: decoy)."""
        return self.live.get(slot)

    def reserve(self, slot: int, template_id: TemplateId) -> None:
        if slot in self.live or slot in self.pending or not 0 <= slot < self.slot_count:
            raise StoreError(f"slot {slot} of block {self.block_id} is not free")
        self.pending[slot] = template_id

    def release(self, slot: int) -> None:
        """Forget the template at ``slot``; if its head was written, erase it at next refresh."""
        if slot in self.live:
            del self.live[slot]
            self.clearing.add(slot)
        elif slot in self.pending:
            del self.pending[slot]
        else:
            raise NotFoundError(f"slot {slot} of block {self.block_id} holds no template")

    def apply_refresh(
        self, ciphertexts: list[bytes], written: Mapping[int, TemplateId], cleared: Iterable[int]
    ) -> None:
        """Publish refreshed ciphertexts prepared from ``written`` (pending) and ``cleared`` slots.

        A template deleted while its refresh was in flight now sits in the ciphertexts without
        an owner: its slot goes back to ``clearing`` so the next refresh erases it. A template
        enrolled meanwhile simply stays pending.
        """
        if len(ciphertexts) != self.head_dim:
            raise DimensionError(f"refresh returned {len(ciphertexts)} ciphertexts")
        for slot in cleared:
            self.clearing.discard(slot)
        for slot, template in written.items():
            if self.pending.get(slot) == template:
                del self.pending[slot]
                self.live[slot] = template
                self.clearing.discard(slot)
            else:
                self.clearing.add(slot)
        self.ciphertexts = list(ciphertexts)
        self.version += 1

    # -- persistence -------------------------------------------------------------------------

    def metadata_bytes(self) -> bytes:
        """Small JSON with everything but the ciphertexts (the store saves both atomically)."""
        return json.dumps(
            {
                "v": _META_VERSION,
                "block_id": self.block_id,
                "slot_count": self.slot_count,
                "head_dim": self.head_dim,
                "version": self.version,
                "live": sorted(self.live.items()),
                "pending": sorted(self.pending.items()),
                "clearing": sorted(self.clearing),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_record(cls, metadata: bytes, ciphertexts: list[bytes]) -> HeadBlock:
        try:
            meta = json.loads(metadata)
            if meta["v"] != _META_VERSION:
                raise StoreError(f"head block metadata version {meta['v']} unsupported")
            return cls(
                block_id=int(meta["block_id"]),
                slot_count=int(meta["slot_count"]),
                head_dim=int(meta["head_dim"]),
                ciphertexts=list(ciphertexts),
                live={int(s): int(t) for s, t in meta["live"]},
                pending={int(s): int(t) for s, t in meta["pending"]},
                clearing={int(s) for s in meta["clearing"]},
                version=int(meta["version"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"corrupt head block metadata: {exc}") from exc


def encrypt_block(
    ctx: CKKSContext, block_id: int, heads: npt.ArrayLike
) -> HeadBlock:
    """A new block whose slot ``s`` holds ``heads[s]`` (decoys for a fresh block).

    ``heads`` has shape ``(slot_count, head_dim)``; A can do this alone with the public context.
    """
    arr = np.asarray(heads, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != ctx.slot_count:
        raise DimensionError(f"need ({ctx.slot_count}, head_dim) heads, got {arr.shape}")
    cts = [ctx.ciphertext_to_bytes(ctx.encrypt_vector(arr[:, i])) for i in range(arr.shape[1])]
    return HeadBlock(block_id, ctx.slot_count, arr.shape[1], cts)


def load_block_ciphertexts(ctx: CKKSContext, block: HeadBlock) -> list[CKKSCiphertext]:
    """Parse and validate the block's ciphertexts (wrong key / parameters raise by name)."""
    return [ctx.ciphertext_from_bytes(b) for b in block.ciphertexts]


class BlockLayout:
    """All head blocks of one collection, plus the template → (block, slot) index."""

    def __init__(
        self,
        ctx: CKKSContext,
        head_dim: int,
        decoys: DecoySource,
        blocks: Iterable[HeadBlock] = (),
    ) -> None:
        self.ctx = ctx
        self.head_dim = head_dim
        self._decoys = decoys
        self.blocks: dict[int, HeadBlock] = {}
        self._where: dict[TemplateId, tuple[int, int]] = {}
        for block in blocks:
            self._add_block(block)

    def __repr__(self) -> str:
        return f"BlockLayout(blocks={len(self.blocks)}, templates={len(self._where)})"

    def _add_block(self, block: HeadBlock) -> None:
        if block.head_dim != self.head_dim or block.slot_count != self.ctx.slot_count:
            raise DimensionError(f"block {block.block_id} has another shape than the layout")
        self.blocks[block.block_id] = block
        for table in (block.live, block.pending):
            for slot, template in table.items():
                self._where[template] = (block.block_id, slot)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, template_id: object) -> bool:
        return template_id in self._where

    def locate(self, template_id: TemplateId) -> tuple[int, int]:
        try:
            return self._where[template_id]
        except KeyError:
            raise NotFoundError(f"template {template_id} is not in the gallery") from None

    def assign(self, template_id: TemplateId) -> tuple[int, int]:
        """Reserve a slot in the current (lowest non-full) block; a new block when all are full."""
        if template_id in self._where:
            raise AlreadyExistsError(f"template {template_id} already has a slot")
        for block in sorted(self.blocks.values(), key=lambda b: b.block_id):
            slot = block.free_slot()
            if slot is not None:
                block.reserve(slot, template_id)
                self._where[template_id] = (block.block_id, slot)
                return block.block_id, slot
        block = self.new_block()
        block.reserve(0, template_id)
        self._where[template_id] = (block.block_id, 0)
        return block.block_id, 0

    def new_block(self) -> HeadBlock:
        """Append a block filled with decoys (A alone, public-key encryption)."""
        block_id = max(self.blocks, default=-1) + 1
        block = encrypt_block(self.ctx, block_id, self._decoys(self.ctx.slot_count))
        self._add_block(block)
        return block

    def remove(self, template_id: TemplateId) -> tuple[int, int]:
        """Free the template's slot; its head is erased by the block's next refresh."""
        block_id, slot = self.locate(template_id)
        self.blocks[block_id].release(slot)
        del self._where[template_id]
        return block_id, slot

    def template_at(self, block_id: int, slot: int) -> TemplateId | None:
        block = self.blocks.get(block_id)
        return None if block is None else block.template_at(slot)

    def searchable_blocks(self) -> list[HeadBlock]:
        """Blocks with at least one live template, by id (empty blocks are not scored)."""
        return [b for _, b in sorted(self.blocks.items()) if b.live]

    def dirty_blocks(self) -> list[HeadBlock]:
        return [b for _, b in sorted(self.blocks.items()) if b.needs_refresh]


__all__ = [
    "BlockLayout",
    "DecoySource",
    "HeadBlock",
    "TemplateId",
    "encrypt_block",
    "load_block_ciphertexts",
]
