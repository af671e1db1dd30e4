"""Enrolment throughput through the product: ``python -m bench enroll --n N``.

What runs: keys (``generate_key_set``, 3072-bit by default), a demo PKI (mTLS), server B then
server A as separate ``pura serve`` processes on free loopback ports (``pura.demo.start_pair``,
the processes a deployment runs), a collection, and one enroller streaming ``N`` templates
through one ``BulkEnroll`` call. Admission (sealed admission and the norm check with B, the
derived CKKS heads), the SQLite commit and the CKKS block refresh are all inside the measured
stream; client-side encryption is done before the stream starts and reported separately, so
``templates_per_s`` is the servers' rate.

Reported (``bench/results/enroll.json``): templates/s, CPU seconds per template at A and at B
(``/proc`` user + system time of each server process and its live children, read before and
after the stream), upload bytes per template and bytes stored per template, plus an in-process
stage breakdown of one admission batch at the same key size (where the time goes).

Vectors: ``face_like_gallery`` (unit vectors drawn from the shipped PCA model of real dlib
descriptors). The cost of enrolment does not depend on the values, only on their count and the
key size; accuracy is measured elsewhere on real LFW faces.
"""

from __future__ import annotations

import json
import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from bench.data import face_like_gallery
from bench.service import cpu_seconds, service_pair
from bench.timing import machine_info
from pura.crypto.params import get_preset

COLLECTION = "enroll"


class StageTimer:
    """CPU seconds per named stage (process time: meaningful on a machine others share)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def timed(self, name: str, fn: Any, *args: Any, **kw: Any) -> Any:
        t0 = time.process_time()
        out = fn(*args, **kw)
        self.times[name] = self.times.get(name, 0.0) + time.process_time() - t0
        return out

    def per_item(self, n: int) -> dict[str, float]:
        return {k: round(v / n, 4) for k, v in self.times.items()}


def unit_vectors(rng: Any, dim: int, scale_bits: int, n: int) -> list[list[int]]:
    """``n`` random unit vectors, quantised like templates (cost does not depend on values)."""
    from pura.crypto.encoding import l2_normalize, quantize

    return [[int(v) for v in quantize(l2_normalize(rng.normal(size=dim)), scale_bits)]
            for _ in range(n)]


def stage_breakdown(key_dir: Path, profile: str, n: int, seed: int = 0) -> dict[str, float]:
    """CPU seconds per template of each admission stage, in one process (no gRPC), with the
    shares of the key set in ``key_dir``. CPU time, not wall time: the figures stay meaningful
    on a machine whose cores other work shares."""
    import numpy as np

    from pura.crypto.paillier import RandomnessPool
    from pura.keys import load_a_keys, load_b_keys
    from pura.protocols.enroll import TemplateLayout, encrypt_template
    from pura.protocols.norms import (
        NormLayout,
        finish_norm_check,
        finish_norms,
        helper_norm_check,
        helper_norms,
        start_norm_check,
        start_norms,
    )

    params = get_preset(profile)
    enc = params.encoding
    s1, s2 = load_a_keys(key_dir / "a").share, load_b_keys(key_dir / "b").share
    pk = s1.public_key
    layout = NormLayout.for_key(pk, TemplateLayout.for_key(pk, enc.dim, enc.scale_bits))
    rng = np.random.default_rng(seed)
    pool_a, pool_b, client = (RandomnessPool(pk, rng=random.Random(seed + i)) for i in (1, 2, 3))
    timer = StageTimer()
    timed = timer.timed
    vectors = unit_vectors(rng, enc.dim, enc.scale_bits, n)
    uploads = [timed("client_encrypt", encrypt_template, v, layout.template, pk, client).packed
               for v in vectors]
    timed("b_pool_values", pool_b.refill, n * (enc.dim + 1 + layout.template.cts_per_template))
    state, request = timed("a_round1_mask_partial", start_norms, uploads, layout, s1, pool_a,
                           repack=True)
    reply = timed("b_round1_decrypt_check_reencrypt", helper_norms, request, layout, s2, pool_b)
    normed = timed("a_round1_cross_terms_rerandomise", finish_norms, state, reply, layout, pool_a)
    norms = [v.norm for v in normed if v is not None]
    c_state, c_req = timed("a_round2_blind_partial", start_norm_check, norms, layout, s1, pool_a)
    c_reply = timed("b_round2_decrypt_signs", helper_norm_check, c_req, layout, s2)
    verdicts = finish_norm_check(c_state, c_reply)
    if not all(verdicts):
        raise RuntimeError("an honest template failed the norm check")
    return timer.per_item(n)


def sealed_stage_breakdown(key_dir: Path, profile: str, n: int, seed: int = 0) -> dict[str, float]:
    """CPU seconds per template of each stage of sealed admission (:mod:`pura.protocols.sealed`)
    and of the derived heads (:mod:`pura.protocols.derived_heads`), in one process (no gRPC),
    with the key set in ``key_dir``. The product's own functions, called in the servers' order."""
    import numpy as np

    from pura.crypto.paillier import RandomnessPool
    from pura.keys import load_a_keys, load_b_keys
    from pura.protocols import derived_heads
    from pura.protocols.enroll import TemplateLayout
    from pura.protocols.norms import (
        NormLayout,
        finish_norm_check,
        helper_norm_check,
        start_norm_check,
    )
    from pura.protocols.sealed import (
        SealedLayout,
        check_masks,
        derive_masks,
        finish_sealed,
        helper_sealed,
        mask_digest,
        seal_template,
        start_sealed,
    )

    params = get_preset(profile)
    enc = params.encoding
    a_keys, b_keys = load_a_keys(key_dir / "a"), load_b_keys(key_dir / "b")
    s1, s2 = a_keys.share, b_keys.share
    pk = s1.public_key
    if b_keys.seal is None or a_keys.public.seal is None:
        raise RuntimeError("the key set has no sealing key")
    from pura.protocols.population import mean_bound
    from pura.service.run import load_pca

    wolf = mean_bound(enc.model_id, load_pca(key_dir / "public", enc.model_id), enc.scale_bits)
    norms = NormLayout.for_key(pk, TemplateLayout.for_key(pk, enc.dim, enc.scale_bits))
    norms = norms.with_mean(wolf)  # A's layout, as NodeA builds it
    layout = SealedLayout.for_norms(norms, pk)
    rng = np.random.default_rng(seed)
    pool_a, pool_b = (RandomnessPool(pk, rng=random.Random(seed + i)) for i in (1, 2))
    timer = StageTimer()
    timed = timer.timed
    vectors = unit_vectors(rng, enc.dim, enc.scale_bits, n)
    seal_pub = a_keys.public.seal
    uploads = [timed("client_seal", seal_template, v, norms.template, pk, seal_pub,
                     random.Random(seed + 10 + i)) for i, v in enumerate(vectors)]
    timed("b_pool_values", pool_b.refill, n * (2 + norms.template.cts_per_template) + 2)
    passed, derived = timed("a_mask_batch_check", check_masks, uploads, norms.template, pk)
    if not all(passed):
        raise RuntimeError("an honest upload failed the mask check")
    direction = wolf.direction
    state, request = start_sealed(uploads, derived, layout, direction)
    reply = timed("b_open_cross_terms_reencrypt", helper_sealed, request, layout, s2,
                  b_keys.seal, pool_b)
    normed = timed("a_decrypt_cross_terms_rerandomise", finish_sealed, state, reply, layout, s1,
                   direction, pool_a)
    ok = [v for v in normed if v is not None]
    c_state, c_req = timed("a_round2_blind_partial", start_norm_check, [v.norm for v in ok],
                           norms, s1, pool_a, mean_dots=[v.mean_dot for v in ok])
    c_reply = timed("b_round2_decrypt_signs", helper_norm_check, c_req, norms, s2)
    if not all(finish_norm_check(c_state, c_reply)):
        raise RuntimeError("an honest template failed the norm check")
    d_req = derived_heads.DeriveRequest(enc.head_dim, tuple(mask_digest(u.masks) for u in uploads),
                                        tuple(u.box for u in uploads))
    d_reply = timed("b_derive_heads", derived_heads.answer_derive, b_keys.ckks_secret,
                    b_keys.seal, layout, d_req)
    offsets = [derive_masks(u.seed, norms.template, pk)[0] for u in uploads]
    timed("a_finish_heads", derived_heads.finish_derive, a_keys.public.ckks, d_reply, offsets,
          norms.template, enc.head_dim)
    return timer.per_item(n)


def run_enroll(
    n: int, out: Path, *, profile: str = "default", workers: int = 1, bulk_batch: int = 64,
    seed: int = 0, stages: int = 16, idle_s: float = 3600.0,
) -> dict[str, Any]:
    """Start servers, stream ``n`` templates through BulkEnroll, stop; write ``enroll.json``."""
    labels = [f"subject-{i:06d}" for i in range(n)]
    with service_pair(profile, bulk_batch=bulk_batch, workers=workers,
                      prefix="pura-enroll-") as pair:
        pca = pair.pca
        gallery = face_like_gallery(n, pca.mean, pca.cov, pca.matrix, seed=seed)
        with pair.connect("admin", COLLECTION) as admin:
            admin.create_collection()
        with pair.connect("enroller", COLLECTION) as enroller:
            enc = enroller.encryptor()
            t0 = time.perf_counter()
            items = [(labels[i], enc.template(gallery[i]), uuid.uuid4().hex) for i in range(n)]
            encrypt_s = time.perf_counter() - t0
            upload = statistics.mean(len(p.paillier) + len(p.ckks_head) for _, p, _ in items)
            cpu0 = pair.cpu()
            t0 = time.perf_counter()
            statuses = list(enroller.bulk_enroll_encrypted(items, idle_timeout_s=idle_s))
            wall = time.perf_counter() - t0
            cpu1 = pair.cpu()
        with pair.connect("auditor", COLLECTION) as auditor:
            stats = auditor.stats()
        summary = _summary(n, profile, workers, bulk_batch, statuses, wall,
                           (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]), encrypt_s, upload, stats,
                           pair.keygen_s)
        out.mkdir(parents=True, exist_ok=True)
        (out / "enroll.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        if stages:
            summary["in_process_stage_cpu_s_per_template"] = sealed_stage_breakdown(
                pair.work / "keys", profile, stages, seed)
            summary["in_process_stage_cpu_s_per_template_packed_upload"] = stage_breakdown(
                pair.work / "keys", profile, stages, seed)
            (out / "enroll.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def _summary(
    n: int, profile: str, workers: int, bulk_batch: int, statuses: list[Any], wall: float,
    cpu: tuple[float, float], encrypt_s: float, upload: float, stats: Any, keygen_s: float,
) -> dict[str, Any]:
    params = get_preset(profile)
    cpu_a, cpu_b = cpu
    enrolled = sum(s.code == "enrolled" for s in statuses)
    summary: dict[str, Any] = {
        "n": n, "profile": profile, "paillier_bits": params.paillier.modulus_bits,
        "workers_per_server": workers, "bulk_batch": bulk_batch,
        "enrolled": enrolled, "rejected": sum(s.code == "rejected" for s in statuses),
        "stream_s": round(wall, 2), "templates_per_s": round(enrolled / wall, 3),
        "cpu_s_per_template_a": round(cpu_a / max(1, enrolled), 4),
        "cpu_s_per_template_b": round(cpu_b / max(1, enrolled), 4),
        "client_encrypt_s_per_template": round(encrypt_s / n, 4),
        "upload_bytes_per_template": round(upload),
        "stored_bytes_per_template": round((stats.template_bytes + stats.block_bytes)
                                           / max(1, stats.templates)),
        "stored_paillier_bytes_per_template": round(stats.template_bytes
                                                    / max(1, stats.templates)),
        "keygen_s": round(keygen_s, 1),
        "machine": machine_info(),
        "note": "A, B and the client share the machine's cores; client encryption is outside "
                "the measured stream",
    }
    return summary


__all__ = ["cpu_seconds", "run_enroll", "sealed_stage_breakdown", "stage_breakdown"]
