"""The service as users run it: real ``pura serve`` A and B, mTLS, BulkEnroll, Identify over gRPC.

:func:`service_pair` starts what a deployment runs (keys from ``generate_key_set``, a demo PKI,
server B then server A as separate processes on free loopback ports, ``pura.demo.start_pair``)
and hands out connected clients. ``bench run --service-sizes`` (:func:`measure_service`),
``bench enroll`` and ``bench load`` all start their servers through it, so that the three
measure the same thing.

:func:`measure_service` enrols a face-like gallery through ``BulkEnroll`` and sends
identifications one at a time, as an identification client would: per query the client's
encryption, the RPC and both servers' work are inside the latency, and the CPU seconds of each
server process (its ``/proc`` user + system time, children included) are read around every
call. A's background work (randomness-pool refills) falls inside those windows and is counted:
it is part of what a query costs. Every answer is compared with plaintext 1:N.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import face_like_gallery, plaintext_answer, synthetic_probes
from pura.certs import make_demo_pki
from pura.crypto.encoding import PCARotation
from pura.crypto.params import ParameterSet, get_preset
from pura.keys import PublicKeys, generate_key_set, load_public_keys
from pura.protocols.identify import threshold_units

_TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid``, its reaped children and its live descendants."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = sum(int(v) for v in fields[11:15]) / _TICKS
    return own + sum(cpu_seconds(c) for c in _children(pid))


@dataclass
class ServicePair:
    """Running servers A and B of one benchmark, and what a client needs to reach them."""

    work: Path
    params: ParameterSet
    pca: PCARotation
    trusted: PublicKeys
    a: Any  # pura.demo.ServerProcess
    b: Any
    keygen_s: float = 0.0

    def connect(self, cert: str, collection: str) -> Any:
        """A client of ``collection`` with the demo PKI's ``cert`` (admin, enroller, ...)."""
        from pura_client.client import PuraClient

        return PuraClient.connect(f"localhost:{self.a.port}", collection,
                                  tls_dir=self.work / "tls", cert_name=cert, pca=self.pca,
                                  trusted_keys=self.trusted)

    def cpu(self) -> tuple[float, float]:
        """CPU seconds used so far by A and by B (processes and their workers)."""
        return cpu_seconds(self.a.proc.pid), cpu_seconds(self.b.proc.pid)


@contextmanager
def service_pair(
    profile: str, *, bulk_batch: int = 16, budget: int = 1_000_000, workers: int = 1,
    prefix: str = "pura-bench-",
) -> Iterator[ServicePair]:
    """Keys, PKI and the two server processes in a temporary directory; stopped on exit."""
    from pura.demo import start_pair
    from pura.service.run import load_pca

    params = get_preset(profile)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        generate_key_set(work / "keys", params)
        keygen_s = time.perf_counter() - t0
        make_demo_pki(work / "tls")
        pca = load_pca(work / "keys" / "public", params.encoding.model_id)
        a, b = start_pair(work, bulk_batch=bulk_batch, budget=budget, workers=workers)
        try:
            yield ServicePair(work, params, pca, load_public_keys(work / "keys" / "public"), a, b,
                              keygen_s)
        finally:
            a.stop()
            b.stop()


def measure_service(
    sizes: list[int], *, profile: str = "default", queries: int = 20, seed: int = 0,
    threshold_sq: float = 0.6, log: Any = print,
) -> dict[str, Any]:
    """Per gallery size: BulkEnroll rate, then ``queries`` identifications (half mated) with
    p50 / p99 latency, CPU seconds per query at A and B, and answers checked against plaintext."""
    out: dict[str, Any] = {"profile": profile, "queries_per_size": queries, "sizes": {}}
    for n in sizes:
        log(f"service path, {n} people: servers, BulkEnroll, {queries} identifications")
        with service_pair(profile, prefix=f"pura-bench-svc{n}-") as pair:
            out["sizes"][str(n)] = _one_size(pair, n, queries, seed, threshold_sq)
    return out


def _one_size(
    pair: ServicePair, n: int, queries: int, seed: int, threshold_sq: float
) -> dict[str, Any]:
    pca = pair.pca
    gallery = face_like_gallery(n, pca.mean, pca.cov, pca.matrix, seed=seed)
    probes = synthetic_probes(gallery, queries - queries // 2, queries // 2, seed=seed + 1)
    labels = [f"subject-{i:06d}" for i in range(n)]
    expected = [labels[r] if (r := plaintext_answer(gallery, v, threshold_sq)) >= 0 else None
                for v in probes.vectors]
    collection = f"svc{n}"
    with pair.connect("admin", collection) as admin:
        admin.create_collection(
            threshold=threshold_units(threshold_sq, pair.params.encoding.scale_bits))
    cpu0 = pair.cpu()
    t0 = time.perf_counter()
    with pair.connect("enroller", collection) as enroller:
        statuses = enroller.bulk_enroll([(labels[i], gallery[i], uuid.uuid4().hex)
                                         for i in range(n)])
    enrol_s = time.perf_counter() - t0
    enrol_cpu = np.subtract(pair.cpu(), cpu0)
    enrolled = sum(s.code == "enrolled" for s in statuses)
    latencies, cpu_a, cpu_b, encrypt, wrong = [], [], [], [], 0
    with pair.connect("identifier", collection) as client:
        client.identify(probes.vectors[0])  # warm: channel, key pins, parsed blocks
        for vec, want in zip(probes.vectors, expected, strict=True):
            e0 = time.perf_counter()
            parts = client.encryptor().query(vec)
            encrypt.append(time.perf_counter() - e0)
            before = pair.cpu()
            start = time.perf_counter()
            decision = client.identify_encrypted(parts)
            latencies.append(time.perf_counter() - start + encrypt[-1])
            after = pair.cpu()
            cpu_a.append(after[0] - before[0])
            cpu_b.append(after[1] - before[1])
            wrong += int(decision.subject != want)
    lat = np.asarray(latencies)
    return {
        "enrolled": enrolled, "enrol_s": round(enrol_s, 2),
        "enrol_templates_per_s": round(enrolled / enrol_s, 3),
        "enrol_cpu_s_per_template_a": round(float(enrol_cpu[0]) / max(1, enrolled), 4),
        "enrol_cpu_s_per_template_b": round(float(enrol_cpu[1]) / max(1, enrolled), 4),
        "queries": len(latencies), "wrong_answers": wrong,
        "p50_s": float(np.percentile(lat, 50)), "p99_s": float(np.percentile(lat, 99)),
        "mean_s": float(lat.mean()),
        "client_encrypt_median_s": float(np.median(encrypt)),
        "cpu_s_per_query_a": float(np.median(cpu_a)), "cpu_s_per_query_b": float(np.median(cpu_b)),
        "query_upload_bytes": len(parts.paillier) + len(parts.ckks_head),
    }


__all__ = ["ServicePair", "cpu_seconds", "measure_service", "service_pair"]
