"""bench/query_upload.py: one query ciphertext instead of m, and its score still exact."""

from __future__ import annotations

from bench.query_upload import measure


def test_one_ciphertext_replaces_the_broadcast_head() -> None:
    result = measure("default", reps=1)
    m = result["head_dim"]
    # m ciphertexts before, one after (the same size each: work-level CKKS 8192)
    after = result["bytes_after"]
    assert (m - 2) * after < result["bytes_before"] < (m + 2) * after
    assert result["max_abs_score_error"] < 1e-5
