"""The exact stage's cost against the embedding dimension (issue 15: d = 512 against d = 128).

``python -m bench.exact_dim [--dims 128,192,512] [--paillier default|fast] [--queries 5]
[--out bench/results/exact_dim.json]``

For each ``d``: a key set whose encoding has ``dim = d`` (model id: SFace's at d = 128, EdgeFace
XS's otherwise; head_dim 64 for every ``d``, so preselection is the same), server A and B in one
process (``NodeA``/``NodeB`` over the loopback helper: the product pipeline, every message
serialised), a gallery of 16 seeded
unit vectors enrolled through ``NodeA.enroll`` (the exact stage sees ``top_k = 6`` candidates
whatever the gallery size), then ``--queries`` identifications of noisy gallery rows. Reported per
``d``: median wall seconds of the query's admission (A and B check the packed Paillier query,
overlapped with preselection in the service) and of the exact stage (secure distances, argmin and
threshold on the candidates, then the winner's label opened); the median process CPU seconds of
the whole identification (A and B share the process; preselection is the same for every ``d``,
so the differences between rows are admission + exact stage, and CPU seconds do not depend on
the machine's load the way wall seconds do); bytes of one Paillier query and template; enrolment
CPU seconds per template (client encryption and both servers' admission). The rotation is the
identity (distances do not depend on it); d = 192 is EdgeFace XS's rank, the lossless reduction
of eval/exact_reduction.py.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.timing import machine_info
from pura.audit_log import AuditLog
from pura.crypto.encoding import PCARotation
from pura.crypto.params import (
    CKKS_8192,
    PAILLIER_2048_FAST,
    PAILLIER_3072,
    EncodingParams,
    ParameterSet,
)
from pura.gallery.copies import CopyStore
from pura.gallery.store import GalleryStore
from pura.keys import generate_key_set, load_a_keys, load_b_keys, load_public_keys
from pura.pipeline.config import SearchConfig
from pura.service.nodes import NodeA, NodeB, QueryUpload, TemplateUpload, loopback


def model_for(d: int) -> str:
    return "sface_2021dec_int8bq" if d == 128 else "edgeface_xs_q"

GALLERY = 16


def one_dim(d: int, paillier: str, queries: int, seed: int) -> dict[str, Any]:
    from pura_client.encryptor import Encryptor

    model = model_for(d)
    params = ParameterSet(
        paillier=PAILLIER_3072 if paillier == "default" else PAILLIER_2048_FAST, ckks=CKKS_8192,
        encoding=EncodingParams(model_id=model, dim=d, head_dim=64))
    rng = np.random.default_rng(seed)
    gallery = rng.normal(size=(GALLERY, d))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    pca = PCARotation(np.eye(d), model_id=model)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_key_set(root / "k", params)
        node_b = NodeB(load_b_keys(root / "k" / "b"), CopyStore(root / "copies.db"))
        node_a = NodeA(load_a_keys(root / "k" / "a"), GalleryStore(root / "a.db"),
                       AuditLog(root / "audit.jsonl"), loopback(node_b), pca,
                       search=SearchConfig.for_model(model), rng=random.Random(seed))
        try:
            node_a.create_collection("bench")
            enc = Encryptor(load_public_keys(root / "k" / "public"), pca,
                            rng=random.Random(seed))
            t0 = time.process_time()
            parts = [enc.template(v) for v in gallery]
            items = [TemplateUpload(f"s{i}", f"r{i}", model, d, p.paillier, p.ckks_head)
                     for i, p in enumerate(parts)]
            assert all(o.error is None for o in node_a.enroll("bench", items, "bench"))
            enrol_s = (time.process_time() - t0) / GALLERY
            exact, admit, cpu, right = [], [], [], 0
            for q in range(queries):
                target = q % GALLERY
                noisy = gallery[target] + rng.normal(scale=0.3 / np.sqrt(d), size=d)
                up = enc.query(noisy)
                c0 = time.process_time()
                got = node_a.identify("bench", QueryUpload(model, d, up.paillier, up.ckks_head),
                                      "bench")
                cpu.append(time.process_time() - c0)
                right += got == f"s{target}"
                stages = node_a.identifier.last_stages
                exact.append(stages["exact"] + stages.get("open", 0.0))
                admit.append(stages["admit_query"])
            return {
                "dim": d, "queries": queries, "answers_right": right,
                "exact_stage_s_median": statistics.median(exact),
                "query_admission_s_median": statistics.median(admit),
                "identify_cpu_s_median": statistics.median(cpu),
                "enrolment_cpu_s_per_template": enrol_s,
                "paillier_query_bytes": len(up.paillier),
                "paillier_template_bytes": len(parts[0].paillier),
            }
        finally:
            node_a.offline.stop()
            node_b.offline.stop()
            node_a.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dims", default="128,192,512")
    parser.add_argument("--paillier", default="default", choices=("default", "fast"))
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = [one_dim(int(d), args.paillier, args.queries, args.seed)
            for d in args.dims.split(",")]
    result = {"machine": machine_info(), "paillier": args.paillier, "top_k": SearchConfig().top_k,
              "command": f"python -m bench.exact_dim --dims {args.dims} --paillier "
                         f"{args.paillier} --queries {args.queries}", "rows": rows}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
