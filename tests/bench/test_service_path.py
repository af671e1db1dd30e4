"""bench/service.py: the service path of ``bench run`` against real ``pura serve`` A and B."""

from __future__ import annotations

import pytest

from bench.service import measure_service


@pytest.mark.slow
def test_service_path_answers_equal_plaintext_and_reports_both_servers() -> None:
    """8 people (beyond top_k, so preselection runs), 4 identifications over mTLS."""
    out = measure_service([8], profile="fast", queries=4, seed=3, log=lambda _: None)
    row = out["sizes"]["8"]
    assert row["enrolled"] == 8 and row["queries"] == 4
    assert row["wrong_answers"] == 0
    assert row["p99_s"] >= row["p50_s"] > row["client_encrypt_median_s"] > 0
    assert row["cpu_s_per_query_a"] > 0 and row["cpu_s_per_query_b"] > 0
    # one CKKS ciphertext (~235 KB) plus the packed Paillier query: far below the old 15 MB
    assert 200_000 < row["query_upload_bytes"] < 400_000
