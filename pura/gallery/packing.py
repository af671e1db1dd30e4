"""Dimension-major CKKS blocks of gallery heads: slot assignment, insert, delete, free-slot reuse.

Layout (architecture "Gallery heads"): block ``b`` is ``m = head_dim`` ciphertexts, one head
per slot, in the *diagonal* layout of :mod:`pura.crypto.ckks`: ciphertext ``(b, r)`` holds, in
slot ``s``, coordinate ``(s + r) mod m`` of that slot's head, so that one periodic query
ciphertext, rotated ``m − 1`` times by A, lines up with every block. A query scores a whole
block with ``m`` ct×ct products, so every slot costs ~6 µs whether it holds a template or not.

PFIP's packing goal: a new template goes into a free slot of the *current* block right away (no
waiting for a full batch). Two ways to write it:

* **A alone** (seeded layouts, :meth:`BlockLayout.insert` / :meth:`BlockLayout.delete`): the head
  ciphertext arrives one level above the blocks, :meth:`CKKSContext.place_head` moves it into
  the slot with public operations only, and the slot's known decoy is subtracted. No B round, no
  masks, ~0.3 s per template; deletion subtracts the identical placement, leaving the block
  bit-for-bit as before the insert.
* **B-assisted refresh** (:mod:`pura.protocols.refresh`): :meth:`BlockLayout.assign` marks the
  slot *pending*; one masked round with B writes all pending heads and erases *clearing* slots,
  then :meth:`HeadBlock.apply_refresh` publishes the new ciphertexts. Works for any block.

Empty slots are never zero: a new block is encrypted with *decoy* heads (drawn like real faces,
see :meth:`pura.crypto.encoding.PCARotation.sample_decoy_heads`) and erased slots get a decoy
again, so B cannot count templates or spot empty slots from the scores it decrypts.

Persistence is the store's job: a block is ``metadata_bytes()`` (small JSON: slot tables,
version) plus ``ciphertexts`` (``m`` serialized CKKS ciphertexts). The slot→template table is
A's secret: it is what turns B's positions into identities.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pura.crypto.ckks import CKKSCiphertext, CKKSContext, diagonal_rows
from pura.errors import (
    AlreadyExistsError,
    ConfigError,
    DimensionError,
    InvalidCiphertextError,
    NotFoundError,
    PuraError,
    StoreError,
)

TemplateId = int
FloatArray = npt.NDArray[np.float64]
#: Returns ``n`` decoy heads, shape ``(n, head_dim)``.
DecoySource = Callable[[int], FloatArray]
#: ``(n, rng) -> (n, head_dim)`` decoy heads, deterministic in ``rng`` (seeded blocks).
DecoyModel = Callable[[int, random.Random], FloatArray]
#: 2: the diagonal layout. 1 was the coordinate-per-ciphertext layout, which today's queries
#: cannot score: such a block is refused by name (:meth:`HeadBlock.from_record`).
_META_VERSION = 2


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
    #: Empty slots hold the layout's *seeded* decoys (A can recompute them): required for the
    #: A-only insert/delete; blocks built from caller-supplied decoys have ``seeded=False``.
    seeded: bool = False
    #: Secret of the current slot layout (hex; "" before the first re-layout). B files its
    #: candidate copies under :func:`copy_tag` of it, so copies re-sent after a re-layout carry
    #: tags B cannot link to the previous epoch's (issue 12).
    layout_salt: str = ""
    #: Re-layouts applied so far (:mod:`pura.protocols.relayout`): the gallery's layout epoch.
    epoch: int = 0

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
        """Lowest slot holding neither a live nor a pending template (freed slots are reused).

        Seeded blocks also skip slots awaiting a B-assisted clear: the A-only insert needs the
        slot to hold its own known decoy.
        """
        taken = self.live.keys() | self.pending.keys()
        if self.seeded:
            taken = taken | self.clearing
        if len(taken) >= self.slot_count:
            return None
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

    def apply_relayout(self, ciphertexts: list[bytes], source: npt.ArrayLike,
                       salt: bytes) -> None:
        """Publish re-laid-out ciphertexts: new slot ``s`` holds what old slot ``source[s]``
        held. The live table moves with them, and a fresh layout salt gives every copy a new
        tag. Only for blocks without pending work (their slots would be stale) and not for
        seeded blocks (A-alone deletion needs each slot's own decoy where it was drawn)."""
        src = np.asarray(source, dtype=np.int64)
        if len(ciphertexts) != self.head_dim or src.shape != (self.slot_count,):
            raise DimensionError("re-layout needs head_dim rows and a permutation of the slots")
        if self.needs_refresh:
            raise StoreError(f"block {self.block_id} has pending writes; refresh it first")
        if self.seeded:
            raise ConfigError("seeded blocks (A-alone insert/delete) cannot be re-laid out")
        where = {int(old): new for new, old in enumerate(src.tolist())}
        self.live = {where[old]: template for old, template in self.live.items()}
        self.ciphertexts = list(ciphertexts)
        self.layout_salt = salt.hex()
        self.epoch += 1
        self.version += 1

    def copy_tag(self, template_hex: str) -> str:
        """The tag B files a template's copy under in this block's current layout epoch."""
        return copy_tag(template_hex, self.layout_salt)

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
                "seeded": self.seeded,
                "live": sorted(self.live.items()),
                "pending": sorted(self.pending.items()),
                "clearing": sorted(self.clearing),
                "salt": self.layout_salt,
                "epoch": self.epoch,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_record(cls, metadata: bytes, ciphertexts: list[bytes]) -> HeadBlock:
        try:
            meta = json.loads(metadata)
            if meta["v"] == 1:
                raise StoreError(
                    f"head block {meta.get('block_id')} is in the CKKS layout of earlier Pura "
                    "builds (one coordinate per ciphertext), which one-ciphertext queries "
                    "cannot score, and A no longer holds the heads to rebuild it: re-enrol this "
                    "collection (delete it, create it, enrol again)")
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
                seeded=bool(meta.get("seeded", False)),
                layout_salt=str(meta.get("salt", "")),
                epoch=int(meta.get("epoch", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"corrupt head block metadata: {exc}") from exc


def copy_tag(template_hex: str, salt: str) -> str:
    """B's tag for a template's copy: the template id itself before any re-layout (stores of
    earlier builds), else ``SHA-256(salt ‖ id)`` truncated to 128 bits. A recomputes it to
    reconcile; B, without the salt, cannot link a copy's tag to its tag of another epoch."""
    if not salt:
        return template_hex
    return hashlib.sha256(bytes.fromhex(salt) + template_hex.encode()).hexdigest()[:32]


def encrypt_block(
    ctx: CKKSContext, block_id: int, heads: npt.ArrayLike
) -> HeadBlock:
    """A new block whose slot ``s`` holds ``heads[s]`` (decoys for a fresh block).

    ``heads`` has shape ``(slot_count, head_dim)``; A can do this alone with the public context.
    """
    arr = np.asarray(heads, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != ctx.slot_count:
        raise DimensionError(f"need ({ctx.slot_count}, head_dim) heads, got {arr.shape}")
    cts = [ctx.ciphertext_to_bytes(ctx.encrypt_vector(row)) for row in diagonal_rows(arr)]
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
        *,
        decoy_model: DecoyModel | None = None,
        decoy_seed: bytes | None = None,
    ) -> None:
        """``decoys``: fresh decoy heads (B-assisted refresh clears, unseeded blocks).

        ``decoy_model`` + ``decoy_seed`` (A's secret, ≥ 16 bytes, persisted by the store) turn on
        *seeded* blocks: slot ``s`` of block ``b`` then always holds decoy
        ``decoy_model(slots, Random(H(seed, b)))[s]`` while empty, which is what lets A insert
        and delete on its own (:meth:`insert`, :meth:`delete`).
        """
        if (decoy_model is None) != (decoy_seed is None):
            raise ConfigError("decoy_model and decoy_seed go together")
        if decoy_seed is not None and len(decoy_seed) < 16:
            raise ConfigError("decoy_seed must be at least 16 bytes")
        self.ctx = ctx
        self.head_dim = head_dim
        self._decoys = decoys
        self._model = decoy_model
        self.decoy_seed = decoy_seed
        self._decoy_cache: dict[int, FloatArray] = {}
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
        if self._model is not None:
            block = encrypt_block(self.ctx, block_id, self.block_decoys(block_id))
            block.seeded = True
        else:
            block = encrypt_block(self.ctx, block_id, self._decoys(self.ctx.slot_count))
        self._add_block(block)
        return block

    def block_decoys(self, block_id: int) -> FloatArray:
        """The seeded decoy heads of ``block_id``, shape ``(slots, head_dim)`` (cached)."""
        if self._model is None or self.decoy_seed is None:
            raise ConfigError("this layout has no decoy seed (seeded blocks disabled)")
        cached = self._decoy_cache.get(block_id)
        if cached is None:
            digest = hashlib.sha256(self.decoy_seed + block_id.to_bytes(8, "big")).digest()
            cached = np.asarray(self._model(self.ctx.slot_count, random.Random(digest)))
            if cached.shape != (self.ctx.slot_count, self.head_dim):
                raise DimensionError(f"decoy model returned {cached.shape}")
            self._decoy_cache[block_id] = cached
        return cached

    # -- A-only insert / delete (seeded blocks) -----------------------------------------------

    def insert(self, template_id: TemplateId, head: bytes) -> tuple[int, int]:
        """Write ``head`` (client's head ciphertext) into a free slot now, without B."""
        return self.insert_many([(template_id, head)])[0]

    def insert_many(self, items: Sequence[tuple[TemplateId, bytes]]) -> list[tuple[int, int]]:
        """A-only enrolment: ``block += place(head, slot) − decoy(slot)`` for every item.

        No B round and no masks: A applies public operations to ciphertexts only, so nobody
        learns anything. Items landing in the same block share one parse/serialise of it.
        Validates every head before touching the layout.
        """
        if self._model is None:
            raise ConfigError("A-only insert needs a seeded layout (decoy_model + decoy_seed)")
        heads = [self.ctx.ciphertext_from_bytes(raw) for _, raw in items]
        if any(h.level != "head" for h in heads):
            raise InvalidCiphertextError("A-only insert needs head ciphertexts (encrypt_head)")
        placed: list[tuple[int, int]] = []
        try:
            for template_id, _ in items:
                placed.append(self.assign(template_id))
                self._seeded(placed[-1][0])
        except PuraError:
            for template_id, _ in items[: len(placed)]:
                self.remove(template_id)
            raise
        by_block: dict[int, list[tuple[int, TemplateId, CKKSCiphertext]]] = {}
        for (block_id, slot), (template_id, _), head in zip(placed, items, heads, strict=True):
            by_block.setdefault(block_id, []).append((slot, template_id, head))
        for block_id, writes in by_block.items():
            block = self._seeded(block_id)
            cts = load_block_ciphertexts(self.ctx, block)
            for slot, _, head in writes:
                cts = self._shift(cts, block_id, slot, head, +1)
            block.ciphertexts = [self.ctx.ciphertext_to_bytes(c) for c in cts]
            for slot, template_id, _ in writes:
                del block.pending[slot]
                block.live[slot] = template_id
            block.version += 1
        return placed

    def delete(self, template_id: TemplateId, head: bytes) -> tuple[int, int]:
        """A-only deletion: subtract the *same* placement and restore the slot's decoy.

        Placement is deterministic, so the block ciphertexts become bit-for-bit what they were
        before the insert (no residue of the template, however small).
        """
        block_id, slot = self.locate(template_id)
        block = self._seeded(block_id)
        if block.live.get(slot) != template_id:
            raise StoreError(f"template {template_id} is not written in block {block_id} yet")
        parsed = self.ctx.ciphertext_from_bytes(head)
        cts = self._shift(load_block_ciphertexts(self.ctx, block), block_id, slot, parsed, -1)
        block.ciphertexts = [self.ctx.ciphertext_to_bytes(c) for c in cts]
        del block.live[slot]
        del self._where[template_id]
        block.version += 1
        return block_id, slot

    def _seeded(self, block_id: int) -> HeadBlock:
        block = self.blocks[block_id]
        if not block.seeded:
            raise StoreError(f"block {block_id} has unseeded decoys: use the B-assisted refresh")
        return block

    def _shift(
        self, cts: list[CKKSCiphertext], block_id: int, slot: int, head: CKKSCiphertext, sign: int
    ) -> list[CKKSCiphertext]:
        # Subtract the slot's decoy from the head first (one plaintext op at the head level):
        # the placement then carries ``y − decoy`` and adding it turns the decoy into ``y``.
        adjusted = self.ctx.add_plain(head, -self.block_decoys(block_id)[slot])
        placed = self.ctx.place_head(adjusted, slot, self.head_dim)
        if sign > 0:
            return [self.ctx.add(ct, part) for ct, part in zip(cts, placed, strict=True)]
        return [self.ctx.sub(ct, part) for ct, part in zip(cts, placed, strict=True)]

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
    "DecoyModel",
    "DecoySource",
    "HeadBlock",
    "TemplateId",
    "copy_tag",
    "encrypt_block",
    "load_block_ciphertexts",
]
