"""``pura-audit views --quick`` end to end: real ``pura serve`` processes, real LFW, recordings,
every key of ``views.json`` (slow: several minutes on two cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pura_client.audit.views import TARGETS, ViewsConfig, run_views
from pura_client.datasets.lfw import LFWDataset

from pura.errors import ConfigError

KEYS = ["a_nearest_top1", "a_nearest_chance", "b_slot_alignment", "b_subspace_cosine",
        "b_subspace_cosine_random", "b_match_auc", "wolf_capture", "servers"]


@pytest.mark.slow
def test_views_quick_end_to_end(tmp_path: Path) -> None:
    try:
        LFWDataset.open()
    except ConfigError:
        pytest.skip("LFW not available")
    figures = run_views(tmp_path, ViewsConfig.quick())
    written = json.loads((tmp_path / "views.json").read_text())
    for key in KEYS:
        assert key in written, key
    assert (tmp_path / "index.html").exists()
    assert all("--record" in cmd for cmd in written["servers"])
    assert {"--role b", "--role a"} <= {" ".join(c.split()[4:6]) for c in written["servers"]}
    # the servers answered like a face identification system, so the views are real ones
    assert figures["settings"]["mated_answered_right"] > 0.5
    assert figures["settings"]["nonmated_no_match"] > 0.5
    assert figures["a_nearest_chance"] == pytest.approx(1 / 301)
    assert set(figures["verdicts"]) == set(TARGETS)
