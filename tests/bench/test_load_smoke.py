"""bench/load.py against real servers (separate processes, mTLS, loopback): answers checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.load import run_load


@pytest.mark.slow
def test_load_tiny(tmp_path: Path) -> None:
    summary = run_load(clients=2, seconds=2.0, people=4, out=tmp_path)
    assert summary["queries"] >= 2
    assert summary["wrong_answers"] == 0 and summary["rpc_errors"] == []
    assert summary["p99_s"] >= summary["p50_s"] > 0
    assert json.loads((tmp_path / "load.json").read_text())["queries"] == summary["queries"]
