"""The one wire between A and B, as the pipeline sees it: ``call(step, payload) -> reply``.

Every A→B exchange of the pipeline goes through one :class:`HelperChannel`, Paillier and CKKS
steps alike, so that byte and round counts are complete and so that an auditor can record
exactly what a running server sent and received (:class:`Recorder`). The channel knows nothing
of gRPC: the service hands it a function that makes the RPC, tests a loopback.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pura.crypto.paillier import PublicKey
from pura.protocols.identify import BytesChannel, ChannelStats
from pura.protocols.steps import Step
from pura.protocols.tickets import strip

HelperCall = Callable[[str, bytes], bytes]
"""``(step, request bytes) -> reply bytes``: one A→B round trip."""


@dataclass(frozen=True)
class Exchange:
    """One recorded round trip, as A saw it on the wire."""

    step: str
    request: bytes
    reply: bytes
    seconds: float


class Recorder(abc.ABC):
    """Sink for recorded exchanges (the audit writes them to disk; tests keep them in memory)."""

    @abc.abstractmethod
    def record(self, exchange: Exchange) -> None:
        """Keep one exchange."""


@dataclass
class MemoryRecorder(Recorder):
    """Keeps every exchange in order (tests, in-process audit)."""

    exchanges: list[Exchange] = field(default_factory=list)

    def record(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)


@dataclass
class StepStats:
    """Per-step rounds and bytes (request + reply)."""

    rounds: int = 0
    bytes_to_b: int = 0
    bytes_from_b: int = 0


class HelperChannel:
    """Counts, optionally records, and forwards every A→B call.

    Thread-safe: the query's admission runs on a thread beside preselection.
    """

    def __init__(
        self, call: HelperCall, recorder: Recorder | None = None, *, ticketed: bool = False
    ) -> None:
        self._call = call
        self.recorder = recorder
        #: B takes per-query tickets (a :class:`~pura.protocols.helper_guard.HelperGuard` in
        #: front of its steps, as every :class:`~pura.service.nodes.NodeB` has).
        self.ticketed = ticketed
        self._lock = threading.Lock()
        self.per_step: dict[str, StepStats] = {}

    def __call__(self, step: str, payload: bytes) -> bytes:
        started = time.perf_counter()
        reply = self._call(str(step), payload)
        elapsed = time.perf_counter() - started
        with self._lock:
            stats = self.per_step.setdefault(str(step), StepStats())
            stats.rounds += 1
            stats.bytes_to_b += len(payload)
            stats.bytes_from_b += len(reply)
        if self.recorder is not None:
            self.recorder.record(Exchange(str(step), strip(payload), reply, elapsed))
        return reply

    def paillier(self, key: PublicKey) -> BytesChannel:
        """The exact stage's typed channel over this wire (its own stats count Paillier steps;
        :meth:`totals` counts everything)."""
        return BytesChannel(key, self, ticketed=self.ticketed)

    def totals(self) -> ChannelStats:
        """Rounds and bytes over every step so far."""
        with self._lock:
            out = ChannelStats()
            for s in self.per_step.values():
                out.rounds += s.rounds
                out.bytes_to_b += s.bytes_to_b
                out.bytes_from_b += s.bytes_from_b
            return out

    def reset(self) -> None:
        with self._lock:
            self.per_step.clear()


def known_step(step: str) -> Step:
    """The :class:`Step` named ``step`` (raises ``ValueError`` for anything else)."""
    return Step(step)


__all__ = [
    "Exchange",
    "HelperCall",
    "HelperChannel",
    "MemoryRecorder",
    "Recorder",
    "StepStats",
    "known_step",
]
