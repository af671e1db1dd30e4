"""CKKS decryption noise of B's preselection view, measured on real LFW heads (issue 12).

``python -m bench.ckks_noise --out bench/results [--probes 20]`` → ``ckks_noise.json``.

Why: B floods its decryptions with Gaussian noise before ranking (docs/security.md, "B's
defences"), so that nothing derived from a CKKS decryption — not even an ordering — depends on
the decryption noise (the IND-CPA-D key-recovery attacks of Li–Micciancio and their one-bit
variants need exactly that dependence). Flooding is only meaningful relative to the noise it
floods, so this script measures that noise exactly as B sees it:

* a block of real LFW heads (the first ``slot_count`` people's PCA heads, image 1; decoys fill
  the rest of the block as in the service), encrypted with :func:`encrypt_block`;
* each probe encrypted as a client does (:meth:`CKKSContext.encrypt_query`, expanded by A),
  scored, rotated and masked by A's :class:`~pura.protocols.preselect.PreselectServer` code path
  (``score_block`` → ``rotate`` → ``affine_mask``);
* B's decryption minus the exact value ``a·⟨q, g⟩ + c`` computed in float64 from the same
  plaintext heads: the *decryption error in B's units* (encoding + encryption + relinearisation +
  rescale + rotation key-switching noise, after the mask multiplies it by ``a``).

The flooding noise must also stay small against the score gaps that matter. What matters is
the decision, so :func:`decisions_with_noise` reruns the LFW preselection study of
:mod:`bench.preselect_recall` (every gallery, every probe, the product's ``view_k``/``top_k``,
decoys, padding) with B's flooding noise added to every score, for each candidate σ, with the
mask factor ``a`` drawn per query as A draws it (noise in score units is ``σ/a``), and reports the
decision agreement with the plaintext full search at the product's ``top_k``.

``python -m bench.ckks_noise --out bench/results --probes 0 --sigmas 0 64 256 1024 4096 16384``
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.preselect_recall import (
    _CHUNK_ENTRIES,
    StudyConfig,
    _candidate_set,
    _decide,
    _merge,
    _study_chunk,
    galleries,
    load_lfw,
    slot_layout,
    squared_distances,
    summarise,
)
from bench.timing import machine_info
from pura.crypto.ckks import CKKSContext
from pura.crypto.encoding import PCARotation, load_shipped_pca, quantize
from pura.crypto.params import get_preset
from pura.gallery.packing import BlockLayout, encrypt_block
from pura.pipeline.config import SearchConfig
from pura.protocols.preselect import (
    FLOOD_SIGMA,
    PreselectResponse,
    PreselectServer,
    decrypt_view,
)


def measure(probes: int, preset: str, seed: int) -> dict[str, Any]:
    """Decryption error of masked, rotated block scores on real LFW heads (B's units)."""
    params = get_preset(preset)
    enc = params.encoding
    m = enc.head_dim
    pca = load_shipped_pca(enc.model_id)
    data = load_lfw(200, 1, seed, enc.model_id)
    gallery = galleries(data, seed)[0]
    sec = CKKSContext.generate(params.ckks)
    pub = sec.public()
    slots = pub.slot_count
    rng = random.Random(seed)
    heads = pca.apply(gallery.vectors)[:slots, :m]
    _, n_decoys = slot_layout(len(heads), slots)
    block_heads = np.vstack([heads, pca.sample_decoy_heads(n_decoys, m, rng)])
    block = [pub.ciphertext_from_bytes(raw) for raw in encrypt_block(pub, 0, block_heads)
             .ciphertexts]
    a_bits, c_bits = pub.mask_bounds()
    errors: list[float] = []
    errors_score: list[float] = []
    for probe in pca.apply(gallery.probes)[:probes]:
        q = pub.expand_query(pub.encrypt_query(probe[:m]), m)
        a = rng.randrange(1 << (a_bits - 1), 1 << a_bits)
        c = rng.uniform(-(2.0 ** (c_bits - 1)), 2.0 ** (c_bits - 1))
        rot = rng.randrange(slots)
        ct = pub.affine_mask(pub.rotate(pub.score_block(q, block), rot), a, c)
        got = sec.decrypt(ct)
        exact = a * np.roll(block_heads @ probe[:m], -rot) + c
        err = got - exact
        errors += err.tolist()
        errors_score += (err / a).tolist()
    e = np.asarray(errors)
    s = np.asarray(errors_score)
    return {
        "machine": machine_info(), "preset": preset, "ckks": params.ckks.name, "head_dim": m,
        "probes": probes, "values": int(e.size), "mask_a_bits": a_bits, "mask_c_bits": c_bits,
        "masked_units": {"std": float(e.std()), "max_abs": float(np.abs(e).max()),
                         "log2_max_abs": float(np.log2(np.abs(e).max()))},
        "score_units": {"std": float(s.std()), "max_abs": float(np.abs(s).max()),
                        "log2_max_abs": float(np.log2(np.abs(s).max()))},
    }


def _noisy_study(
    gallery_rot: np.ndarray, decoys: np.ndarray, probes_rot: np.ndarray, config: StudyConfig,
    sigma: float, a_bits: int, rng: random.Random,
) -> Any:
    """:func:`bench.preselect_recall.study_probes` with B's flooding noise on every score."""
    m = config.head_dim
    q_gallery = quantize(gallery_rot, config.scale_bits)
    g_head = gallery_rot[:, :m]
    gen = np.random.default_rng(rng.getrandbits(128))
    parts = []
    step = max(1, _CHUNK_ENTRIES // (len(gallery_rot) + len(decoys)))
    for start in range(0, len(probes_rot), step):
        chunk = probes_rot[start:start + step]
        d = squared_distances(quantize(chunk, config.scale_bits), q_gallery)
        real = chunk[:, :m] @ g_head.T
        decoy = chunk[:, :m] @ decoys.T
        if sigma > 0:  # B's noise is σ in masked units a·S + c: σ/a in score units
            a = gen.integers(1 << (a_bits - 1), 1 << a_bits, size=(len(chunk), 1))
            real = real + gen.normal(0.0, sigma, size=real.shape) / a
            decoy = decoy + gen.normal(0.0, sigma, size=decoy.shape) / a
        parts.append(_study_chunk(d, real, decoy, config, rng))
    return _merge(parts, config)


def decisions_with_noise(
    sigmas: Sequence[float], preset: str, seed: int, pca: PCARotation | None = None,
    non_mated: int = 200, probes_per_identity: int = 1,
) -> dict[str, Any]:
    """Decision agreement with plaintext full search, per gallery, for each flooding σ."""
    params = get_preset(preset)
    enc = params.encoding
    search = SearchConfig.for_model(enc.model_id)
    pca = pca or load_shipped_pca(enc.model_id)
    a_bits = params.ckks.coeff_mod_bit_sizes[0] - 1 - params.ckks.scale_bits - 2
    config = StudyConfig(enc.head_dim, enc.scale_bits, search.tau_units(enc.scale_bits),
                         search.view_k, (search.top_k,))
    data = load_lfw(non_mated, probes_per_identity, seed, enc.model_id)
    out: dict[str, Any] = {"top_k": search.top_k, "view_k": search.view_k, "a_bits": a_bits,
                           "non_mated": non_mated, "probes_per_identity": probes_per_identity,
                           "by_sigma": {}}
    slots = params.ckks.slot_count
    for sigma in sigmas:
        row: dict[str, Any] = {}
        for g in galleries(data, seed):
            rng = random.Random(seed)
            _, n_decoys = slot_layout(len(g.vectors), slots)
            decoys = pca.sample_decoy_heads(n_decoys, config.head_dim,
                                            random.Random(rng.getrandbits(64)))
            batch = _noisy_study(pca.apply(g.vectors), decoys, pca.apply(g.probes), config,
                                 sigma, a_bits, rng)
            cell = summarise(batch, config, g.truth)["per_k"][str(search.top_k)]
            row[g.name] = {"probes": len(g.probes), "agree": cell["agree"],
                           "agree_rate": cell["agree_rate"], "hit_within": cell["hit_within"]}
        out["by_sigma"][repr(sigma)] = row
        print(f"[ckks_noise] sigma={sigma}: {row}", file=sys.stderr, flush=True)
    return out


def ckks_decisions(
    n_probes: int, preset: str, seed: int, sigma: float = FLOOD_SIGMA,
    non_mated: int = 200, probes_per_identity: int = 1,
) -> dict[str, Any]:
    """The product's own code on real CKKS for ``n_probes`` probes of the largest LFW gallery:
    A scores, masks and permutes (:class:`PreselectServer`), B decrypts *with flooding*
    (:func:`decrypt_view`, σ = ``sigma``) and keeps its ``view_k`` best, A keeps the best
    ``top_k`` real templates (padding as the product), and the exact stage's decision on them
    (plaintext integer distances) is compared with plaintext 1:N search. Half the probes are
    those whose target ranks worst in the head ranking (the ones noise could change)."""
    params = get_preset(preset)
    enc = params.encoding
    search = SearchConfig.for_model(enc.model_id)
    m = enc.head_dim
    pca = load_shipped_pca(enc.model_id)
    g = galleries(load_lfw(non_mated, probes_per_identity, seed, enc.model_id), seed)[-1]
    sec = CKKSContext.generate(params.ckks)
    pub = sec.public()
    slots = pub.slot_count
    rng = random.Random(seed)
    gallery_rot, probes_rot = pca.apply(g.vectors), pca.apply(g.probes)
    n_blocks, n_decoys = slot_layout(len(gallery_rot), slots)
    heads = np.vstack([gallery_rot[:, :m], pca.sample_decoy_heads(n_decoys, m, rng)])
    blocks = []
    for b in range(n_blocks):
        block = encrypt_block(pub, b, heads[b * slots:(b + 1) * slots])
        block.live = {s: b * slots + s for s in range(slots) if b * slots + s < len(gallery_rot)}
        blocks.append(block)
    server = PreselectServer(pub, BlockLayout(pub, m, lambda n: heads[:n], blocks), rng=rng)
    tau = search.tau_units(enc.scale_bits)
    d = squared_distances(quantize(probes_rot, enc.scale_bits), quantize(gallery_rot,
                                                                          enc.scale_bits))
    real = probes_rot[:, :m] @ gallery_rot[:, :m].T
    nearest = np.argmin(d, axis=1)
    rank = (real > real[np.arange(len(real)), nearest][:, None]).sum(axis=1)
    worst = [int(i) for i in np.argsort(-rank, kind="stable")[: n_probes // 2]]
    rest = [i for i in range(len(probes_rot)) if i not in set(worst)]
    pick = worst + rng.sample(rest, n_probes - len(worst))
    agree = 0
    view_k = min(search.view_k, len(heads))
    for i in pick:
        query = [pub.ciphertext_to_bytes(pub.encrypt_query(probes_rot[i, :m]))]
        request, state = server.request(query, view_k)
        values = decrypt_view(sec, request, sigma=sigma, rng=rng)
        top = np.argpartition(-values, view_k - 1)[:view_k]
        ranked = top[np.argsort(-values[top], kind="stable")]
        got = server.resolve(state, PreselectResponse(request.request_id,
                                                      tuple(int(p) for p in ranked)))
        ordered = np.asarray(got[: search.top_k], dtype=np.int64)
        cand, _ = _candidate_set(ordered, search.top_k, len(gallery_rot), rng)
        want = int(nearest[i]) if int(d[i, nearest[i]]) <= tau else -1
        agree += int(_decide(d[i], cand, tau) == want)
    return {"gallery": len(gallery_rot), "blocks": n_blocks, "probes": len(pick),
            "worst_ranked_probes": len(worst), "sigma": sigma, "agree": agree,
            "ckks": params.ckks.name}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--preset", default="default")
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ckks-probes", type=int, default=0,
                        help="real-CKKS decision check with flooding on this many probes")
    parser.add_argument("--non-mated", type=int, default=200)
    parser.add_argument("--probes-per-identity", type=int, default=1)
    parser.add_argument("--sigmas", type=float, nargs="*", default=[],
                        help="flooding σ values (B's masked units) for the decision study")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    if args.probes > 0:
        result = measure(args.probes, args.preset, args.seed)
        (args.out / "ckks_noise.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.sigmas:
        result = {"machine": machine_info(), "preset": args.preset,
                  **decisions_with_noise(args.sigmas, args.preset, args.seed,
                                         non_mated=args.non_mated,
                                         probes_per_identity=args.probes_per_identity)}
        (args.out / "ckks_noise_decisions.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.ckks_probes > 0:
        result = {"machine": machine_info(), "preset": args.preset,
                  **ckks_decisions(args.ckks_probes, args.preset, args.seed)}
        (args.out / "ckks_noise_ckks_check.json").write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
