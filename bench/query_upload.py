"""What a client uploads per query, and what it costs both ends: ``python -m bench.query_upload``.

Before the diagonal layout a query head was ``m`` broadcast CKKS ciphertexts (ciphertext ``i``
held ``x_i`` in every slot). Now it is ONE ciphertext with the head repeated over the slots,
which A expands with ``m − 1`` rotations (:meth:`pura.crypto.ckks.CKKSContext.expand_query`).
Both are measured here in one process with the product's context: the old format as ``m``
encryptions of constant vectors (the same ciphertexts ``encrypt_broadcast`` made), the new one
with the client's ``encrypt_query``. CPU time (``time.process_time``), so the figures hold on a
machine whose cores are shared; the score of one block against the expanded query is checked
against plaintext, with the block in the product's layout (``encrypt_block`` rows).

Writes ``OUT/query_upload.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from bench.timing import machine_info
from pura.crypto.ckks import CKKSContext, diagonal_rows
from pura.crypto.params import get_preset

T = TypeVar("T")


def _cpu(fn: Callable[[], T], reps: int) -> tuple[float, T]:
    times, out = [], None
    for _ in range(reps):
        t0 = time.process_time()
        out = fn()
        times.append(time.process_time() - t0)
    assert out is not None
    return float(np.median(times)), out


def measure(preset: str = "default", reps: int = 5, seed: int = 0) -> dict[str, Any]:
    params = get_preset(preset)
    m = params.encoding.head_dim
    secret = CKKSContext.generate(params.ckks)
    a_side, client = secret.public(), secret.public(with_galois_keys=False)
    n = a_side.slot_count
    rng = np.random.default_rng(seed)
    heads = rng.standard_normal((n, m))
    heads /= np.linalg.norm(heads, axis=1, keepdims=True)
    x = heads[5] + 0.1 * rng.standard_normal(m)
    x /= np.linalg.norm(x)
    enc_old, old = _cpu(lambda: [client.ciphertext_to_bytes(client.encrypt_vector(np.full(n, v)))
                                 for v in x], reps)
    parse_old, _ = _cpu(lambda: [a_side.ciphertext_from_bytes(b) for b in old], reps)
    enc_new, new = _cpu(lambda: client.ciphertext_to_bytes(client.encrypt_query(x)), reps)
    parse_new, rows = _cpu(lambda: a_side.expand_query(a_side.ciphertext_from_bytes(new), m), reps)
    block = [a_side.encrypt_vector(row) for row in diagonal_rows(heads)]
    score_s, score = _cpu(lambda: a_side.score_block(rows, block), reps)
    error = float(np.max(np.abs(secret.decrypt(score) - heads @ x)))
    return {
        "preset": preset, "head_dim": m, "slots": n, "reps": reps,
        "bytes_before": sum(map(len, old)), "bytes_after": len(new),
        "client_encrypt_cpu_s_before": enc_old, "client_encrypt_cpu_s_after": enc_new,
        "a_parse_cpu_s_before": parse_old, "a_parse_and_expand_cpu_s_after": parse_new,
        "score_one_block_cpu_s": score_s, "max_abs_score_error": error,
        "machine": machine_info(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    result = measure(args.preset, args.reps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "query_upload.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
