"""Server A / server B roles for the exact stage of identification (1:N) and verification (1:1).

Composition (docs/architecture.md steps 2–5) for one query and k candidate templates::

    A: shuffle candidates (fresh random order; the index B's tournament sees means nothing)
    A ⇄ B  blinded_product      one round: [D_j] for all k               (secure_distance)
    A ⇄ B  compare_select       ⌈log₂ k⌉ rounds: [D_min], [i_min]          (secure_min)
    A ⇄ B  threshold_decide     one round: decision bit; index opened only on match
    A: position → label (template id / subject id). The client is told "match <label>" or
       "no match", never a score.

Preselection (CKKS, :mod:`pura.protocols.preselect`) chooses the k candidates; its output feeds
:meth:`ServerA.match`. Verification is :meth:`ServerA.match` over the claimed subject's templates.

The transport is the :class:`HelperChannel` protocol: one method per B operation, message
dataclasses in and out. :class:`BytesChannel` adapts any ``call(step, bytes) -> bytes`` function
(the gRPC helper client, or B's own handlers in-process for tests), so the same code runs in one
process and across machines. B's steps are listed in :data:`STEPS`.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pura.crypto.paillier import KeyShare, PartialPool, PublicKey, RandomnessPool
from pura.crypto.params import STATISTICAL_SECURITY_BITS
from pura.engine.local import SERIAL, LocalEngine
from pura.errors import ParameterError, ProtocolError
from pura.protocols.enroll import TemplateLayout
from pura.protocols.messages import (
    BlindedProductReply,
    BlindedProductRequest,
    CompareReply,
    CompareRequest,
    PaillierQuery,
    PaillierTemplate,
    ThresholdReply,
    ThresholdRequest,
)
from pura.protocols.secure_distance import (
    PreparedTemplate,
    finish_distance,
    helper_blinded_product,
    prepare_templates,
    start_distance,
)
from pura.protocols.secure_min import (
    CompareLayout,
    finish_threshold,
    helper_compare,
    helper_threshold,
    secure_argmin,
    start_threshold,
)

STEP_BLINDED_PRODUCT = "paillier.blinded_product"
STEP_COMPARE = "paillier.compare_select"
STEP_THRESHOLD = "paillier.threshold"
STEPS = (STEP_BLINDED_PRODUCT, STEP_COMPARE, STEP_THRESHOLD)

#: Pool values A uses per candidate and query (masks, re-randomisation); refilled offline.
_POOL_PER_CANDIDATE = 8


class HelperChannel(Protocol):
    """What A can ask of B. Implementations: :class:`ServerB` itself, :class:`BytesChannel`."""

    def blinded_product(self, request: BlindedProductRequest) -> BlindedProductReply: ...

    def compare_select(self, request: CompareRequest) -> CompareReply: ...

    def threshold_decide(self, request: ThresholdRequest) -> ThresholdReply: ...


@dataclass(frozen=True)
class ExactConfig:
    """Layouts both servers must agree on (derived from key, dimension, scale, κ)."""

    template: TemplateLayout
    compare: CompareLayout

    @classmethod
    def for_key(
        cls,
        key: PublicKey,
        dim: int = 128,
        scale_bits: int = 11,
        kappa: int = STATISTICAL_SECURITY_BITS,
    ) -> ExactConfig:
        template = TemplateLayout.for_key(key, dim, scale_bits, kappa)
        return cls(template, CompareLayout.for_key(key, template.dist_bits, kappa))


def threshold_units(squared_distance: float, scale_bits: int) -> int:
    """Float threshold on ``‖x − y‖²`` (unit vectors) → the integer scale of ``D`` (``4^s``)."""
    if not 0.0 <= squared_distance <= 4.0:
        raise ParameterError("a squared distance of unit vectors lies in [0, 4]")
    return int(squared_distance * float(1 << (2 * scale_bits)))


class ServerB:
    """The decryption helper: holds share 2, answers the three steps, keeps no per-query state."""

    def __init__(
        self,
        share: KeyShare,
        config: ExactConfig,
        pool: RandomnessPool | None = None,
        engine: LocalEngine = SERIAL,
    ) -> None:
        if share.index != 2:
            raise ParameterError("server B must hold key share 2")
        self.share = share
        self.key = share.public_key
        self.config = config
        self.pool = pool if pool is not None else RandomnessPool(self.key)
        self.engine = engine

    def __repr__(self) -> str:
        return f"ServerB(key={self.key.key_id})"

    def blinded_product(self, request: BlindedProductRequest) -> BlindedProductReply:
        return helper_blinded_product(request, self.config.template, self.share, self.pool,
                                      self.engine)

    def compare_select(self, request: CompareRequest) -> CompareReply:
        return helper_compare(request, self.config.compare, self.share, self.pool, self.engine)

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
            STEP_THRESHOLD: lambda b: self.threshold_decide(
                ThresholdRequest.from_bytes(key, b)).to_bytes(),
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

    def threshold_decide(self, request: ThresholdRequest) -> ThresholdReply:
        raw = self._exchange(STEP_THRESHOLD, request.to_bytes())
        return ThresholdReply.from_bytes(self.key, raw)


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
        """Offline step between queries: precompute pool values for a query of ``candidates``."""
        want = _POOL_PER_CANDIDATE * candidates + 8
        if len(self.pool) < want:
            self.pool.refill(want - len(self.pool))
        want_masks = self.config.template.cts_per_template * candidates
        if len(self.masks) < want_masks:
            self.masks.refill(want_masks - len(self.masks))

    def prepare(self, templates: Sequence[PaillierTemplate]) -> list[PreparedTemplate]:
        """Offline, per stored template: A's partial decryptions (keeps them off the query path)."""
        return prepare_templates(templates, self.share, self.engine)

    def match(
        self,
        query: PaillierQuery,
        candidates: Sequence[tuple[str, PaillierTemplate | PreparedTemplate]],
        tau: int,
    ) -> MatchResult:
        """Exact stage: is the nearest candidate within ``tau`` (integer units of D)? Which one?"""
        if not candidates:
            return MatchResult(False)
        order = list(candidates)
        self.rng.shuffle(order)
        state, request = start_distance(
            query, [t for _, t in order], self.config.template, self.masks, self.engine, self.rng
        )
        distances = finish_distance(state, self.channel.blinded_product(request))
        entries = [(d, self.key.encrypt(j, self.pool)) for j, d in enumerate(distances)]
        d_min, i_min = secure_argmin(
            entries, self.config.compare, self.share, self.pool, self.channel.compare_select,
            self.engine, self.rng,
        )
        t_state, t_request = start_threshold(
            d_min, i_min, tau, self.config.compare, self.share, self.pool, self.rng
        )
        decision = finish_threshold(t_state, self.channel.threshold_decide(t_request), self.share)
        if not decision.matched:
            return MatchResult(False)
        if decision.index is None or not 0 <= decision.index < len(order):
            raise ProtocolError("opened index lies outside the candidate list")
        return MatchResult(True, order[decision.index][0])

    def verify(
        self,
        query: PaillierQuery,
        subject: str,
        templates: Sequence[PaillierTemplate | PreparedTemplate],
        tau: int,
    ) -> bool:
        """1:1: does the query match any of ``subject``'s templates within ``tau``?"""
        return self.match(query, [(subject, t) for t in templates], tau).matched


__all__ = [
    "STEPS",
    "STEP_BLINDED_PRODUCT",
    "STEP_COMPARE",
    "STEP_THRESHOLD",
    "BytesChannel",
    "ChannelStats",
    "ExactConfig",
    "HelperChannel",
    "MatchResult",
    "ServerA",
    "ServerB",
    "threshold_units",
]
