"""One wire: every step is counted and, when asked, recorded byte for byte."""

from __future__ import annotations

import pytest

from pura.errors import ProtocolError
from pura.pipeline import HelperChannel, MemoryRecorder
from pura.pipeline.helper import loopback
from pura.protocols.steps import Step


def test_counts_and_records_every_step() -> None:
    recorder = MemoryRecorder()
    wire = HelperChannel(loopback({Step.REFRESH: lambda b: b[::-1],
                                   Step.PRESELECT: lambda b: b + b}), recorder)
    assert wire(Step.REFRESH, b"abc") == b"cba"
    assert wire(Step.PRESELECT, b"xy") == b"xyxy"
    totals = wire.totals()
    assert (totals.rounds, totals.bytes_to_b, totals.bytes_from_b) == (2, 5, 7)
    assert [(e.step, e.request, e.reply) for e in recorder.exchanges] == [
        (Step.REFRESH, b"abc", b"cba"), (Step.PRESELECT, b"xy", b"xyxy")]
    assert wire.per_step[Step.PRESELECT].bytes_from_b == 4


def test_unknown_step_is_a_protocol_error() -> None:
    wire = HelperChannel(loopback({}))
    with pytest.raises(ProtocolError, match="unknown helper step"):
        wire("paillier.decrypt_anything", b"")


def test_step_names_are_unique() -> None:
    values = [s.value for s in Step]
    assert len(values) == len(set(values))
