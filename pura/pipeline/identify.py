"""Identification (1:N) and verification (1:1) as one pipeline, with no I/O of its own.

The server (:class:`pura.service.nodes.NodeA`), the benchmarks and the privacy audit all run this
object, so what the audit measures and the bench times is what the server does. Storage comes in
through :class:`TemplateSource`; B through a :class:`~pura.pipeline.channel.HelperChannel`.

Stages of one query:

1. The query's admission (two rounds, mostly B's work) runs on a thread while A's CKKS
   preselection scores the blocks: it does not depend on the candidates. So do the exact
   stage's distance masks and their corrections (multi-exponentiations over the query), drawn
   on the same thread right after admission.
2. Preselection: B ranks its masked, permuted view and answers ``view_k`` positions; A maps
   them to templates, drops decoys and keeps ``top_k``, padding with random live templates so
   that the exact stage always has ``top_k`` candidates (a short stage would time differently).
3. The exact stage (:meth:`ServerA.match`): blinded squared distances, secure argmin, secure
   threshold. Only the decision, and the winner on a match, is opened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pura.crypto.ckks import CKKSContext
from pura.crypto.paillier import Ciphertext
from pura.errors import CallAbandonedError, ProtocolError
from pura.pipeline.channel import HelperChannel
from pura.pipeline.config import SearchConfig
from pura.pipeline.gallery import GalleryIndex
from pura.protocols import candidates as cand
from pura.protocols.identify import BytesChannel, Candidate, MatchResult, ServerA
from pura.protocols.identify import HelperChannel as HelperChannel_
from pura.protocols.messages import PaillierQuery, SealedQuery
from pura.protocols.norms import CheckedQuery
from pura.protocols.preselect import parse_query
from pura.protocols.secure_distance import DistanceMasks
from pura.protocols.steps import Step
from pura.protocols.tickets import TicketKind, seal

T = TypeVar("T")


class TemplateSource(Protocol):
    """A's view of one collection's stored templates (the store in the server, memory in the
    bench). ``namespace`` names the collection's copies at B."""

    @property
    def namespace(self) -> str: ...

    def candidates(self, template_ids: Sequence[int]) -> list[tuple[str, Candidate]]:
        """``(label, template)`` for each id, in order (galleries of at most ``top_k``)."""
        ...

    def subject_of(self, template_id: int) -> str:
        """The subject of a template A learned by opening the winner's label."""
        ...


@dataclass
class _Candidates:
    """The exact stage's input and how to name its winner: a subject label directly (A's own
    templates, small galleries), or an index into B's served order whose label is opened."""

    entries: list[tuple[str, Candidate]]
    request_id: bytes | None = None
    #: The labels B served with the candidates (same order), for the winner's opening.
    labels: tuple[bytes, ...] = ()


@contextlib.contextmanager
def _no_guard() -> Iterator[None]:
    yield


def still_wanted(alive: Callable[[], bool] | None, stage: str) -> None:
    """Raise :class:`CallAbandonedError` when the caller is gone (``alive`` says False)."""
    if alive is not None and not alive():
        raise CallAbandonedError(f"the client gave up before {stage}")


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
        query: PaillierQuery | SealedQuery,
        head: Sequence[bytes],
        tau: int,
        source: TemplateSource,
        alive: Callable[[], bool] | None = None,
    ) -> MatchResult:
        """1:N. ``MatchResult(False)`` is a result ("no match"), not an error.

        ``alive`` (the server passes its call's ``is_active``) is checked between stages: a
        client that gave up stops the work at the next stage (:class:`CallAbandonedError`)."""
        stages: dict[str, float] = {}
        with self.online(), ThreadPoolExecutor(1, thread_name_prefix="pura-admit") as pool:
            # One ticket for every step of this query: B counts its quotas per ticket.
            session = self.server_a.session(TicketKind.QUERY)
            checked = pool.submit(self._admit, query, session, stages)
            served = _timed(stages, "preselect", self.candidates, gallery, head, source, session)
            admitted, ahead = checked.result()
            still_wanted(alive, "the exact stage")
            result = _timed(stages, "exact", self.server_a.match, admitted, served.entries, tau,
                            session, ahead)
            if result.matched and served.request_id is not None and result.label is not None:
                subject = _timed(stages, "open", self._open, served.request_id,
                                 int(result.label), source, served.labels, session)
                result = MatchResult(True, subject)
        self.last_stages = stages
        return result

    def _admit(
        self, query: PaillierQuery | SealedQuery, session: HelperChannel_,
        stages: dict[str, float],
    ) -> tuple[CheckedQuery, DistanceMasks]:
        """The query's admission, then the distance round's masks and corrections for
        ``top_k`` candidates: neither depends on the candidates, so both run beside
        preselection (:meth:`ServerA.draw_masks`)."""
        checked = _timed(stages, "admit_query", self.server_a.check_query, query, session)
        ahead = _timed(stages, "distance_masks", self.server_a.draw_masks, checked,
                       self.search.top_k)
        return checked, ahead

    def verify(
        self, query: PaillierQuery | SealedQuery | CheckedQuery, subject: str,
        templates: Sequence[Candidate], tau: int,
    ) -> bool:
        """1:1 against the subject's templates."""
        with self.online():
            return self.server_a.verify(query, subject, templates, tau)

    def candidates(
        self, gallery: GalleryIndex, head: Sequence[bytes], source: TemplateSource,
        session: HelperChannel_ | None = None,
    ) -> _Candidates:
        """Exact-stage candidates.

        A gallery larger than ``top_k``: CKKS preselection over the whole gallery, and B serves
        its best ``top_k`` copies re-randomised and shuffled (:mod:`pura.protocols.candidates`):
        A works on ciphertexts it has never seen, so nothing it holds says which stored
        templates the probe resembles. A gallery no larger than ``top_k`` goes to the exact
        stage whole, from A's store: every template is a candidate, so which ones are reveals
        nothing, and preselection would only add a round.
        """
        top_k = self.search.top_k
        with gallery.lock:
            live = gallery.live()
            if len(live) <= top_k:
                parse_query(self.ctx, head, self.head_dim)
                ids = [gallery.blocks[b].live[s] for b, s in live]
            else:
                total = len(gallery.layout.searchable_blocks()) * self.ctx.slot_count
                request, _ = gallery.preselect.request(head, min(self.search.view_k, total))
        if len(live) <= top_k:
            return _Candidates(source.candidates(ids))
        request = dataclasses.replace(request, namespace=source.namespace, top_k=top_k)
        raw = self._send(session, Step.PRESELECT, request.to_bytes())
        reply = cand.CandidatesReply.from_bytes(raw)
        key = self.server_a.key
        served = cand.parse_candidates(key, reply, request.request_id, top_k)
        return _Candidates([(str(i), t) for i, t in enumerate(served)], request.request_id,
                           reply.labels)

    def _send(self, session: HelperChannel_ | None, step: Step, payload: bytes) -> bytes:
        """A raw step of the query's ``session``: sealed with its ticket when it has one."""
        ticket = session.ticket if isinstance(session, BytesChannel) else b""
        return self.channel(step, seal(ticket, payload) if ticket else payload)

    def _open(
        self, request_id: bytes, index: int, source: TemplateSource,
        labels: Sequence[bytes], session: HelperChannel_ | None = None,
    ) -> str:
        """After a match: open the winner's label with B (one opening per query) → subject.

        With the served ``labels`` at hand, A's partial decryption of the winner's runs on a
        thread while B computes its own (both release the GIL: see
        :func:`~pura.crypto.paillier.powmod_unlocked`), and B's answer must be for that label."""
        if not 0 <= index < len(labels):
            raise ProtocolError(f"the exact stage named candidate {index} of {len(labels)}")
        request = cand.LabelOpenRequest(request_id, index).to_bytes()
        share = self.server_a.share
        label = Ciphertext.from_bytes(share.public_key, labels[index])
        with ThreadPoolExecutor(1, thread_name_prefix="pura-label") as pool:
            mine = pool.submit(share.partial_decrypt, label)
            raw = self._send(session, Step.OPEN_LABEL, request)
            template_id = cand.finish_label(share, cand.LabelOpenReply.from_bytes(raw),
                                            labels[index], mine.result())
        return source.subject_of(template_id)


__all__ = ["Identifier", "TemplateSource", "still_wanted"]
