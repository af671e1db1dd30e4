"""Load benchmark: N concurrent identification clients against real servers A and B.

What runs: the product itself. Keys (``generate_key_set``), a demo PKI (mTLS), server B then
server A as separate ``pura serve`` processes on free loopback ports (``pura.demo.start_pair``),
a collection with an explicit threshold, ``people`` face-like synthetic subjects enrolled with
``BulkEnroll``; then ``clients`` threads, each with its own TLS channel and identifier
certificate, send identifications (mated and non-mated probes, alternately) until the time is
up. Every answer is compared with the plaintext answer on the same vectors; the summary reports
p50/p99 latency (client encryption + RPC + both servers), queries per second, and wrong answers.

Bounded by construction: the loop stops at ``seconds`` (a query already in flight finishes), the
servers listen on 127.0.0.1 only and are stopped in a ``finally``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import FloatArray, face_like_gallery, plaintext_answer, synthetic_probes
from bench.service import service_pair
from bench.timing import machine_info
from pura.protocols.identify import threshold_units

THRESHOLD_SQ = 0.6
COLLECTION = "load"


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    wrong: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _worker(
    make_client: Any, probes: FloatArray, expected: list[str | None], deadline: float,
    tally: _Tally, offset: int,
) -> None:
    client = make_client()
    try:
        i = offset
        while time.monotonic() < deadline:
            j = i % len(probes)
            start = time.perf_counter()
            try:
                decision = client.identify(probes[j])
            except Exception as exc:  # a failed RPC is counted and reported, not hidden
                with tally.lock:
                    tally.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                i += 1
                continue
            elapsed = time.perf_counter() - start
            with tally.lock:
                tally.latencies.append(elapsed)
                tally.wrong += int(decision.subject != expected[j])
            i += 1
    finally:
        client.close()


def run_load(
    clients: int, seconds: float, people: int, out: Path, *, profile: str = "fast", seed: int = 0
) -> dict[str, Any]:
    """Start servers, enrol, hammer, check, stop; write ``out/load.json``; return the summary."""
    from pura_client.encryptor import Encryptor

    labels = [f"subject-{i:05d}" for i in range(people)]
    with service_pair(profile, budget=1_000_000, prefix="pura-load-") as pair:
        pca = pair.pca
        gallery = face_like_gallery(people, pca.mean, pca.cov, pca.matrix, seed=seed)
        probe_set = synthetic_probes(gallery, people, max(1, people // 2), seed=seed + 1)
        expected: list[str | None] = []
        for vec in probe_set.vectors:
            row = plaintext_answer(gallery, vec, THRESHOLD_SQ)
            expected.append(labels[row] if row >= 0 else None)
        one = Encryptor(pair.trusted, pca).query(probe_set.vectors[0])  # what a client uploads
        upload = {"paillier": len(one.paillier), "ckks_head": len(one.ckks_head),
                  "total": len(one.paillier) + len(one.ckks_head)}
        with pair.connect("admin", COLLECTION) as admin:
            admin.create_collection(
                threshold=threshold_units(THRESHOLD_SQ, pair.params.encoding.scale_bits))
        with pair.connect("enroller", COLLECTION) as enroller:
            enroller.bulk_enroll([(labels[i], gallery[i], uuid.uuid4().hex)
                                  for i in range(people)])
        tally = _Tally()
        deadline = time.monotonic() + seconds
        started = time.perf_counter()
        threads = [
            threading.Thread(target=_worker, args=(
                lambda: pair.connect("identifier", COLLECTION), probe_set.vectors, expected,
                deadline, tally, k * 7))
            for k in range(clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
    lat = np.array(tally.latencies) if tally.latencies else np.array([np.nan])
    summary: dict[str, Any] = {
        "clients": clients, "seconds": seconds, "people": people, "profile": profile,
        "queries": len(tally.latencies), "queries_per_s": len(tally.latencies) / wall,
        "p50_s": float(np.percentile(lat, 50)), "p99_s": float(np.percentile(lat, 99)),
        "wrong_answers": tally.wrong + len(tally.errors), "rpc_errors": tally.errors[:10],
        "query_upload_bytes": upload,
        "threshold_sq_distance": THRESHOLD_SQ, "machine": machine_info(),
        "note": "servers, clients and load generator share the same 2 cores",
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
