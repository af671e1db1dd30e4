"""``python -m bench run``: every compared system on the same gallery, in one process run.

Order of work per gallery size N (same seeded unit vectors for every system):

* FAISS ``IndexFlatIP`` (plaintext floor), one query at a time;
* Pura end to end and per stage, on ``repetitions`` mated probes after one warm-up probe; every
  encrypted answer is checked against the plaintext answer;
* then, once (their per-template cost does not depend on N): baseline 2 and baseline 3 on a
  subset, extrapolated to every N (stated in the JSON);
* optional: Ray shard scaling of the preselection scoring, LFW accuracy parity.

Figures are medians over ``repetitions`` (≥ 5) runs. The machine has 2 cores shared with other
processes while measured: the JSON records the load average next to the figures.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench._faiss import FlatIPIndex
from bench.baseline_ckks import run_baseline3
from bench.baseline_paillier import ThresholdKeys, run_baseline2
from bench.data import FloatArray, face_like_gallery, plaintext_answer, synthetic_probes
from bench.pura_path import SEARCH, PuraGallery, PuraSystem, identify, warm_candidates
from bench.timing import MIN_REPETITIONS, Timing, machine_info, measure
from pura.crypto.ckks import CKKSContext
from pura.crypto.encoding import load_shipped_pca
from pura.crypto.paillier import generate_keypair
from pura.crypto.params import ParameterSet, get_preset
from pura.engine.local import SERIAL, LocalEngine
from pura.protocols.identify import threshold_units

#: Squared-distance threshold for synthetic probes: mated probes lie at 0.35² ≈ 0.12, random
#: unit vectors in 128-d at ≈ 2 (so the decision is never borderline and every answer is checked).
SYNTHETIC_THRESHOLD = 0.6

RAY_MAX_SIZE = 100_000
STAGES = ("client_encrypt", "preselect_a", "preselect_b", "admit_query", "exact", "server",
          "total", "cpu_server", "cpu_exact")


def _log(message: str) -> None:
    """Progress on stderr (stdout carries the final JSON summary)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def build_system(params: ParameterSet, seed: int, engine_workers: int = 1) -> PuraSystem:
    """Fresh keys for this run (seeded Paillier generation; SEAL draws its own CKKS keys).

    ``engine_workers`` > 1 gives both servers a process pool for their partial decryptions
    and multi-exponentiations (as ``pura serve --engine-workers``)."""
    rng = random.Random(seed)
    pk, share_a, share_b = generate_keypair(params.paillier, random.Random(rng.getrandbits(64)))
    ctx = CKKSContext.generate(params.ckks)
    engine = LocalEngine(engine_workers) if engine_workers > 1 else SERIAL
    pca = load_shipped_pca(params.encoding.model_id)
    return PuraSystem(params, ThresholdKeys(pk, share_a, share_b), ctx, pca,
                      random.Random(rng.getrandbits(64)), engine)


def bench_faiss(gallery: FloatArray, probes: FloatArray, repetitions: int) -> dict[str, Any]:
    index = FlatIPIndex(gallery)
    probe_iter = iter(np.tile(probes, (repetitions + 2, 1)))
    timing = measure(lambda: index.search(next(probe_iter), 1), repetitions=repetitions)
    return {"timing": timing.to_dict(), "bytes_per_template": index.bytes_per_template()}


def bench_pura(
    system: PuraSystem, gallery: FloatArray, repetitions: int, seed: int
) -> dict[str, Any]:
    """Stage medians over ``repetitions`` mated probes, plus one non-mated probe checked."""
    build_start = time.perf_counter()
    pura = PuraGallery(system, gallery)
    build_s = time.perf_counter() - build_start
    try:
        probes = synthetic_probes(gallery, repetitions + 1, 1, seed=seed)
        tau = threshold_units(SYNTHETIC_THRESHOLD, system.params.encoding.scale_bits)
        per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
        correct, checked = 0, 0
        last = None
        for j, (probe, expected) in enumerate(zip(probes.vectors, probes.expected, strict=True)):
            warm_candidates(pura, probe)
            times = identify(pura, probe, tau)
            want = plaintext_answer(gallery, probe, SYNTHETIC_THRESHOLD)
            checked += 1
            correct += int(times.answer == want == int(expected))
            if j == 0 or expected < 0:  # warm-up probe and the non-mated one are not timed
                continue
            for stage in STAGES:
                per_stage[stage].append(float(getattr(times, stage)))
            last = times
        if last is None:
            raise RuntimeError("no timed probe")
        return {
            "stages_median_s": {s: _median(v) for s, v in per_stage.items()},
            "stages_samples_s": per_stage,
            "repetitions": len(per_stage["total"]),
            "answers_correct": correct,
            "answers_checked": checked,
            "bytes_per_query_client_to_a": last.query_bytes,
            "bytes_per_query_a_b": last.a_b_bytes,
            "a_b_rounds": last.a_b_rounds,
            "bytes_per_template_at_a": pura.bytes_per_template(),
            "blocks": pura.n_blocks,
            "gallery_build_s": build_s,
            "top_k": SEARCH.top_k,
            "view_k": SEARCH.view_k,
        }
    finally:
        pura.close()


def bench_ray(
    system: PuraSystem, gallery: FloatArray, shard_counts: list[int], repetitions: int
) -> dict[str, Any]:
    """Preselection block scoring: single process vs Ray shard actors (local Ray runtime)."""
    from pura.engine.cluster import ShardedScorer, score_blocks_locally

    pura = PuraGallery(system, gallery, scoring_workers=1)
    ctx = system.ckks_public
    head = system.pca.apply(gallery[:1])[0][: system.params.encoding.head_dim]
    query = ctx.encrypt_query(head)
    raw = {b.block_id: list(b.ciphertexts) for b in pura.layout.blocks.values()}
    parsed = {b: [ctx.ciphertext_from_bytes(c) for c in cts] for b, cts in raw.items()}
    pura.close()
    m = len(head)
    local = measure(lambda: score_blocks_locally(ctx, ctx.expand_query(query, m), parsed),
                    repetitions=repetitions)
    out: dict[str, Any] = {"blocks": len(raw), "single_process": local.to_dict(), "shards": {}}
    for n in shard_counts:
        with ShardedScorer(ctx, n, cpus_per_shard=0.5) as scorer:
            scorer.load(raw)
            timing = _time_scorer(scorer, query, repetitions)
            out["shards"][str(n)] = {"timing": timing.to_dict(),
                                     "speedup_vs_single": local.median_s / timing.median_s,
                                     "cluster": asdict(scorer.info())}
    return out


def _time_scorer(scorer: Any, query: Any, repetitions: int) -> Timing:
    return measure(lambda: scorer.score(query), repetitions=repetitions)


def bench_lfw(system: PuraSystem, n_probes: int) -> dict[str, Any]:
    """Encrypted vs plaintext decisions on real LFW descriptors (cached dlib embeddings)."""
    try:
        from pura_client.datasets.embedded import embedded_identification_set

        data = embedded_identification_set(n_identities=500, seed=0, n_non_enrolled=200)
    except Exception as exc:  # data set or embedding pipeline absent: say why, measure nothing
        return {"measured": False, "reason": f"{type(exc).__name__}: {exc}"}
    gallery = data.gallery
    nearest = [float(np.min(np.sum((gallery - p) ** 2, axis=1))) for p in data.non_enrolled]
    tau_sq = float(np.quantile(nearest, 0.01))  # FPIR ≈ 1 % on non-enrolled probes
    n_mated = max(1, (2 * n_probes) // 3)
    probes = np.vstack([data.probes[:n_mated], data.non_enrolled[: n_probes - n_mated]])
    tau = threshold_units(tau_sq, system.params.encoding.scale_bits)
    pura = PuraGallery(system, gallery)
    agree, rank1_enc, rank1_plain = 0, 0, 0
    try:
        for j, probe in enumerate(probes):
            warm_candidates(pura, probe)
            got = identify(pura, probe, tau).answer
            want = plaintext_answer(gallery, probe, tau_sq)
            agree += int(got == want)
            if j < n_mated:
                truth = data.gallery_labels.index(data.probe_labels[j])
                rank1_enc += int(got == truth)
                rank1_plain += int(want == truth)
    finally:
        pura.close()
    return {
        "measured": True, "gallery": len(gallery), "probes": len(probes), "mated": n_mated,
        "threshold_sq_distance": tau_sq, "decisions_identical": agree,
        "identical_rate": agree / len(probes),
        "mated_correct_match_encrypted": rank1_enc, "mated_correct_match_plaintext": rank1_plain,
        "model_id": data.model_id,
    }


def _ratios(result: dict[str, Any], sizes: list[int]) -> dict[str, dict[str, float]]:
    ratios: dict[str, dict[str, float]] = {}
    for n in sizes:
        key = str(n)
        pura = result["sizes"][key]["pura"]["stages_median_s"]["total"]
        ratios[key] = {
            "speedup_vs_baseline2": result["baseline2"]["total_s"][key] / pura,
            "speedup_vs_baseline3": result["baseline3"]["total_s"][key] / pura,
            "slowdown_vs_faiss": pura / result["sizes"][key]["faiss"]["timing"]["median_s"],
        }
    return ratios


def run(
    sizes: list[int],
    out: Path,
    *,
    repetitions: int = MIN_REPETITIONS,
    preset: str = "default",
    seed: int = 0,
    baseline2_templates: int = 1,
    baseline3_templates: int = 16,
    shards: list[int] | None = None,
    lfw_probes: int = 0,
    plots: bool = True,
    engine_workers: int = 1,
    service_sizes: list[int] | None = None,
    service_queries: int = 20,
) -> dict[str, Any]:
    """Run everything and write ``out/results.json`` (+ a timestamped copy and PNG plots).

    ``service_sizes``: the same identification through real ``pura serve`` A and B processes
    (:mod:`bench.service`), with the ratio to the in-process figure of the same size when that
    size is also in ``sizes``."""
    params = get_preset(preset)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "parameters": json.loads(params.to_json()),
        "parameter_set_id": params.id,
        "repetitions": repetitions,
        "engine_workers": engine_workers,
        "synthetic_threshold_sq_distance": SYNTHETIC_THRESHOLD,
        "synthetic_gallery": "seeded unit vectors drawn from the shipped PCA model of dlib "
                             "descriptors (face-like, like the decoys), probes = row + noise 0.35",
        "targets": {"pura_1k_s": 0.060, "pura_100k_s": 1.0, "pura_1m_s": 5.0,
                    "speedup_vs_baseline2": 16, "speedup_vs_baseline3": 50},
        "sizes": {},
    }
    _log(f"keys for preset {preset!r}")
    system = build_system(params, seed, engine_workers)
    try:
        _run_all(system, result, sizes, out, repetitions=repetitions, seed=seed,
                 baseline2_templates=baseline2_templates,
                 baseline3_templates=baseline3_templates, shards=shards,
                 lfw_probes=lfw_probes, plots=plots, started=started)
    finally:
        system.engine.close()
    if service_sizes:
        result["service"] = _service(result, service_sizes, preset, service_queries, seed)
        result["wall_s"] = time.perf_counter() - started
        write_results(result, out)
    return result


def _service(
    result: dict[str, Any], sizes: list[int], preset: str, queries: int, seed: int
) -> dict[str, Any]:
    """The service path, and service ÷ in-process end to end (median) per size measured both
    ways (client encryption, gRPC, mTLS and the servers' own bookkeeping are the difference)."""
    from bench.service import measure_service

    service = measure_service(sorted(sizes), profile=preset, queries=queries, seed=seed,
                              threshold_sq=SYNTHETIC_THRESHOLD, log=_log)
    for n, row in service["sizes"].items():
        inproc = result["sizes"].get(n, {}).get("pura", {}).get("stages_median_s", {})
        if "total" in inproc:
            row["in_process_total_s"] = inproc["total"]
            row["service_over_in_process"] = row["p50_s"] / inproc["total"]
    return service


def _run_all(
    system: PuraSystem,
    result: dict[str, Any],
    sizes: list[int],
    out: Path,
    *,
    repetitions: int,
    seed: int,
    baseline2_templates: int,
    baseline3_templates: int,
    shards: list[int] | None,
    lfw_probes: int,
    plots: bool,
    started: float,
) -> dict[str, Any]:
    params = system.params
    pca = system.pca
    vectors = face_like_gallery(max(sizes), pca.mean, pca.cov, pca.matrix, seed=seed)
    for n in sorted(sizes):
        gallery = vectors[:n]
        _log(f"size {n}: FAISS and Pura")
        probes = synthetic_probes(gallery, 3, 0, seed=seed + 1).vectors
        result["sizes"][str(n)] = {
            "faiss": bench_faiss(gallery, probes, repetitions),
            "pura": bench_pura(system, gallery, repetitions, seed + n),
        }
    probe = synthetic_probes(vectors, 1, 0, seed=seed + 2).vectors[0]
    _log("baseline 2 and baseline 3 (subsets, extrapolated)")
    result["baseline2"] = run_baseline2(
        system.keys, vectors.tolist(), probe.tolist(), scale_bits=params.encoding.scale_bits,
        templates_timed=baseline2_templates, repetitions=repetitions,
        rng=random.Random(seed),
    ).to_dict(sorted(sizes))
    result["baseline3"] = run_baseline3(
        system.ckks_secret, vectors, probe, templates_timed=min(baseline3_templates, len(vectors)),
        repetitions=repetitions,
    ).to_dict(sorted(sizes))
    result["ratios"] = _ratios(result, sorted(sizes))
    if shards:
        _log(f"Ray shard scaling {shards}")
        # capped: the shard actors copy every block through Ray's object store, and the
        # scaling question is answered at 100K as well as at 1M on a 2-core machine
        result["ray"] = bench_ray(system, vectors[:RAY_MAX_SIZE], shards, repetitions)
        result["ray"]["gallery_size"] = min(len(vectors), RAY_MAX_SIZE)
    if lfw_probes:
        _log(f"LFW parity on {lfw_probes} probes")
        result["lfw"] = bench_lfw(system, lfw_probes)
    result["wall_s"] = time.perf_counter() - started
    write_results(result, out)
    if plots:
        from bench.plots import write_plots

        result["plots"] = [str(p) for p in write_plots(result, out)]
        write_results(result, out)
    return result


def write_results(result: dict[str, Any], out: Path) -> Path:
    """Atomic write of ``results.json`` plus a timestamped copy (history of runs)."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, sort_keys=True, default=_jsonable)
    stamp = result["created"].replace(":", "").replace("-", "")
    for name in ("results.json", f"results-{stamp}.json"):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)
    return out / "results.json"


def _jsonable(value: object) -> object:
    if isinstance(value, Timing):
        return value.to_dict()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def run_pura_only(
    sizes: list[int], out: Path, *, repetitions: int = MIN_REPETITIONS, preset: str = "default",
    seed: int = 0, engine_workers: int = 1,
) -> dict[str, Any]:
    """Only the Pura path per size (no FAISS, no baselines): the quick before/after figure
    for a change of the protocols, with CPU seconds beside wall time (``cpu_server``,
    ``cpu_exact``), since wall time on a shared machine grows with other jobs."""
    params = get_preset(preset)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(), "parameter_set_id": params.id, "preset": preset,
        "repetitions": repetitions, "engine_workers": engine_workers, "pura_only": True,
        "load_average_start": os.getloadavg(), "sizes": {},
    }
    system = build_system(params, seed, engine_workers)
    try:
        vectors = face_like_gallery(max(sizes), system.pca.mean, system.pca.cov,
                                    system.pca.matrix, seed=seed)
        for n in sorted(sizes):
            _log(f"size {n}: Pura only")
            result["sizes"][str(n)] = {"pura": bench_pura(system, vectors[:n], repetitions,
                                                          seed + n)}
    finally:
        system.engine.close()
    result["load_average_end"] = os.getloadavg()
    result["wall_s"] = time.perf_counter() - started
    write_results(result, out)
    return result


if __name__ == "__main__":
    import argparse

    cli = argparse.ArgumentParser(prog="python -m bench.run",
                                  description="the Pura path only (see run_pura_only)")
    cli.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[1000])
    cli.add_argument("--out", type=Path, required=True)
    cli.add_argument("--repetitions", type=int, default=MIN_REPETITIONS)
    cli.add_argument("--preset", default="default")
    cli.add_argument("--seed", type=int, default=0)
    cli.add_argument("--engine-workers", type=int, default=os.cpu_count() or 1)
    a = cli.parse_args()
    done = run_pura_only(a.sizes, a.out, repetitions=a.repetitions, preset=a.preset,
                         seed=a.seed, engine_workers=a.engine_workers)
    for size, r in done["sizes"].items():
        print(size, json.dumps({k: round(v, 3) for k, v in r["pura"]["stages_median_s"].items()}))
