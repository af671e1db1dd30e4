"""Identification (1:N) and verification (1:1) as one pipeline, with no I/O of its own.

The server (:class:`pura.service.nodes.NodeA`), the benchmarks and the privacy audit all run this
object, so what the audit measures and the bench times is what the server does. Storage comes in
through :class:`TemplateSource`; B through a :class:`~pura.pipeline.channel.HelperChannel`.

Stages of one query:

1. The query's admission (two rounds, mostly B's work) runs on a thread while A's CKKS
   preselection scores the blocks: it does not depend on the candidates.
2. Preselection: B ranks its masked, permuted view and answers ``view_k`` positions; A maps
   them to templates, drops decoys and keeps ``top_k``, padding with random live templates so
   that the exact stage always has ``top_k`` candidates (a short stage would time differently).
3. The exact stage (:meth:`ServerA.match`): blinded squared distances, secure argmin, secure
   threshold. Only the decision, and the winner on a match, is opened.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager as ContextManager
from typing import Any, Protocol, TypeVar

from pura.crypto.ckks import CKKSContext
from pura.pipeline.channel import HelperChannel
from pura.pipeline.config import SearchConfig
from pura.pipeline.gallery import GalleryIndex
from pura.protocols.identify import Candidate, MatchResult, ServerA
from pura.protocols.messages import PaillierQuery
from pura.protocols.norms import CheckedQuery
from pura.protocols.preselect import PreselectResponse, parse_query
from pura.protocols.steps import Step

T = TypeVar("T")


class TemplateSource(Protocol):
    """Where A's stored templates come from (the store in the server, memory in the bench)."""

    def candidates(self, template_ids: Sequence[int]) -> list[tuple[str, Candidate]]:
        """``(label, template)`` for each id, in order."""
        ...


@contextlib.contextmanager
def _no_guard() -> Iterator[None]:
    yield


def _timed(stages: dict[str, float], name: str, fn: Callable[..., T], *args: Any) -> T:
    started = time.perf_counter()
    try:
        return fn(*args)
    finally:
        stages[name] = time.perf_counter() - started


class Identifier:
    """Runs 1:N and 1:1 for one server A.

    ``online`` is entered around the online part of every query: the server passes its offline
    worker's pause (precomputation must not steal the query's cores); tools pass nothing.
    """

    def __init__(
        self,
        server_a: ServerA,
        ctx: CKKSContext,
        head_dim: int,
        channel: HelperChannel,
        search: SearchConfig,
        rng: random.Random,
        online: Callable[[], ContextManager[None]] = _no_guard,
    ) -> None:
        self.server_a = server_a
        self.ctx = ctx
        self.head_dim = head_dim
        self.channel = channel
        self.search = search
        self.rng = rng
        self.online = online
        #: Seconds per stage of the last :meth:`identify` (benchmarks read it; ``preselect``
        #: includes B's answer, ``admit_query`` overlaps it).
        self.last_stages: dict[str, float] = {}

    def identify(
        self,
        gallery: GalleryIndex,
        query: PaillierQuery,
        head: Sequence[bytes],
        tau: int,
        source: TemplateSource,
    ) -> MatchResult:
        """1:N. ``MatchResult(False)`` is a result ("no match"), not an error."""
        stages: dict[str, float] = {}
        with self.online(), ThreadPoolExecutor(1, thread_name_prefix="pura-admit") as pool:
            checked = pool.submit(_timed, stages, "admit_query", self.server_a.check_query, query)
            ids = _timed(stages, "preselect", self.candidate_ids, gallery, head)
            candidates = _timed(stages, "fetch", source.candidates, ids)
            admitted = checked.result()
            result = _timed(stages, "exact", self.server_a.match, admitted, candidates, tau)
        self.last_stages = stages
        return result

    def verify(
        self, query: PaillierQuery | CheckedQuery, subject: str,
        templates: Sequence[Candidate], tau: int,
    ) -> bool:
        """1:1 against the subject's templates."""
        with self.online():
            return self.server_a.verify(query, subject, templates, tau)

    def candidates(
        self, gallery: GalleryIndex, head: Sequence[bytes], source: TemplateSource
    ) -> list[tuple[str, Candidate]]:
        """Exact-stage candidates: CKKS preselection of ``top_k`` over the whole gallery (B sees
        only masked, permuted scores). A gallery no larger than ``top_k`` goes to the exact
        stage whole: preselection could not discard anything and would only add a round."""
        return source.candidates(self.candidate_ids(gallery, head))

    def candidate_ids(self, gallery: GalleryIndex, head: Sequence[bytes]) -> list[int]:
        top_k = self.search.top_k
        with gallery.lock:
            live = gallery.live()
            if len(live) <= top_k:
                parse_query(self.ctx, head, self.head_dim)
                return [gallery.blocks[b].live[s] for b, s in live]
            total = len(gallery.layout.searchable_blocks()) * self.ctx.slot_count
            request, state = gallery.preselect.request(head, min(self.search.view_k, total))
        raw = self.channel(Step.PRESELECT, request.to_bytes())
        chosen = gallery.preselect.resolve(state, PreselectResponse.from_bytes(raw))
        return self._pad(gallery, chosen[:top_k])

    def _pad(self, gallery: GalleryIndex, chosen: list[int]) -> list[int]:
        """Fill up to ``top_k`` with random other live templates.

        Why: when decoys crowd B's top positions, fewer than ``top_k`` real candidates remain;
        a short exact stage would answer faster, and the latency would tell an observer that
        the probe resembled nobody (threat T16). Extra candidates cannot make the answer worse:
        the exact stage takes the true minimum over a superset.
        """
        top_k = self.search.top_k
        if len(chosen) >= top_k:
            return chosen
        taken = set(chosen)
        others = [t for t in gallery.live_ids() if t not in taken]
        return [*chosen, *self.rng.sample(others, min(len(others), top_k - len(chosen)))]


__all__ = ["Identifier", "TemplateSource"]
