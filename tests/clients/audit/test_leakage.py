"""Leakage statistics on known inputs, and the leakage audit of a recorded run of real servers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from pura_client.audit.leakage import (
    LeakageInputs,
    auc,
    canary_hits,
    canary_patterns,
    file_chunks,
    position_bins,
    residue_test,
    run_leakage,
    view_statistic,
)
from pura_client.audit.recorded import RecordedRun

from pura.protocols.steps import Step


def test_position_bins_uniform_and_skewed() -> None:
    uniform = position_bins(list(range(0, 4096, 16)), 4096, bins=16)
    assert uniform.statistic == 0.0 and uniform.p_value == pytest.approx(1.0)
    skewed = position_bins([5] * 200, 4096, bins=16)
    assert skewed.p_value < 1e-10


def test_residue_test_detects_unmasked_values() -> None:
    rng = np.random.default_rng(0)
    masked = [int(x) for x in rng.integers(0, 1 << 52, 5000)]
    assert residue_test(masked, 11).p_value > 1e-3
    unmasked = [int(x) + (1 << 11) for x in rng.normal(0, 150, 5000).round()]
    assert residue_test(unmasked, 11).p_value < 1e-10


def test_view_statistic_and_auc() -> None:
    assert view_statistic(np.array([0.0, 1.0, 2.0, 10.0])) == pytest.approx(8.0 / 0.5)
    assert auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auc([1.0], [1.0]) == 0.5
    assert auc([], [1.0]) == 0.5


def test_canaries_found_only_where_present() -> None:
    q = np.array([5, -7, 300, 2, 9], dtype=np.int64)
    f = np.array([[0.125, -0.5, 0.25, 0.75]])
    patterns = canary_patterns([q], f)
    leak = b"hdr" + q[:4].astype("<i4").tobytes() + b"tail"
    clean = bytes(range(256))
    assert canary_hits([clean], patterns) == 0
    assert canary_hits([clean, leak], patterns) == 1
    wide = b"x" * 5 + q[:4].astype("<i8").tobytes() + f[0, :2].astype("<f8").tobytes()
    assert canary_hits([wide], patterns) == 2
    assert canary_hits([b"\x00" * 4096], patterns) == 0


def test_canary_scan_of_a_file_sees_patterns_across_chunk_borders(tmp_path: Path) -> None:
    pattern = bytes(range(1, 33))
    path = tmp_path / "blobs.bin"
    path.write_bytes(b"\xaa" * 1000 + pattern + b"\xbb" * 1000)
    assert canary_hits(file_chunks(path, size=1010), [pattern]) == 1  # split at byte 10
    assert canary_hits(file_chunks(path, size=1010), [pattern[::-1]]) == 0


def test_position_bins_per_view_size() -> None:
    """Views grow with the gallery: a position is binned as a fraction of its own view."""
    even = position_bins([0, 1024, 2048, 3072, 0, 2048], [4096, 4096, 4096, 4096, 8192, 8192],
                         bins=4)
    assert even.counts.tolist() == [2, 2, 1, 1]  # 2048 of 8192 is in the second quarter


@pytest.mark.lfw
@pytest.mark.slow
def test_leakage_of_the_recorded_servers(recorded_run: RecordedRun, tmp_path: Path) -> None:
    inputs = LeakageInputs.of(recorded_run)
    assert len(inputs.mated) + len(inputs.nonmated) == len(recorded_run.run.probes)
    # B's exact-stage view: one row of `dim` masked values per candidate of every query
    dim = recorded_run.params.encoding.dim
    assert len(inputs.masked) == dim * sum(len(q.candidates) for q in recorded_run.queries)
    assert min(inputs.masked) >= 0
    placed = [q for q in inputs.mated if q.mate_position is not None]
    assert placed and all(0 <= q.mate_position < q.b_total for q in placed)  # type: ignore[operator]
    result = run_leakage(inputs, tmp_path)
    assert result.metrics["canary_hits"] == 0
    steps = {row["step"] for row in result.tables["recorded A↔B traffic"]}
    assert {Step.PRESELECT, Step.BLINDED_PRODUCT, Step.REFRESH} <= steps
    assert (tmp_path / "leakage.png").exists()
    assert result.metrics["scanned_bytes"] >= result.metrics["recorded_bytes"]  # type: ignore[operator]
    # the scan is live: a payload carrying an enrolled template's integers is found
    leak = tmp_path / "leak.bin"
    leak.write_bytes(b"hdr" + recorded_run.quantised(recorded_run.faces.enrolled[3])[:4]
                     .astype("<i4").tobytes())
    leaky = dataclasses.replace(inputs, payload_files=[*inputs.payload_files, leak])
    assert run_leakage(leaky, tmp_path).metrics["canary_hits"] == 1
