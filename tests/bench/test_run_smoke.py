"""End-to-end smoke test of ``python -m bench run`` at a tiny size (answers checked, no timing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main


@pytest.mark.slow  # the whole benchmark run, baselines and plots: ~3 min on 2 cores
def test_bench_run_tiny(tmp_path: Path, capsys: object) -> None:
    out = tmp_path / "results"
    code = main(["run", "--sizes", "40", "--out", str(out), "--preset", "fast",
                 "--repetitions", "1", "--baseline3-templates", "2", "--engine-workers", "2"])
    assert code == 0
    result = json.loads((out / "results.json").read_text(encoding="utf-8"))
    pura = result["sizes"]["40"]["pura"]
    assert pura["answers_correct"] == pura["answers_checked"] == 3
    assert set(pura["stages_median_s"]) == {"client_encrypt", "preselect_a", "preselect_b",
                                            "admit_query", "exact", "server", "total",
                                            "cpu_server", "cpu_exact"}
    stages = pura["stages_median_s"]
    # admission overlaps preselection, so the server's wall time is at most the stages' sum
    assert stages["server"] <= (stages["preselect_a"] + stages["preselect_b"]
                                + stages["admit_query"] + stages["exact"]) + 0.05
    assert stages["server"] >= stages["exact"]
    assert pura["bytes_per_query_client_to_a"] > 0 and pura["a_b_rounds"] >= 3
    assert result["baseline2"]["verified_against_plaintext"] is True
    assert result["baseline3"]["verified_against_plaintext"] is True
    assert set(result["ratios"]["40"]) == {"speedup_vs_baseline2", "speedup_vs_baseline3",
                                           "slowdown_vs_faiss"}
    assert result["parameters"]["paillier"]["modulus_bits"] == 2048
    for png in ("latency_vs_size.png", "speedups.png", "stages.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list(out.glob("results-*.json"))) == 1


def test_pura_only_run_counts_cpu(tmp_path: Path) -> None:
    """``python -m bench.run``: the Pura path alone, answers checked, CPU beside wall time (the
    exact stage's CPU is part of the server's, and both are real work, not zero)."""
    from bench.run import run_pura_only

    result = run_pura_only([40], tmp_path, repetitions=1, preset="fast", engine_workers=1)
    pura = result["sizes"]["40"]["pura"]
    assert pura["answers_correct"] == pura["answers_checked"] == 3
    stages = pura["stages_median_s"]
    assert 0.0 < stages["cpu_exact"] <= stages["cpu_server"] + 0.01
    assert json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["pura_only"]
