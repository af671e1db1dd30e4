"""``python -m bench enroll``: CPU accounting (fast), one tiny run against real servers (slow)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from bench.enroll import cpu_seconds, run_enroll


def test_cpu_seconds_grows_with_work() -> None:
    before = cpu_seconds(os.getpid())
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    assert cpu_seconds(os.getpid()) - before >= 0.2


def test_cpu_seconds_of_a_missing_process_is_zero() -> None:
    assert cpu_seconds(2**22 + 12345) == 0.0


@pytest.mark.slow
def test_enroll_bench_against_real_servers(tmp_path: Path) -> None:
    summary = run_enroll(3, tmp_path, profile="fast", bulk_batch=2, stages=2)
    written = json.loads((tmp_path / "enroll.json").read_text())
    assert written["enrolled"] == 3 == summary["enrolled"] and written["rejected"] == 0
    assert written["cpu_s_per_template_a"] > 0 and written["cpu_s_per_template_b"] > 0
    assert written["upload_bytes_per_template"] > 0
    assert set(written["in_process_stage_cpu_s_per_template"]) >= {
        "client_seal", "a_mask_batch_check", "b_open_cross_terms_reencrypt", "b_derive_heads"}
    assert set(written["in_process_stage_cpu_s_per_template_packed_upload"]) >= {
        "a_round1_mask_partial", "b_round1_decrypt_check_reencrypt"}
