"""Server A / server B roles for the exact stage of identification (1:N) and verification (1:1).

Composition (docs/architecture.md steps 2–5) for one query and k candidate templates::

    A ⇄ B  norm_square          one round: B-made [u_i] and the servers' [‖u‖²]    (norms)
    A ⇄ B  norm_check           one round: ‖u‖² within the unit-vector bounds, else
                                EmbeddingRangeError (neither "match" nor "no match")
    A ⇄ B  blinded_product      one round: [D_j] for all k               (secure_distance)
    A: shuffle the [D_j] (fresh random order; the positions B's argmin sees mean nothing)
    A ⇄ B  argmin               one round for k ≤ 16: [D_min], [i_min]   (secure_min, all pairs)
           (compare_select      ⌈log₂ k⌉ rounds, the SOCI tournament, for larger k)
    A ⇄ B  threshold_decide     one round: decision bit; index opened only on match
    A: position → label (template id / subject id). The client is told "match <label>" or
       "no match", never a score.

Preselection (CKKS, :mod:`pura.protocols.preselect`) chooses the k candidates; its output feeds
:meth:`ServerA.match`. Templates are admitted once (:meth:`ServerA.admit`: the same two norm
rounds, B's canonical re-packing, the servers' norm); an upload that was stored without
admission is admitted when it is first prepared or matched, and one that fails is never matched.
No norm a client uploads exists any more (docs/security.md, "Exact distance"). Verification is
:meth:`ServerA.match` over the claimed subject's templates.

The transport is the :class:`HelperChannel` protocol: one method per B operation, message
dataclasses in and out. :class:`BytesChannel` adapts any ``call(step, bytes) -> bytes`` function
(the gRPC helper client, or B's own handlers in-process for tests), so the same code runs in one
process and across machines. B's steps are listed in :data:`STEPS`.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, cast

from pura.crypto.paillier import (
    Ciphertext,
    KeyShare,
    PartialDecryption,
    PartialPool,
    PublicKey,
    RandomnessPool,
)
from pura.crypto.params import STATISTICAL_SECURITY_BITS
from pura.crypto.seal import SealPrivateKey
from pura.engine.local import SERIAL, LocalEngine
from pura.errors import EmbeddingRangeError, ParameterError, ProtocolError
from pura.protocols.enroll import TemplateLayout, check_template
from pura.protocols.messages import (
    AdmittedTemplate,
    ArgminReply,
    ArgminRequest,
    BlindedProductReply,
    BlindedProductRequest,
    CompareReply,
    CompareRequest,
    NormCheckReply,
    NormCheckRequest,
    NormReply,
    NormRequest,
    PaillierQuery,
    PaillierTemplate,
    SealedAdmitReply,
    SealedAdmitRequest,
    SealedQuery,
    SealedQueryRequest,
    SealedTemplate,
    ThresholdReply,
    ThresholdRequest,
)
from pura.protocols.norms import (
    CheckedQuery,
    NormLayout,
    NormServerB,
    admit_query,
    admit_templates,
)
from pura.protocols.sealed import SealedHelper, SealedLayout, admit_sealed, helper_sealed
from pura.protocols.sealed_query import (
    SealedQueryHelper,
    admit_sealed_query,
    helper_sealed_query,
)
from pura.protocols.secure_distance import (
    DistanceMasks,
    PreparedTemplate,
    draw_masks,
    finish_distance,
    helper_blinded_product,
    prepare_templates,
    start_distance,
)
from pura.protocols.secure_min import (
    CompareLayout,
    finish_threshold,
    helper_argmin,
    helper_compare,
    helper_threshold,
    one_round_argmin,
    prefer_one_round,
    secure_argmin,
    start_threshold,
)
from pura.protocols.steps import Step
from pura.protocols.tickets import TICKET_STEP, TicketKind, parse_ticket, seal

STEP_BLINDED_PRODUCT = Step.BLINDED_PRODUCT
STEP_COMPARE = Step.COMPARE
STEP_THRESHOLD = Step.THRESHOLD
STEP_NORM_SQUARE = Step.NORM_SQUARE
STEP_NORM_CHECK = Step.NORM_CHECK
STEP_ARGMIN = Step.ARGMIN
STEP_SEALED_ADMIT = Step.SEALED_ADMIT
STEP_SEALED_QUERY = Step.SEALED_QUERY
STEPS = (STEP_BLINDED_PRODUCT, STEP_COMPARE, STEP_THRESHOLD, STEP_NORM_SQUARE, STEP_NORM_CHECK,
         STEP_ARGMIN, STEP_SEALED_ADMIT, STEP_SEALED_QUERY)

#: Templates admitted per pair of norm rounds: B answers ``d + 2`` ciphertexts per template
#: (~100 kB at 3072 bits), so a batch stays a few MB on the wire.
ADMIT_BATCH = 32

#: Sealed uploads per admission round (one enrolment ticket each, so B's ``max_enrol_batch``
#: quota bounds it too): ~100 kB of mask ciphertexts each travel to B, ~4 kB per template
#: come back.
SEALED_BATCH = ADMIT_BATCH

#: Pool values A uses per candidate and query (masks, re-randomisation); refilled offline.
_POOL_PER_CANDIDATE = 8


Candidate = PaillierTemplate | AdmittedTemplate | PreparedTemplate
"""A template A may be asked to match: an upload not yet admitted, an admitted one, or an
admitted one with A's partial decryptions precomputed."""


class HelperChannel(SealedHelper, SealedQueryHelper, Protocol):
    """What A can ask of B. Implementations: :class:`ServerB` itself, :class:`BytesChannel`."""

    def blinded_product(self, request: BlindedProductRequest) -> BlindedProductReply: ...

    def compare_select(self, request: CompareRequest) -> CompareReply: ...

    def argmin(self, request: ArgminRequest) -> ArgminReply: ...

    def threshold_decide(self, request: ThresholdRequest) -> ThresholdReply: ...


@dataclass(frozen=True)
class ExactConfig:
    """Layouts both servers must agree on (derived from key, dimension, scale, κ)."""

    template: TemplateLayout
    compare: CompareLayout
    norms: NormLayout

    @classmethod
    def for_key(
        cls,
        key: PublicKey,
        dim: int = 128,
        scale_bits: int = 11,
        kappa: int = STATISTICAL_SECURITY_BITS,
    ) -> ExactConfig:
        template = TemplateLayout.for_key(key, dim, scale_bits, kappa)
        return cls(template, CompareLayout.for_key(key, template.dist_bits, kappa),
                   NormLayout.for_key(key, template))


def threshold_units(squared_distance: float, scale_bits: int) -> int:
    """Float threshold on ``‖x − y‖²`` (unit vectors) → the integer scale of ``D`` (``4^s``)."""
    if not 0.0 <= squared_distance <= 4.0:
        raise ParameterError("a squared distance of unit vectors lies in [0, 4]")
    return int(squared_distance * float(1 << (2 * scale_bits)))


class ServerB:
    """The decryption helper: holds share 2, answers the five steps, keeps no per-query state."""

    def __init__(
        self,
        share: KeyShare,
        config: ExactConfig,
        pool: RandomnessPool | None = None,
        engine: LocalEngine = SERIAL,
        seal: SealPrivateKey | None = None,
    ) -> None:
        if share.index != 2:
            raise ParameterError("server B must hold key share 2")
        self.share = share
        self.key = share.public_key
        self.config = config
        self.seal = seal
        self.pool = pool if pool is not None else RandomnessPool(self.key)
        self.engine = engine
        self.norms = NormServerB(share, config.norms, self.pool, engine)
        #: B's own partial decryptions of ciphertexts it will see in a distance round
        #: (ciphertext value → partial), e.g. of the candidate copies it served, computed before
        #: the round; used once each (:func:`helper_blinded_product`'s ``known``).
        self.known_partials: dict[int, PartialDecryption] = {}

    def __repr__(self) -> str:
        return f"ServerB(key={self.key.key_id})"

    def pool_demand(self, candidates: int) -> int:
        """Fresh encryptions B makes for one query of ``candidates``: the admitted query's
        ``dim`` coordinates and its square sum, ``3`` per argmin comparison and one
        re-randomised product per candidate (a small margin on top)."""
        return self.config.template.dim + 1 + 4 * candidates + 8

    def refill(self, candidates: int) -> None:
        """Offline step between queries (like :meth:`ServerA.refill`): B's randomness pool.

        Why: every value B returns is a *fresh* encryption (B must not be able to strip A's
        masks later, and A must not learn B's randomness), and one fresh Paillier randomiser
        costs a fixed-base exponentiation (~1.3 ms at 3072 bits). A query needs ~160 of them;
        precomputed between queries, each online encryption is one multiplication.
        """
        want = self.pool_demand(candidates)
        if len(self.pool) < want:
            self.pool.refill(want - len(self.pool))

    def norm_square(self, request: NormRequest) -> NormReply:
        return self.norms.norm_square(request)

    def norm_check(self, request: NormCheckRequest) -> NormCheckReply:
        return self.norms.norm_check(request)

    def sealed_admit(self, request: SealedAdmitRequest) -> SealedAdmitReply:
        return helper_sealed(request, SealedLayout.for_norms(self.config.norms, self.key),
                             self.share, self._seal_key("enrol with the joint-decryption "
                                                        "admission"), self.pool, self.engine)

    def sealed_query(self, request: SealedQueryRequest) -> NormReply:
        return helper_sealed_query(request, SealedLayout.for_norms(self.config.norms, self.key),
                                   self._seal_key("send the query as ciphertexts"), self.pool)

    def _seal_key(self, what: str) -> SealPrivateKey:
        if self.seal is None:
            raise ProtocolError(f"server B holds no sealing key (a key set made before sealed "
                                f"admission): {what}")
        return self.seal

    def blinded_product(self, request: BlindedProductRequest) -> BlindedProductReply:
        return helper_blinded_product(request, self.config.template, self.share, self.pool,
                                      self.engine, self.known_partials)

    def compare_select(self, request: CompareRequest) -> CompareReply:
        return helper_compare(request, self.config.compare, self.share, self.pool, self.engine)

    def argmin(self, request: ArgminRequest) -> ArgminReply:
        return helper_argmin(request, self.config.compare, self.share, self.pool, self.engine)

    def threshold_decide(self, request: ThresholdRequest) -> ThresholdReply:
        return helper_threshold(request, self.config.compare, self.share)

    def handlers(self) -> dict[str, Callable[[bytes], bytes]]:
        """``step -> (request bytes -> reply bytes)`` for a transport (gRPC servicer, loopback)."""
        key = self.key
        return {
            STEP_BLINDED_PRODUCT: lambda b: self.blinded_product(
                BlindedProductRequest.from_bytes(key, b)).to_bytes(),
            STEP_COMPARE: lambda b: self.compare_select(
                CompareRequest.from_bytes(key, b)).to_bytes(),
            STEP_ARGMIN: lambda b: self.argmin(ArgminRequest.from_bytes(key, b)).to_bytes(),
            STEP_THRESHOLD: lambda b: self.threshold_decide(
                ThresholdRequest.from_bytes(key, b)).to_bytes(),
            STEP_NORM_SQUARE: lambda b: self.norm_square(
                NormRequest.from_bytes(key, b)).to_bytes(),
            STEP_NORM_CHECK: lambda b: self.norm_check(
                NormCheckRequest.from_bytes(key, b)).to_bytes(),
            STEP_SEALED_ADMIT: lambda b: self.sealed_admit(
                SealedAdmitRequest.from_bytes(key, b)).to_bytes(),
            STEP_SEALED_QUERY: lambda b: self.sealed_query(
                SealedQueryRequest.from_bytes(key, b)).to_bytes(),
        }


@dataclass
class ChannelStats:
    """Round trips and bytes moved (request + reply), for benchmarks and audit."""

    rounds: int = 0
    bytes_to_b: int = 0
    bytes_from_b: int = 0


@dataclass
class BytesChannel:
    """:class:`HelperChannel` over ``call(step, payload) -> reply`` (serialises both ways)."""

    key: PublicKey
    call: Callable[[str, bytes], bytes]
    stats: ChannelStats = field(default_factory=ChannelStats)
    #: B takes per-query tickets (:mod:`pura.protocols.helper_guard`): open one per query with
    #: :meth:`open_session`; every request of that session carries it.
    ticketed: bool = False
    ticket: bytes = field(default=b"", repr=False)

    def open_session(self, kind: TicketKind) -> BytesChannel:
        """This channel bound to a fresh ticket of ``kind`` from B (itself if B takes none).

        The bound copy shares :attr:`stats`, so one object still counts every round."""
        if not self.ticketed:
            return self
        ticket = parse_ticket(self._exchange(TICKET_STEP, kind.value.encode("ascii")))
        return replace(self, ticket=ticket)

    @classmethod
    def loopback(cls, server_b: ServerB) -> BytesChannel:
        """In-process channel that still goes through every message's bytes encoding."""
        handlers = server_b.handlers()

        def call(step: str, payload: bytes) -> bytes:
            if step not in handlers:
                raise ProtocolError(f"unknown helper step {step!r}")
            return handlers[step](payload)

        return cls(server_b.key, call)

    def _exchange(self, step: str, payload: bytes) -> bytes:
        if self.ticket:
            payload = seal(self.ticket, payload)
        reply = self.call(step, payload)
        self.stats.rounds += 1
        self.stats.bytes_to_b += len(payload)
        self.stats.bytes_from_b += len(reply)
        return reply

    def blinded_product(self, request: BlindedProductRequest) -> BlindedProductReply:
        raw = self._exchange(STEP_BLINDED_PRODUCT, request.to_bytes())
        return BlindedProductReply.from_bytes(self.key, raw)

    def compare_select(self, request: CompareRequest) -> CompareReply:
        return CompareReply.from_bytes(self.key, self._exchange(STEP_COMPARE, request.to_bytes()))

    def argmin(self, request: ArgminRequest) -> ArgminReply:
        return ArgminReply.from_bytes(self.key, self._exchange(STEP_ARGMIN, request.to_bytes()))

    def threshold_decide(self, request: ThresholdRequest) -> ThresholdReply:
        raw = self._exchange(STEP_THRESHOLD, request.to_bytes())
        return ThresholdReply.from_bytes(self.key, raw)

    def norm_square(self, request: NormRequest) -> NormReply:
        return NormReply.from_bytes(self.key,
                                    self._exchange(STEP_NORM_SQUARE, request.to_bytes()))

    def norm_check(self, request: NormCheckRequest) -> NormCheckReply:
        return NormCheckReply.from_bytes(self.key,
                                         self._exchange(STEP_NORM_CHECK, request.to_bytes()))

    def sealed_admit(self, request: SealedAdmitRequest) -> SealedAdmitReply:
        return SealedAdmitReply.from_bytes(self.key,
                                           self._exchange(STEP_SEALED_ADMIT, request.to_bytes()))

    def sealed_query(self, request: SealedQueryRequest) -> NormReply:
        return NormReply.from_bytes(self.key,
                                    self._exchange(STEP_SEALED_QUERY, request.to_bytes()))


@dataclass(frozen=True)
class MatchResult:
    """What A tells the client: a label on match, nothing else (never a distance)."""

    matched: bool
    label: str | None = None


class ServerA:
    """The evaluator: holds share 1, the encrypted gallery (elsewhere), and a channel to B."""

    def __init__(
        self,
        share: KeyShare,
        config: ExactConfig,
        channel: HelperChannel,
        pool: RandomnessPool | None = None,
        engine: LocalEngine = SERIAL,
        rng: random.Random | None = None,
    ) -> None:
        if share.index != 1:
            raise ParameterError("server A must hold key share 1")
        self.share = share
        self.key = share.public_key
        self.config = config
        self.channel = channel
        self.rng = rng if rng is not None else secrets.SystemRandom()
        self.pool = pool if pool is not None else RandomnessPool(self.key, rng=self.rng)
        self.masks = PartialPool(share, rng=self.rng)
        self.engine = engine

    def __repr__(self) -> str:
        return f"ServerA(key={self.key.key_id})"

    def refill(self, candidates: int) -> None:
        """Offline step between queries: precompute pool values for a query of ``candidates``
        (the query's admission re-randomises ``dim`` ciphertexts on top of the candidates')."""
        want = _POOL_PER_CANDIDATE * candidates + self.config.template.dim + 16
        if len(self.pool) < want:
            self.pool.refill(want - len(self.pool))
        want_masks = self.config.template.cts_per_template * candidates
        if len(self.masks) < want_masks:
            self.masks.refill(want_masks - len(self.masks))

    def admit(
        self, uploads: Sequence[PaillierTemplate | SealedTemplate]
    ) -> list[AdmittedTemplate | EmbeddingRangeError]:
        """Enrolment (with B, two rounds per batch): what to store per upload, or why it is
        refused (:class:`EmbeddingRangeError`, per item). Sealed uploads go through sealed
        admission (:mod:`pura.protocols.sealed`, :data:`SEALED_BATCH` per round pair), packed
        Paillier uploads through the joint-decryption admission (:data:`ADMIT_BATCH`)."""
        out: list[AdmittedTemplate | EmbeddingRangeError | None] = [None] * len(uploads)
        legacy = [i for i, u in enumerate(uploads) if isinstance(u, PaillierTemplate)]
        sealed = [i for i, u in enumerate(uploads) if isinstance(u, SealedTemplate)]
        for start in range(0, len(legacy), ADMIT_BATCH):
            chunk = legacy[start:start + ADMIT_BATCH]
            results = admit_templates(
                [cast(PaillierTemplate, uploads[i]).packed for i in chunk], self.config.norms,
                self.share, self.pool, self.session(TicketKind.ENROL), self.engine, self.rng)
            for i, r in zip(chunk, results, strict=True):
                out[i] = r
        for start in range(0, len(sealed), SEALED_BATCH):
            chunk = sealed[start:start + SEALED_BATCH]
            layout = SealedLayout.for_norms(self.config.norms, self.key)
            results = admit_sealed(
                [cast(SealedTemplate, uploads[i]) for i in chunk], layout, self.share,
                self.pool, self.session(TicketKind.ENROL), self.engine, self.rng)
            for i, r in zip(chunk, results, strict=True):
                out[i] = r
        return [r for r in out if r is not None]

    def _admitted(
        self, templates: Sequence[Candidate]
    ) -> list[AdmittedTemplate | PreparedTemplate | None]:
        """``templates`` with every upload admitted in one batch; ``None`` where refused."""
        uploads = [t for t in templates if isinstance(t, PaillierTemplate)]
        done = iter(self.admit(uploads) if uploads else [])
        out: list[AdmittedTemplate | PreparedTemplate | None] = []
        for t in templates:
            if isinstance(t, PaillierTemplate):
                r = next(done)
                out.append(None if isinstance(r, EmbeddingRangeError) else r)
            else:
                out.append(t)
        return out

    def prepare(
        self, templates: Sequence[AdmittedTemplate | PaillierTemplate]
    ) -> list[PreparedTemplate]:
        """Offline, per stored template: A's partial decryptions (keeps them off the query path).

        A not yet admitted upload is admitted first; one that is refused raises
        :class:`EmbeddingRangeError` (it must never be matched).
        """
        admitted = self._admitted(templates)
        ok = [t for t in admitted if isinstance(t, AdmittedTemplate)]
        if len(ok) != len(templates):
            bad = [i for i, t in enumerate(admitted) if t is None]
            raise EmbeddingRangeError(f"templates {bad} are not encodings of unit vectors")
        return prepare_templates(ok, self.share, self.engine)

    def session(self, kind: TicketKind = TicketKind.QUERY) -> HelperChannel:
        """The channel for one query (or enrolment batch): bound to a fresh ticket from B when
        B takes tickets. Every step of one query must use the same session — B counts its
        quotas per ticket and refuses a step whose predecessors ran under another one."""
        channel = self.channel
        return channel.open_session(kind) if isinstance(channel, BytesChannel) else channel

    def check_query(
        self, query: PaillierQuery | SealedQuery, session: HelperChannel | None = None
    ) -> CheckedQuery:
        """Admit a query (two rounds with B): its coordinates become B's checked re-encryption
        and its norm the servers' own; a :class:`SealedQuery` needs no threshold decryption in
        the first round (:mod:`pura.protocols.sealed_query`). Raises
        :class:`EmbeddingRangeError` for anything that is not the encoding of a unit vector.

        Separate from :meth:`match` because it does not depend on the candidates: a server can
        run it while preselection is still choosing them (B works while A scores blocks).
        """
        helper = session if session is not None else self.channel
        if isinstance(query, SealedQuery):
            return admit_sealed_query(query, SealedLayout.for_norms(self.config.norms, self.key),
                                      self.share, self.pool, helper, self.engine, self.rng)
        check_template(query, self.config.template, self.key)
        return admit_query(query.packed, self.config.norms, self.share, self.pool, helper,
                           self.engine, self.rng)

    def draw_masks(self, query: CheckedQuery, k: int) -> DistanceMasks:
        """The distance round's masks and corrections for ``k`` candidates, drawn before the
        candidates are known (:func:`~pura.protocols.secure_distance.draw_masks`): a server
        computes them beside preselection and passes them to :meth:`match` as ``ahead``."""
        return draw_masks(query, self.config.template, k, self.engine, self.rng)

    def match(
        self,
        query: PaillierQuery | SealedQuery | CheckedQuery,
        candidates: Sequence[tuple[str, Candidate]],
        tau: int,
        session: HelperChannel | None = None,
        ahead: DistanceMasks | None = None,
    ) -> MatchResult:
        """Exact stage: is the nearest candidate within ``tau`` (integer units of D)? Which one?

        A :class:`PaillierQuery` is admitted first (:meth:`check_query`); a query that is not
        the encoding of a unit vector raises :class:`EmbeddingRangeError` — neither "match" nor
        "no match". Candidates not yet admitted are admitted here (refused ones can never match).
        ``session``: the query's (:meth:`session`); a query admitted with :meth:`check_query`
        must come with the session it was admitted under. ``ahead``: masks from
        :meth:`draw_masks` for this query, used when drawn for as many candidates as are
        matched (otherwise fresh ones are drawn here).
        """
        channel = session if session is not None else self.session(TicketKind.QUERY)
        checked = query if isinstance(query, CheckedQuery) else self.check_query(query, channel)
        admitted = self._admitted([t for _, t in candidates])
        order = [(label, t) for (label, _), t in zip(candidates, admitted, strict=True)
                 if t is not None]
        if not order:
            return MatchResult(False)
        if ahead is not None and (ahead.query is not checked or ahead.k != len(order)):
            ahead = None
        state, request = start_distance(
            checked, [t for _, t in order], self.config.template, self.masks, self.engine,
            self.rng, ahead,
        )
        distances = finish_distance(state, channel.blinded_product(request))
        # The secret shuffle comes after the distance round: B's served copies come back to it
        # in its own serving order there (secure_distance: the mask rides in A's partial
        # decryption), so the positions B's argmin and threshold see must be a fresh random
        # order that B cannot relate to the copies it served.
        shuffled = list(zip(order, distances, strict=True))
        self.rng.shuffle(shuffled)
        order = [entry for entry, _ in shuffled]
        distances = [d for _, d in shuffled]
        # σ: a secret relabelling of the k positions. The threshold round opens σ(winner),
        # and B range-checks what it opens (< k); B saw the winner's position in the argmin,
        # so without σ it could tell an opened index from A's random filler (the decision).
        labels = list(range(len(order)))
        self.rng.shuffle(labels)
        d_min, i_min = self._argmin(distances, labels, channel)
        t_state, t_request = start_threshold(
            d_min, i_min, tau, self.config.compare, self.share, self.pool, self.rng,
            k=len(order), labels=labels, masks=self.masks, engine=self.engine,
        )
        decision = finish_threshold(t_state, channel.threshold_decide(t_request), self.share)
        if not decision.matched:
            return MatchResult(False)
        if decision.index is None or not 0 <= decision.index < len(order):
            raise ProtocolError("opened index lies outside the candidate list")
        return MatchResult(True, order[decision.index][0])

    def _argmin(
        self, distances: Sequence[Ciphertext], labels: Sequence[int], channel: HelperChannel
    ) -> tuple[Ciphertext, Ciphertext]:
        """``([D_min], [σ(I_min)])`` with ``σ`` = ``labels``: one round for small k, the
        tournament above ~16 candidates."""
        layout = self.config.compare
        if prefer_one_round(layout, len(distances)):
            return one_round_argmin(distances, layout, self.share, self.pool,
                                    channel.argmin, self.engine, self.rng, labels)
        entries = [(d, self.key.encrypt(labels[j], self.pool)) for j, d in enumerate(distances)]
        return secure_argmin(entries, layout, self.share, self.pool, channel.compare_select,
                             self.engine, self.rng)

    def verify(
        self,
        query: PaillierQuery | SealedQuery | CheckedQuery,
        subject: str,
        templates: Sequence[Candidate],
        tau: int,
    ) -> bool:
        """1:1: does the query match any of ``subject``'s templates within ``tau``?"""
        return self.match(query, [(subject, t) for t in templates], tau).matched


__all__ = [
    "ADMIT_BATCH",
    "STEPS",
    "STEP_ARGMIN",
    "STEP_BLINDED_PRODUCT",
    "STEP_COMPARE",
    "STEP_NORM_CHECK",
    "STEP_NORM_SQUARE",
    "STEP_THRESHOLD",
    "BytesChannel",
    "Candidate",
    "ChannelStats",
    "ExactConfig",
    "HelperChannel",
    "MatchResult",
    "ServerA",
    "ServerB",
    "threshold_units",
]
