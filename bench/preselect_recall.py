"""How many preselection candidates (``top_k``) does the exact stage need? (issue 5)

``python -m bench.preselect_recall --out bench/results`` → ``preselect_recall.json``, ``.png``
and a markdown table on stdout.

Why this matters: the exact threshold-Paillier stage costs nearly linearly in ``top_k`` (B
decrypts ~⌈top_k·128/57⌉ packed 3072-bit ciphertexts, the secure argmin has ⌈log2 top_k⌉
rounds), while a too small ``top_k`` silently changes answers: when the full 128-d nearest
neighbour is not among the candidates, the exact stage returns another subject or "no match".

What is measured, on real LFW dlib descriptors (the client's torch pipeline, through the shared
embedding cache), for each probe and each ``k``:

* the *target*: the plaintext full search answer — argmin of the same integer squared distance
  ``D = ||q(Rx) − q(Ry)||²`` the exact stage computes (``q`` = quantisation at ``scale_bits``);
* the candidate set exactly as the product builds it (``NodeA._candidates``): B ranks *every
  slot* of every block — real heads and the decoy heads filling empty slots — by the CKKS score
  ``<head(x), head(y)>`` (first ``head_dim`` PCA-rotated coordinates of unit vectors; B takes
  the largest masked values, the mask ``a·S + c`` with ``a > 0`` keeps the order) and returns
  its top ``view_k`` positions; A drops decoys, keeps the best ``k`` real templates and pads
  with random other templates when fewer than ``k`` remain (``NodeA._pad``);
* *hit*: the target is in the candidate set; *decision agreement*: "preselect then exact"
  (argmin of ``D`` over the candidates, match iff ``D ≤ τ``) gives the same match/no-match and
  the same subject as the plaintext full search.

A miss matters only when the target lies within the threshold (otherwise both searches say "no
match"), so hit rates are reported for all probes and for those probes separately. The
plaintext model of the ranking is checked against the product's own CKKS code
(:func:`verify_with_ckks`: real keys, :class:`~pura.protocols.preselect.PreselectServer`,
:func:`~pura.protocols.preselect.answer_preselect`) on a sample of probes.

Galleries (one enrolled image per person, image 1): ``1000`` people with ≥ 2 images (seeded
draw), all ``1680`` such people, and those plus every LFW single-image person not held out as a
non-mated probe (``4749``). Mated probes: up to ``probes_per_identity`` further images of each
enrolled person. Non-mated probes: single-image people of LFW's ``peopleDevTest.txt``, never in
any gallery and never in the PCA training set (the shipped rotation was fitted on single-image
``peopleDevTrain`` people, some of whom pad the largest gallery — they are never probes).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.timing import machine_info
from pura.crypto.ckks import CKKSContext
from pura.crypto.encoding import PCARotation, load_shipped_pca, quantize
from pura.crypto.params import CKKSParams, get_preset
from pura.errors import ConfigError, DimensionError
from pura.gallery.packing import BlockLayout, encrypt_block
from pura.protocols.identify import threshold_units
from pura.protocols.preselect import PreselectServer, preselect
from pura.service.nodes import DEFAULT_THRESHOLD_SQ, DEFAULT_TOP_K, DEFAULT_VIEW_K

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Candidate counts studied (the exact stage's cost grows ~linearly in k).
KS: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 32)
#: Gallery sizes drawn from people with ≥ 2 images; "all" sizes are added by :func:`load_lfw`.
SUBSET_SIZE = 1000
_CHUNK = 256  # probes per vectorised chunk: 256 × 8,192 float64 scores ≈ 16 MiB


def _log(message: str) -> None:
    """Progress on stderr (stdout carries the markdown table)."""
    print(f"[preselect_recall {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the study on rotated vectors (pure numpy, what the tests exercise) ----------------------


@dataclass(frozen=True)
class StudyConfig:
    """What the product fixes: head size, quantisation, threshold (integer units), B's view."""

    head_dim: int
    scale_bits: int
    tau: int
    view_k: int = DEFAULT_VIEW_K
    ks: tuple[int, ...] = KS

    def __post_init__(self) -> None:
        if self.head_dim < 1:
            raise ConfigError(f"head_dim must be ≥ 1, got {self.head_dim}")
        if not self.ks or any(k < 1 for k in self.ks) or list(self.ks) != sorted(set(self.ks)):
            raise ConfigError(f"ks must be increasing positive integers, got {self.ks}")
        if self.view_k < 1 or self.tau < 0:
            raise ConfigError(f"need view_k ≥ 1 and tau ≥ 0, got {self.view_k}, {self.tau}")


@dataclass(frozen=True)
class ProbeBatch:
    """Per-probe outcomes of one gallery: the target and the product's candidates per k."""

    nearest: IntArray  # full-search target (gallery row)
    nearest_d: IntArray  # its integer squared distance D
    head_rank: IntArray  # 1-based rank of the target among real heads (ties count against)
    view_rank: IntArray  # 1-based rank of the target among all slots (real + decoys)
    head_ties: IntArray  # other real heads with exactly the target's head score
    hits: dict[int, npt.NDArray[np.bool_]]
    agree: dict[int, npt.NDArray[np.bool_]]
    padded: dict[int, IntArray]  # random candidates A added (decoys crowded B's view)
    ordered: IntArray  # best max(ks) real candidates in preselection order (-1 = none)


def _check_shapes(gallery: FloatArray, decoys: FloatArray, probes: FloatArray, m: int) -> None:
    if gallery.ndim != 2 or probes.ndim != 2 or gallery.shape[1] != probes.shape[1]:
        raise DimensionError(f"gallery {gallery.shape} and probes {probes.shape} disagree")
    if len(gallery) == 0 or m > gallery.shape[1]:
        raise DimensionError(f"need a non-empty gallery and head_dim ≤ {gallery.shape[1]}")
    if decoys.ndim != 2 or (len(decoys) and decoys.shape[1] != m):
        raise DimensionError(f"decoy heads must have shape (n, {m}), got {decoys.shape}")


def squared_distances(q_probes: IntArray, q_gallery: IntArray) -> IntArray:
    """Exact integer ``D`` for every (probe, template) pair.

    Computed as ``|p|² + |g|² − 2 p·g`` in float64: with ``|q_i| ≤ 2^s`` (s ≤ 20 here 11) every
    product and partial sum is an integer below 2^53, so the result is exact, not approximate.
    """
    p = q_probes.astype(np.float64)
    g = q_gallery.astype(np.float64)
    d = (p * p).sum(axis=1)[:, None] + (g * g).sum(axis=1)[None, :] - 2.0 * (p @ g.T)
    out: IntArray = np.rint(d).astype(np.int64)
    return out


def _view_floor(real: FloatArray, decoy: FloatArray, view_k: int) -> FloatArray:
    """Per probe: the ``view_k``-th largest score over all slots (B's cut-off)."""
    every = np.concatenate([real, decoy], axis=1)
    if view_k >= every.shape[1]:
        return np.full(len(real), -np.inf)
    part = np.partition(every, every.shape[1] - view_k, axis=1)
    floor: FloatArray = part[:, every.shape[1] - view_k]
    return floor


def _ordered_candidates(real: FloatArray, floor: FloatArray, depth: int) -> IntArray:
    """Best ``depth`` real templates inside B's view, best first (-1 where fewer are inside).

    Ties are broken by gallery row; in the product they are broken by B's random permutation.
    """
    depth = min(depth, real.shape[1])
    inside = np.where(real >= floor[:, None], real, -np.inf)
    top = np.argpartition(-inside, depth - 1, axis=1)[:, :depth]
    rows = np.arange(len(real))[:, None]
    order = np.argsort(-inside[rows, top], axis=1, kind="stable")
    best = top[rows, order]
    out: IntArray = np.where(np.isfinite(inside[rows, best]), best, -1).astype(np.int64)
    return out


def _decide(d: IntArray, rows: IntArray, tau: int) -> int:
    """The exact stage on candidate ``rows``: matched row, or -1 for "no match"."""
    best = int(rows[int(np.argmin(d[rows]))])
    return best if int(d[best]) <= tau else -1


def _candidate_set(
    ordered: IntArray, k: int, n: int, rng: random.Random
) -> tuple[IntArray, int]:
    """What A hands to the exact stage for ``k``: the whole gallery when ``n ≤ k``, else the
    best ``k`` real templates in B's view padded with random others (``NodeA._pad``)."""
    if n <= k:
        return np.arange(n, dtype=np.int64), 0
    chosen = [int(t) for t in ordered[:k] if t >= 0]
    missing = k - len(chosen)
    if missing:
        taken = set(chosen)
        chosen += rng.sample([t for t in range(n) if t not in taken], missing)
    return np.asarray(chosen, dtype=np.int64), missing


def study_probes(
    gallery_rot: FloatArray,
    decoy_heads: FloatArray,
    probes_rot: FloatArray,
    config: StudyConfig,
    rng: random.Random,
) -> ProbeBatch:
    """Run the study for one gallery on PCA-rotated unit vectors (see the module docstring).

    ``decoy_heads`` are the heads in the gallery's empty slots (shape ``(slots·blocks − N,
    head_dim)``); ``rng`` draws A's padding, as the product's ``NodeA.rng`` does.
    """
    m = config.head_dim
    _check_shapes(gallery_rot, decoy_heads, probes_rot, m)
    q_gallery = quantize(gallery_rot, config.scale_bits)
    g_head = gallery_rot[:, :m]
    parts: list[dict[str, Any]] = []
    for start in range(0, len(probes_rot), _CHUNK):
        chunk = probes_rot[start:start + _CHUNK]
        d = squared_distances(quantize(chunk, config.scale_bits), q_gallery)
        real = chunk[:, :m] @ g_head.T
        decoy = chunk[:, :m] @ decoy_heads.T
        parts.append(_study_chunk(d, real, decoy, config, rng))
    return _merge(parts, config.ks)


def _study_chunk(
    d: IntArray, real: FloatArray, decoy: FloatArray, config: StudyConfig, rng: random.Random
) -> dict[str, Any]:
    rows = np.arange(len(d))
    nearest = np.argmin(d, axis=1)
    own = real[rows, nearest]
    floor = _view_floor(real, decoy, config.view_k)
    ordered = _ordered_candidates(real, floor, max(config.ks))
    out: dict[str, Any] = {
        "nearest": nearest, "nearest_d": d[rows, nearest],
        "head_rank": 1 + (real > own[:, None]).sum(axis=1),
        "view_rank": 1 + (real > own[:, None]).sum(axis=1) + (decoy > own[:, None]).sum(axis=1),
        "head_ties": (real == own[:, None]).sum(axis=1) - 1,
        "ordered": ordered,
    }
    for k in config.ks:
        hits, agree, padded = [], [], []
        for j in rows:
            cand, pad = _candidate_set(ordered[j], k, d.shape[1], rng)
            hits.append(bool(np.any(cand == nearest[j])))
            want = int(nearest[j]) if int(d[j, nearest[j]]) <= config.tau else -1
            agree.append(_decide(d[j], cand, config.tau) == want)
            padded.append(pad)
        out[f"hit{k}"], out[f"agree{k}"], out[f"pad{k}"] = hits, agree, padded
    return out


def _merge(parts: list[dict[str, Any]], ks: Sequence[int]) -> ProbeBatch:
    def cat(name: str, dtype: type) -> npt.NDArray[Any]:
        return np.concatenate([np.asarray(p[name], dtype=dtype) for p in parts])

    return ProbeBatch(
        nearest=cat("nearest", np.int64), nearest_d=cat("nearest_d", np.int64),
        head_rank=cat("head_rank", np.int64), view_rank=cat("view_rank", np.int64),
        head_ties=cat("head_ties", np.int64),
        hits={k: cat(f"hit{k}", np.bool_) for k in ks},
        agree={k: cat(f"agree{k}", np.bool_) for k in ks},
        padded={k: cat(f"pad{k}", np.int64) for k in ks},
        ordered=np.vstack([p["ordered"] for p in parts]),
    )


def _rate(count: int, total: int) -> float | None:
    return count / total if total else None


def summarise(
    batch: ProbeBatch, config: StudyConfig, mated: npt.NDArray[np.bool_]
) -> dict[str, Any]:
    """Per-k counts and rates: hits (all / within τ), decision agreement, padding."""
    within = batch.nearest_d <= config.tau
    n, n_in = len(within), int(within.sum())
    per_k: dict[str, Any] = {}
    for k in config.ks:
        hits, agree = batch.hits[k], batch.agree[k]
        per_k[str(k)] = {
            "hit_all": int(hits.sum()), "hit_all_rate": _rate(int(hits.sum()), n),
            "hit_within": int(hits[within].sum()),
            "hit_within_rate": _rate(int(hits[within].sum()), n_in),
            "agree": int(agree.sum()), "agree_rate": _rate(int(agree.sum()), n),
            "disagree_mated": int((~agree & mated).sum()),
            "disagree_non_mated": int((~agree & ~mated).sum()),
            "probes_padded": int((batch.padded[k] > 0).sum()),
        }
    return {
        "probes": n, "mated": int(mated.sum()), "non_mated": int((~mated).sum()),
        "target_within_threshold": n_in,
        "head_rank_of_target": _rank_stats(batch.head_rank, within),
        "view_rank_max": int(batch.view_rank.max()),
        "probes_with_head_score_ties": int((batch.head_ties > 0).sum()),
        "per_k": per_k,
    }


def _rank_stats(ranks: IntArray, within: npt.NDArray[np.bool_]) -> dict[str, Any]:
    """Where the target lands in the head ranking (k needed for 100 % = the maximum)."""
    def stats(r: IntArray) -> dict[str, float | int | None]:
        if not len(r):
            return {"max": None, "p99": None, "p95": None, "median": None}
        return {"max": int(r.max()), "p99": float(np.quantile(r, 0.99)),
                "p95": float(np.quantile(r, 0.95)), "median": float(np.median(r))}

    return {"all": stats(ranks), "within_threshold": stats(ranks[within])}


# -- the check against the product's CKKS code ----------------------------------------------


def slot_layout(n: int, slots: int) -> tuple[int, int]:
    """(blocks, decoy slots) of a gallery of ``n`` templates in blocks of ``slots``."""
    blocks = max(1, math.ceil(n / slots))
    return blocks, blocks * slots - n


def verify_with_ckks(
    gallery_rot: FloatArray,
    decoy_heads: FloatArray,
    probes_rot: FloatArray,
    expected: IntArray,
    config: StudyConfig,
    ckks: CKKSParams,
    seed: int = 0,
) -> dict[str, Any]:
    """Same probes through real CKKS preselection; compare B's ranking with the plaintext one.

    Builds the blocks like the service (real heads in slots ``0..N−1`` in order, decoys after),
    encrypts each probe head as a client does, runs :func:`~pura.protocols.preselect.preselect`
    (A scores, masks and permutes; B decrypts and ranks) and compares the resolved candidate
    lists with ``expected`` (the plaintext model's ordered candidates, one row per probe).
    """
    m = config.head_dim
    sec = CKKSContext.generate(ckks)
    pub = sec.public()
    slots = pub.slot_count
    heads = np.vstack([gallery_rot[:, :m], decoy_heads])
    if len(heads) % slots:
        raise DimensionError(f"{len(heads)} heads do not fill blocks of {slots} slots")
    n = len(gallery_rot)
    blocks = []
    for b in range(len(heads) // slots):
        block = encrypt_block(pub, b, heads[b * slots:(b + 1) * slots])
        block.live = {s: b * slots + s for s in range(slots) if b * slots + s < n}
        blocks.append(block)
    rng = random.Random(seed)
    layout = BlockLayout(pub, m, lambda _n: decoy_heads[:_n], blocks)
    server = PreselectServer(pub, layout, rng=rng)
    view_k = min(config.view_k, len(heads))
    same = {k: 0 for k in config.ks}
    same_order = 0
    for probe, want in zip(probes_rot, expected, strict=True):
        query = [pub.ciphertext_to_bytes(c) for c in pub.encrypt_broadcast(probe[:m])]
        got, _ = preselect(server, sec, query, view_k)
        plain = [int(t) for t in want if t >= 0]
        for k in config.ks:
            same[k] += int(set(got[:k]) == set(plain[:k]))
        same_order += int(got[:len(plain)] == plain)
    total = len(probes_rot)
    return {
        "probes": total, "blocks": len(blocks), "view_k": view_k, "ckks": ckks.name,
        "same_top_k_set": {str(k): same[k] for k in config.ks},
        "same_order_to_depth": same_order, "depth": int(expected.shape[1]),
        "all_identical": all(v == total for v in same.values()) and same_order == total,
    }


# -- real LFW data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LFWDescriptors:
    """Unit descriptors of the study's images (see the module docstring for the protocol)."""

    multi: FloatArray  # image 1 of every person with ≥ 2 images (sorted by name)
    mated: FloatArray  # further images of those people
    mated_owner: IntArray  # row of ``multi`` each mated probe belongs to
    singles: FloatArray  # single-image people padding the largest gallery
    non_mated: FloatArray  # held-out single-image peopleDevTest people
    model_id: str


def _dev_test_singles(root: Path, people: dict[str, int]) -> list[str]:
    lines = (root / "peopleDevTest.txt").read_text(encoding="utf-8").splitlines()[1:]
    names = [p[0] for p in (line.split() for line in lines) if len(p) == 2]
    return sorted(name for name in names if people.get(name) == 1)


def load_lfw(non_mated: int, probes_per_identity: int, seed: int) -> LFWDescriptors:
    """Descriptors from the client's torch pipeline through the shared cache (embeds misses)."""
    from pura_client.datasets.embedded import l2_normalise
    from pura_client.datasets.lfw import LFWDataset
    from pura_client.embedding.batch import embed_files
    from pura_client.embedding.cache import EmbeddingCache
    from pura_client.embedding.pipeline import Embedder

    ds = LFWDataset.open()
    people = ds.people()
    multi = [name for name, c in people.items() if c >= 2]
    held = _dev_test_singles(ds.root, people)
    if not 0 < non_mated <= len(held):
        raise ConfigError(f"non_mated must be in 1..{len(held)}, got {non_mated}")
    held = sorted(random.Random(seed).sample(held, non_mated))
    padding = sorted(set(name for name, c in people.items() if c == 1) - set(held))
    mated = [(i, name, j) for i, name in enumerate(multi)
             for j in range(2, min(people[name], 1 + probes_per_identity) + 1)]
    paths = ([ds.image_path(n, 1) for n in multi] + [ds.image_path(n, j) for _, n, j in mated]
             + [ds.image_path(n, 1) for n in padding + held])
    pipeline = Embedder(device="cpu")
    _log(f"embedding {len(paths)} LFW images (cached: {pipeline.model_id})")
    results = embed_files(pipeline, paths, cache=EmbeddingCache(), progress=True)
    if any(r.descriptor is None for r in results):
        raise ConfigError("a study image has no detected face; the protocol needs all of them")
    vecs = l2_normalise(np.stack([r.descriptor for r in results if r.descriptor is not None]))
    a, b, c = len(multi), len(multi) + len(mated), len(multi) + len(mated) + len(padding)
    return LFWDescriptors(
        vecs[:a], vecs[a:b], np.asarray([i for i, _, _ in mated], dtype=np.int64),
        vecs[b:c], vecs[c:], pipeline.model_id,
    )


@dataclass(frozen=True)
class Gallery:
    """One study gallery: enrolled vectors and its probes (mated first)."""

    name: str
    vectors: FloatArray
    probes: FloatArray
    mated: npt.NDArray[np.bool_]


def galleries(data: LFWDescriptors, seed: int) -> list[Gallery]:
    """The three galleries of the module docstring, each with its mated + non-mated probes."""
    n_multi = len(data.multi)
    subset = np.sort(np.asarray(random.Random(seed).sample(range(n_multi), SUBSET_SIZE)))
    keep = np.isin(data.mated_owner, subset)
    out = []
    for name, vectors, mated in (
        (str(SUBSET_SIZE), data.multi[subset], data.mated[keep]),
        (str(n_multi), data.multi, data.mated),
        (str(n_multi + len(data.singles)), np.vstack([data.multi, data.singles]), data.mated),
    ):
        probes = np.vstack([mated, data.non_mated])
        flags = np.arange(len(probes)) < len(mated)
        out.append(Gallery(name, vectors, probes, flags))
    return out


# -- report -------------------------------------------------------------------------------------


def markdown_table(result: dict[str, Any]) -> str:
    """k × gallery size: hit rate (all), hit rate (target within τ), decision agreement."""
    sizes = list(result["galleries"])
    head = "| k | " + " | ".join(f"N={s}: hit all / hit ≤τ / agree" for s in sizes) + " |"
    lines = [head, "|---|" + "---|" * len(sizes)]
    for k in result["ks"]:
        cells = []
        for s in sizes:
            row = result["galleries"][s]["per_k"][str(k)]
            cells.append(f"{_pct(row['hit_all_rate'])} / {_pct(row['hit_within_rate'])} / "
                         f"{_pct(row['agree_rate'])}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.2f}%"


def recommend(result: dict[str, Any]) -> int | None:
    """Smallest k whose decision agreement is 100 % on every gallery (None if no k is)."""
    for k in result["ks"]:
        rows = [g["per_k"][str(k)] for g in result["galleries"].values()]
        if all(r["agree"] == g["probes"] for r, g in zip(rows, result["galleries"].values(),
                                                              strict=True)):
            return int(k)
    return None


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharex=True)
    panels = (("hit_all_rate", "target in candidates (all probes)"),
              ("hit_within_rate", "target in candidates (target ≤ τ)"),
              ("agree_rate", "decision = plaintext full search"))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for size, g in result["galleries"].items():
            ys = [g["per_k"][str(k)][key] for k in result["ks"]]
            ax.plot(result["ks"], [float("nan") if y is None else y for y in ys], marker="o",
                    label=f"N = {size}")
        ax.axvline(result["product_top_k"], color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(result["ks"], [str(k) for k in result["ks"]])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("top_k (candidates to the exact stage)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("fraction of probes")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"CKKS preselection recall on LFW (head_dim={result['head_dim']}, "
                 f"view_k={result['view_k']}, τ={result['threshold_sq_distance']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(
    out: Path, *, preset: str = "default", seed: int = 0, non_mated: int = 1000,
    probes_per_identity: int = 2, ckks_probes: int = 50,
) -> dict[str, Any]:
    """Whole study: load LFW, every gallery, the CKKS check, JSON + PNG in ``out``."""
    params = get_preset(preset)
    enc = params.encoding
    config = StudyConfig(enc.head_dim, enc.scale_bits,
                         threshold_units(DEFAULT_THRESHOLD_SQ, enc.scale_bits))
    pca = load_shipped_pca(enc.model_id)
    data = load_lfw(non_mated, probes_per_identity, seed)
    result: dict[str, Any] = {
        "machine": machine_info(), "model_id": data.model_id, "preset": preset,
        "head_dim": enc.head_dim, "dim": enc.dim, "scale_bits": enc.scale_bits,
        "threshold_sq_distance": DEFAULT_THRESHOLD_SQ, "threshold_units": config.tau,
        "view_k": config.view_k, "product_top_k": DEFAULT_TOP_K, "ks": list(config.ks),
        "slot_count": params.ckks.slot_count, "seed": seed, "galleries": {},
    }
    rng = random.Random(seed)
    largest = None
    for g in galleries(data, seed):  # the largest gallery comes last
        result["galleries"][g.name], largest = _one_gallery(g, pca, config,
                                                            params.ckks.slot_count, rng)
    if largest is not None and ckks_probes > 0:
        result["ckks_check"] = _ckks_check(largest, config, params.ckks, ckks_probes, seed)
    out.mkdir(parents=True, exist_ok=True)
    result["recommended_top_k"] = recommend(result)
    (out / "preselect_recall.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out / "preselect_recall.png")
    return result


def _one_gallery(
    g: Gallery, pca: PCARotation, config: StudyConfig, slots: int, rng: random.Random
) -> tuple[dict[str, Any], tuple[FloatArray, FloatArray, FloatArray, ProbeBatch]]:
    t0 = time.perf_counter()
    blocks, n_decoys = slot_layout(len(g.vectors), slots)
    decoys = pca.sample_decoy_heads(n_decoys, config.head_dim, random.Random(rng.getrandbits(64)))
    gallery_rot, probes_rot = pca.apply(g.vectors), pca.apply(g.probes)
    batch = study_probes(gallery_rot, decoys, probes_rot, config, rng)
    summary = summarise(batch, config, g.mated)
    summary.update({"gallery": len(g.vectors), "blocks": blocks, "decoy_slots": n_decoys,
                    "seconds": round(time.perf_counter() - t0, 2)})
    _log(f"N={g.name}: {summary['probes']} probes, {summary['seconds']} s")
    return summary, (gallery_rot, decoys, probes_rot, batch)


def _ckks_check(
    last: tuple[FloatArray, FloatArray, FloatArray, ProbeBatch], config: StudyConfig,
    ckks: CKKSParams, n: int, seed: int,
) -> dict[str, Any]:
    """Real CKKS on ``n`` probes of the largest gallery, the probes whose target ranks worst
    first (the ones a ranking error would change), the rest drawn at random."""
    gallery_rot, decoys, probes_rot, batch = last
    worst = list(np.argsort(-batch.head_rank, kind="stable")[: n // 2])
    rest = [i for i in range(len(probes_rot)) if i not in set(worst)]
    pick = np.asarray(worst + random.Random(seed).sample(rest, n - len(worst)), dtype=np.int64)
    t0 = time.perf_counter()
    check = verify_with_ckks(gallery_rot, decoys, probes_rot[pick], batch.ordered[pick], config,
                             ckks, seed)
    check["gallery"] = len(gallery_rot)
    check["seconds"] = round(time.perf_counter() - t0, 1)
    _log(f"CKKS check: {check}")
    return check


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--non-mated", type=int, default=1000)
    parser.add_argument("--probes-per-identity", type=int, default=2)
    parser.add_argument("--ckks-probes", type=int, default=50)
    args = parser.parse_args(argv)
    result = run(args.out, preset=args.preset, seed=args.seed, non_mated=args.non_mated,
                 probes_per_identity=args.probes_per_identity, ckks_probes=args.ckks_probes)
    print(markdown_table(result))
    print(f"\nrecommended top_k (smallest with 100 % decision agreement on every gallery): "
          f"{result['recommended_top_k']}; CKKS check: {result.get('ckks_check')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
