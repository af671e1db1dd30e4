"""bench/query_upload.py: one query ciphertext instead of m, and its score still exact."""

from __future__ import annotations

from bench.query_upload import measure


def test_one_ciphertext_replaces_the_broadcast_head() -> None:
    result = measure("default", reps=1)
    assert result["head_dim"] == 64
    # 64 ciphertexts before, one after (the same size each: work-level CKKS 8192)
    assert 60 * result["bytes_after"] < result["bytes_before"] < 70 * result["bytes_after"]
    assert result["max_abs_score_error"] < 1e-5
