"""One collection's packed head blocks in memory, and the preselection server over them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from pura.gallery.packing import BlockLayout, HeadBlock
from pura.protocols.preselect import PreselectServer


@dataclass
class GalleryIndex:
    """In-memory head blocks of one collection (derived from A's store), the preselection server
    over them (it caches parsed block ciphertexts per block version, and may hand the products to
    a scorer that keeps its own copy of the blocks) and the lock that serialises enrolment,
    deletion, refresh and scoring of this collection."""

    layout: BlockLayout
    preselect: PreselectServer
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def blocks(self) -> dict[int, HeadBlock]:
        return self.layout.blocks

    def live(self) -> list[tuple[int, int]]:
        """``(block, slot)`` of every placed template, sorted."""
        with self.lock:
            return sorted((b.block_id, s) for b in self.blocks.values() for s in b.live)

    def live_ids(self) -> list[int]:
        with self.lock:
            return [t for b in self.blocks.values() for t in b.live.values()]

    def sync_scorer(self) -> None:
        """Make the scorer's copy (process pool or Ray shards) equal the searchable blocks.

        Called under :attr:`lock` after every change of the blocks (load, reconcile, refresh),
        so shipping happens off the query path, a sharded preselection scores exactly the
        blocks A holds, and a block emptied by a deletion leaves the workers."""
        with self.lock:
            self.preselect.sync_pool()


__all__ = ["GalleryIndex"]
