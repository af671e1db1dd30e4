"""Service figures for the report: identification latency/throughput over real gRPC + TLS, and
per-stage times of server A's core in one process.

    python scripts/service_load.py load --workdir .pura/demo --clients 4 --queries 4
        (after `pura demo --workdir .pura/demo`: restarts A and B as processes on that directory,
         waits for the offline precomputation, runs N concurrent identifier clients)
    python scripts/service_load.py stages --profile default --templates 500
        (A and B cores in one process through the byte encodings: enrolment rate, preselection
         and exact-stage times with and without A's offline precomputation)

Probes are real LFW descriptors (the cached identification split's non-enrolled people, some of
whom the demo gallery may hold); the script counts answers naming another person.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def load(workdir: Path, clients: int, queries: int, warmup_s: float, workers: int) -> None:
    from pura_client.client import PuraClient
    from pura_client.datasets.embedded import embedded_identification_set

    from pura.crypto.encoding import load_shipped_pca
    from pura.demo import COLLECTION, start_pair
    from pura.keys import load_public_keys

    faces = embedded_identification_set(500, 0, n_non_enrolled=200)
    a, b = start_pair(workdir, workers=workers, budget=100_000)
    try:
        time.sleep(warmup_s)  # A's offline worker prepares stored templates after a restart
        trusted = load_public_keys(workdir / "keys" / "public")
        conns = [PuraClient.connect(f"localhost:{a.port}", COLLECTION, tls_dir=workdir / "tls",
                                    cert_name="identifier", pca=load_shipped_pca(),
                                    trusted_keys=trusted) for _ in range(clients)]
        picks = [[(i * queries + j) % 200 for j in range(queries)] for i in range(clients)]
        probes = [[conns[i].encryptor().query(faces.non_enrolled[k]) for k in row]
                  for i, row in enumerate(picks)]
        conns[0].identify_encrypted(probes[0][0])
        latencies: list[float] = []
        wrong = 0
        lock = threading.Lock()

        def run(i: int) -> None:
            nonlocal wrong
            for parts, k in zip(probes[i], picks[i], strict=True):
                t = time.perf_counter()
                decision = conns[i].identify_encrypted(parts)
                with lock:
                    latencies.append(time.perf_counter() - t)
                    wrong += decision.subject not in (None, faces.non_enrolled_labels[k])

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(run, range(clients)))
        total = time.perf_counter() - start
        latencies.sort()
        p90 = latencies[max(0, int(0.9 * len(latencies)) - 1)]
        print(f"{clients} clients x {queries} queries: {len(latencies) / total:.2f} queries/s, "
              f"p50 {statistics.median(latencies):.2f} s, p90 {p90:.2f} s "
              f"(Identify RPC, pre-encrypted probes); matches to another person: {wrong}")
    finally:
        a.stop()
        b.stop()


def stages(profile: str, templates: int) -> None:
    from pura_client.datasets.embedded import embedded_identification_set
    from pura_client.encryptor import Encryptor

    from pura.audit_log import AuditLog
    from pura.crypto.encoding import load_shipped_pca
    from pura.crypto.params import get_preset
    from pura.gallery.copies import CopyStore
    from pura.gallery.store import GalleryStore
    from pura.keys import generate_key_set, load_a_keys, load_b_keys, load_public_keys
    from pura.protocols.secure_distance import PreparedTemplate
    from pura.service.chunks import unpack_blobs
    from pura.service.nodes import NodeA, NodeB, QueryUpload, TemplateUpload, loopback

    faces = embedded_identification_set(500, 0, n_non_enrolled=200)
    n = min(templates, len(faces.gallery_labels))
    root = Path(tempfile.mkdtemp(prefix="pura-stages-"))
    params = get_preset(profile)
    generate_key_set(root / "k", params)
    pca = load_shipped_pca()
    node = NodeA(load_a_keys(root / "k" / "a"), GalleryStore(root / "a.db"),
                 AuditLog(root / "audit.jsonl"),
                 loopback(NodeB(load_b_keys(root / "k" / "b"), CopyStore(root / "b" / "c.db"))),
                 pca, rng=random.SystemRandom())
    node.create_collection("c")
    enc = Encryptor(load_public_keys(root / "k" / "public"), pca)
    model = params.encoding.model_id
    t = time.perf_counter()
    parts = [enc.template(faces.gallery[i]) for i in range(n)]
    t_enc = (time.perf_counter() - t) / n
    items = [TemplateUpload(faces.gallery_labels[i], f"r{i}", model, params.encoding.dim,
                            p.paillier, p.ckks_head) for i, p in enumerate(parts)]
    t = time.perf_counter()
    for k in range(0, n, 64):
        node.enroll("c", items[k:k + 64], "bench")
    rate = n / (time.perf_counter() - t)
    print(f"{profile}, {n} templates: client encryption {t_enc * 1000:.1f} ms/template, "
          f"server enrolment {rate:.1f} templates/s (batches of 64, block refresh with B)")
    coll = node.collection("c")
    cold, warm, pre, offline = [], [], [], []
    for v in faces.non_enrolled[:5]:
        q = enc.query(v)
        parsed = node._parse_query(coll, QueryUpload(model, params.encoding.dim, q.paillier,
                                                     q.ckks_head))
        head = unpack_blobs(q.ckks_head, what="query head")
        t0 = time.perf_counter()
        candidates = node.identifier.candidates(node._gallery("c"), head,
                                                node.candidates("c")).entries
        t1 = time.perf_counter()
        node.server_a.match(parsed, candidates, coll.threshold)
        t2 = time.perf_counter()
        plain = [c.template if isinstance(c, PreparedTemplate) else c for _, c in candidates]
        prepared = node.server_a.prepare(plain)
        node.server_a.refill(len(candidates))
        t3 = time.perf_counter()
        node.server_a.match(parsed, [(c[0], p) for c, p in zip(candidates, prepared, strict=True)],
                            coll.threshold)
        t4 = time.perf_counter()
        pre.append(t1 - t0)
        cold.append(t2 - t1)
        offline.append(t3 - t2)
        warm.append(t4 - t3)
    med = statistics.median
    print(f"preselection {med(pre):.3f} s; exact stage (k={node.top_k}) {med(cold):.3f} s "
          f"without / {med(warm):.3f} s with A's offline precomputation ({med(offline):.3f} s "
          f"offline per query)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_load = sub.add_parser("load")
    p_load.add_argument("--workdir", type=Path, default=Path(".pura/demo"))
    p_load.add_argument("--clients", type=int, default=4)
    p_load.add_argument("--queries", type=int, default=4)
    p_load.add_argument("--warmup", type=float, default=60.0)
    p_load.add_argument("--workers", type=int, default=1)
    p_stages = sub.add_parser("stages")
    p_stages.add_argument("--profile", default="default")
    p_stages.add_argument("--templates", type=int, default=500)
    args = parser.parse_args()
    if args.cmd == "load":
        load(args.workdir, args.clients, args.queries, args.warmup, args.workers)
    else:
        stages(args.profile, args.templates)


if __name__ == "__main__":
    main()
