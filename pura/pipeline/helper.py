"""Server B's side of the pipeline: the table of helper steps B answers.

One table for the server (:class:`pura.service.nodes.NodeB`), the benchmarks and the audit, so
that every caller exercises the same B.
"""

from __future__ import annotations

from collections.abc import Callable

from pura.crypto.ckks import CKKSContext
from pura.errors import ProtocolError
from pura.pipeline.channel import HelperCall
from pura.protocols import refresh
from pura.protocols.identify import ServerB
from pura.protocols.preselect import PreselectRequest, answer_preselect
from pura.protocols.steps import Step

StepHandler = Callable[[bytes], bytes]


def helper_steps(server_b: ServerB, ckks_secret: CKKSContext) -> dict[str, StepHandler]:
    """``step -> (request bytes -> reply bytes)``: the Paillier steps of ``server_b`` and the
    CKKS steps answered with the CKKS secret key."""

    def refresh_step(payload: bytes) -> bytes:
        request = refresh.RefreshRequest.from_bytes(payload)
        return refresh.answer_refresh(ckks_secret, request).to_bytes()

    def preselect_step(payload: bytes) -> bytes:
        return answer_preselect(ckks_secret, PreselectRequest.from_bytes(payload)).to_bytes()

    steps = dict(server_b.handlers())
    steps[Step.REFRESH] = refresh_step
    steps[Step.PRESELECT] = preselect_step
    return steps


def loopback(steps: dict[str, StepHandler]) -> HelperCall:
    """In-process A → B calls through the byte encodings (tests, bench, audit)."""

    def call(step: str, payload: bytes) -> bytes:
        handler = steps.get(step)
        if handler is None:
            raise ProtocolError(f"unknown helper step {step!r}")
        return handler(payload)

    return call


__all__ = ["StepHandler", "helper_steps", "loopback"]
