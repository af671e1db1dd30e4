"""Enrolment as one pipeline, with no I/O: admission of uploads and the block refresh with B.

Why here and not in the server: the benchmarks and the audit enrol through the same admission
(server-computed norms, the unit-vector check with B) and the same refresh, so the gallery they
measure is a gallery the server would hold.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager as ContextManager

import numpy as np
import numpy.typing as npt

from pura.crypto.ckks import CKKSContext
from pura.errors import EmbeddingRangeError
from pura.gallery.packing import DecoySource, HeadBlock
from pura.pipeline.channel import HelperChannel
from pura.pipeline.identify import _no_guard
from pura.protocols import derived_heads, refresh, relayout
from pura.protocols.identify import ServerA
from pura.protocols.messages import AdmittedTemplate, PaillierTemplate, SealedTemplate
from pura.protocols.sealed import derive_masks, mask_digest
from pura.protocols.steps import Step


class Enroller:
    """Admits templates with B and writes their CKKS heads into the packed blocks."""

    def __init__(
        self,
        server_a: ServerA,
        ctx: CKKSContext,
        channel: HelperChannel,
        decoys: DecoySource,
        rng: random.Random,
        online: Callable[[], ContextManager[None]] = _no_guard,
    ) -> None:
        self.server_a = server_a
        self.ctx = ctx
        self.channel = channel
        self.decoys = decoys
        self.rng = rng
        self.online = online

    def admit(
        self, uploads: Sequence[PaillierTemplate | SealedTemplate]
    ) -> list[AdmittedTemplate | EmbeddingRangeError]:
        """Server-side norm admission (with B), per item: what to store, or why it is refused.

        Why: the squared norm used in every later distance must be computed by the servers, and
        a template that is not the encoding of a unit vector (a "wolf" crafted to match
        everyone), or one closer to the public population mean than any real face (when the
        server's layout carries the wolf check, as NodeA's does), must be refused at enrolment,
        not stored and silently skipped later.
        """
        if not uploads:
            return []
        with self.online():
            return self.server_a.admit(uploads)

    def refresh(
        self, block: HeadBlock, heads: Mapping[int, bytes],
        unchecked: frozenset[int] = frozenset(),
    ) -> list[int]:
        """Write ``block``'s pending heads (template id → head ciphertext) and erase its cleared
        slots, with B (one round); returns the template ids written. ``unchecked``: heads B
        derived (no range check needed, :mod:`pura.protocols.derived_heads`)."""
        request, state = refresh.prepare_refresh(self.ctx, block, heads, self.decoys, self.rng,
                                                 unchecked)
        reply = refresh.RefreshResponse.from_bytes(self.channel(Step.REFRESH, request.to_bytes()))
        written = [t for _, t in state.writes]
        refresh.finish_refresh(self.ctx, block, state, reply)
        return written

    def derive_heads(
        self, uploads: Sequence[SealedTemplate], head_dim: int
    ) -> list[bytes | None]:
        """CKKS heads of admitted sealed uploads, made by B from their sealed vectors (one
        round; :mod:`pura.protocols.derived_heads`); ``None`` where B made none."""
        if not uploads:
            return []
        key = self.server_a.key
        layout = self.server_a.config.template
        request = derived_heads.DeriveRequest(
            head_dim, tuple(mask_digest(u.masks) for u in uploads), tuple(u.box for u in uploads))
        reply = derived_heads.DeriveResponse.from_bytes(
            self.channel(Step.DERIVE_HEADS, request.to_bytes()))
        offsets = [derive_masks(u.seed, layout, key)[0] for u in uploads]
        return derived_heads.finish_derive(self.ctx, reply, offsets, layout, head_dim)

    def relayout(self, block: HeadBlock, namespace: str = "") -> npt.NDArray[np.int64]:
        """Move ``block``'s heads to a fresh secret permutation of its slots, with B (one
        round, :mod:`pura.protocols.relayout`); returns ``source`` (new slot ``s`` holds what
        old slot ``source[s]`` held). The caller moves its slot table and B's copies along."""
        request, state = relayout.prepare_relayout(self.ctx, block, self.rng, namespace)
        reply = relayout.RelayoutResponse.from_bytes(
            self.channel(Step.RELAYOUT, request.to_bytes()))
        with self.online():
            return relayout.finish_relayout(self.ctx, block, state, reply)


__all__ = ["Enroller"]
