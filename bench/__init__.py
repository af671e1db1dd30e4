"""Pura benchmarks against the anchors (issue 5): ``python -m bench run --sizes 1000,10000``.

Every path runs in one process on the same gallery: Pura end to end and per stage, baseline 2
(unpacked threshold Paillier, the Pura paper's path), baseline 3 (unpacked per-template CKKS, the
PFIP-style path), plaintext FAISS, Ray shard scaling, and a load benchmark against real servers.
Results are JSON + PNG in ``bench/results/``; see ``bench/README.md``.
"""
