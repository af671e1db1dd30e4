"""Server B's side of the pipeline: the table of helper steps B answers.

One table for the server (:class:`pura.service.nodes.NodeB`), the benchmarks and the audit, so
that every caller exercises the same B.
"""

from __future__ import annotations

import random
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from pura.crypto.ckks import CKKSContext
from pura.errors import ProtocolError
from pura.gallery.copies import Copy, Position
from pura.pipeline.channel import HelperCall
from pura.pipeline.config import SearchConfig
from pura.protocols import candidates as cand
from pura.protocols import derived_heads, refresh, relayout
from pura.protocols.identify import ServerB
from pura.protocols.preselect import PreselectRequest
from pura.protocols.sealed import SealedLayout
from pura.protocols.steps import Step

StepHandler = Callable[[bytes], bytes]


class CopySource(Protocol):
    """B's copies by namespace (:class:`~pura.gallery.copies.CopyStore` in the server; the
    bench materialises them on first use)."""

    def copies(self, namespace: str) -> Mapping[Position, Copy]: ...

    def put(self, namespace: str, copies: Sequence[Copy]) -> int: ...

    def erase(self, namespace: str, positions: Sequence[Position]) -> int: ...

    def sync(
        self, namespace: str, entries: Sequence[tuple[Position, str]]
    ) -> tuple[list[Position], int]: ...

#: Queries whose label B may still open (one opening each). A query that never matched is
#: forgotten after this many newer ones.
OPEN_WINDOW = 4096


class CandidateServer:
    """B's candidate copies: stores them, serves the best ones re-randomised, and opens at most
    one label per query (what an honest A asks for after a match).

    ``view_k`` and ``top_k`` are B's own configuration: a request asking for others is
    refused, so A cannot widen what B ranks or serves.
    """

    def __init__(
        self,
        server_b: ServerB,
        ckks_secret: CKKSContext,
        copies: CopySource,
        search: SearchConfig,
        rng: random.Random | None = None,
    ) -> None:
        self.server_b = server_b
        self.ctx = ckks_secret
        self.copies = copies
        self.search = search
        self.rng = rng if rng is not None else secrets.SystemRandom()
        self._open: OrderedDict[bytes, list[bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CandidateServer(top_k={self.search.top_k}, view_k={self.search.view_k})"

    def put(self, payload: bytes) -> bytes:
        msg = cand.CopyPut.from_bytes(payload)
        for c in msg.copies:
            cand.check_copy(self.server_b.key, c)
        return cand.Ack(self.copies.put(msg.namespace, msg.copies)).to_bytes()

    def erase(self, payload: bytes) -> bytes:
        msg = cand.CopyErase.from_bytes(payload)
        return cand.Ack(self.copies.erase(msg.namespace, msg.positions)).to_bytes()

    def sync(self, payload: bytes) -> bytes:
        msg = cand.CopySync.from_bytes(payload)
        missing, dropped = self.copies.sync(msg.namespace, msg.entries)
        return cand.CopySyncReply(tuple(missing), dropped).to_bytes()

    def serve(self, payload: bytes) -> bytes:
        request = PreselectRequest.from_bytes(payload)
        total = len(request.scores) * self.ctx.slot_count
        if request.k != min(self.search.view_k, total) or request.top_k != self.search.top_k:
            raise ProtocolError(f"B ranks view_k={self.search.view_k} and serves "
                                f"top_k={self.search.top_k}; request asked {request.k}/"
                                f"{request.top_k}")
        held = self.copies.copies(request.namespace)
        if len(held) <= self.search.top_k:
            raise ProtocolError("B holds no more copies than one exact stage takes")
        ranked = cand.rank_positions(self.ctx, request, self.search.view_k)
        chosen = cand.choose(ranked, held, self.search.top_k, self.rng)
        reply, labels = cand.serve(request.request_id, [held[p] for p in chosen],
                                   self.server_b.key, self.server_b.pool, self.rng)
        with self._lock:
            self._open[request.request_id] = labels
            while len(self._open) > OPEN_WINDOW:
                self._open.popitem(last=False)
        return reply.to_bytes()

    def open_label(self, payload: bytes) -> bytes:
        request = cand.LabelOpenRequest.from_bytes(payload)
        with self._lock:
            labels = self._open.pop(request.request_id, None)
        if labels is None:
            raise ProtocolError("no open candidate set for this query (one label per query)")
        if not 0 <= request.index < len(labels):
            raise ProtocolError("label index outside the served candidates")
        return cand.open_label(self.server_b.share, labels[request.index]).to_bytes()

    def steps(self) -> dict[str, StepHandler]:
        return {Step.PRESELECT: self.serve, Step.COPY_PUT: self.put,
                Step.COPY_ERASE: self.erase, Step.COPY_SYNC: self.sync,
                Step.OPEN_LABEL: self.open_label}


def helper_steps(
    server_b: ServerB, ckks_secret: CKKSContext, candidates: CandidateServer | None = None,
    *, head_dim: int | None = None,
) -> dict[str, StepHandler]:
    """``step -> (request bytes -> reply bytes)``: the Paillier steps of ``server_b``, the block
    refresh and re-layout, and (with ``candidates``) preselection that serves candidate copies.
    ``head_dim``: B's bound on a re-layout's rows (its parameter set's; default: any up to the
    slot count)."""

    def refresh_step(payload: bytes) -> bytes:
        request = refresh.RefreshRequest.from_bytes(payload)
        return refresh.answer_refresh(ckks_secret, request).to_bytes()

    def relayout_step(payload: bytes) -> bytes:
        request = relayout.RelayoutRequest.from_bytes(payload)
        rows = head_dim if head_dim is not None else ckks_secret.slot_count
        return relayout.answer_relayout(ckks_secret, request, rows).to_bytes()

    def derive_step(payload: bytes) -> bytes:
        if server_b.seal is None:
            raise ProtocolError("server B holds no sealing key: it cannot derive heads")
        request = derived_heads.DeriveRequest.from_bytes(payload)
        layout = SealedLayout.for_norms(server_b.config.norms, server_b.key)
        return derived_heads.answer_derive(ckks_secret, server_b.seal, layout,
                                           request).to_bytes()

    steps = dict(server_b.handlers())
    steps[Step.REFRESH] = refresh_step
    steps[Step.RELAYOUT] = relayout_step
    steps[Step.DERIVE_HEADS] = derive_step
    if candidates is not None:
        steps.update(candidates.steps())
    return steps


def loopback(steps: dict[str, StepHandler]) -> HelperCall:
    """In-process A → B calls through the byte encodings (tests, bench, audit)."""

    def call(step: str, payload: bytes) -> bytes:
        handler = steps.get(step)
        if handler is None:
            raise ProtocolError(f"unknown helper step {step!r}")
        return handler(payload)

    return call


__all__ = [
    "OPEN_WINDOW",
    "CandidateServer",
    "CopySource",
    "StepHandler",
    "helper_steps",
    "loopback",
]
