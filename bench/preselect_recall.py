"""How many preselection candidates (``top_k``) does the exact stage need? (issue 5)

``python -m bench.preselect_recall --out bench/results`` → ``preselect_recall.json``, ``.png``
and a markdown table on stdout.

Why this matters: the exact threshold-Paillier stage costs nearly linearly in ``top_k`` (B
decrypts ~⌈top_k·128/57⌉ packed 3072-bit ciphertexts, the secure argmin has ⌈log2 top_k⌉
rounds), while a too small ``top_k`` silently changes answers: when the full 128-d nearest
neighbour is not among the candidates, the exact stage returns another subject or "no match".

What is measured, on real LFW descriptors of the preset's face model (the client's torch
pipeline of that model, through the shared embedding cache), for each probe and each ``k``:

* the *threshold*: the model's default (``SearchConfig.for_model``: dlib 0.115, SFace 1.0536 as
  a squared distance of unit vectors);
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
from pura.pipeline.config import SearchConfig
from pura.protocols.identify import threshold_units
from pura.protocols.preselect import PreselectServer, preselect

#: The product's search defaults (one place: pura.pipeline.config).
PRODUCT = SearchConfig()

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Candidate counts studied (the exact stage's cost grows ~linearly in k).
KS: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
#: Head sizes of the sensitivity sweep (CKKS scoring and query size grow linearly in it).
HEAD_DIMS: tuple[int, ...] = (16, 24, 32, 48, 64)
#: Gallery sizes drawn from people with ≥ 2 images; "all" sizes are added by :func:`load_lfw`.
SUBSET_SIZE = 1000
#: Score-matrix entries per vectorised chunk (2^22 float64 = 32 MiB per array).
_CHUNK_ENTRIES = 1 << 22
#: Head sizes of the synthetic extrapolation (fewer: each 100K gallery costs ~1 min).
EXTRAPOLATION_HEAD_DIMS: tuple[int, ...] = (32, 48, 64)
#: Gallery sizes of the synthetic extrapolation (real LFW gallery + synthetic strangers).
EXTRAPOLATION_SIZES: tuple[int, ...] = (10_000, 100_000)


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
    view_k: int = PRODUCT.view_k
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
    decided: dict[int, IntArray]  # the exact stage's answer on the candidates (-1 = no match)
    padded: dict[int, IntArray]  # random candidates A added (decoys crowded B's view)
    ordered: IntArray  # best max(ks) real candidates in preselection order (-1 = none)
    tau: int  # the threshold the decisions used

    @property
    def wanted(self) -> IntArray:
        """The plaintext full search's answer (gallery row, -1 = no match)."""
        out: IntArray = np.where(self.nearest_d <= self.tau, self.nearest, -1)
        return out


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
    step = max(1, _CHUNK_ENTRIES // (len(gallery_rot) + len(decoy_heads)))
    for start in range(0, len(probes_rot), step):
        chunk = probes_rot[start:start + step]
        d = squared_distances(quantize(chunk, config.scale_bits), q_gallery)
        real = chunk[:, :m] @ g_head.T
        decoy = chunk[:, :m] @ decoy_heads.T
        parts.append(_study_chunk(d, real, decoy, config, rng))
    return _merge(parts, config)


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
        hits, decided, padded = [], [], []
        for j in rows:
            cand, pad = _candidate_set(ordered[j], k, d.shape[1], rng)
            hits.append(bool(np.any(cand == nearest[j])))
            decided.append(_decide(d[j], cand, config.tau))
            padded.append(pad)
        out[f"hit{k}"], out[f"dec{k}"], out[f"pad{k}"] = hits, decided, padded
    return out


def _merge(parts: list[dict[str, Any]], config: StudyConfig) -> ProbeBatch:
    def cat(name: str, dtype: type) -> npt.NDArray[Any]:
        return np.concatenate([np.asarray(p[name], dtype=dtype) for p in parts])

    return ProbeBatch(
        nearest=cat("nearest", np.int64), nearest_d=cat("nearest_d", np.int64),
        head_rank=cat("head_rank", np.int64), view_rank=cat("view_rank", np.int64),
        head_ties=cat("head_ties", np.int64),
        hits={k: cat(f"hit{k}", np.bool_) for k in config.ks},
        decided={k: cat(f"dec{k}", np.int64) for k in config.ks},
        padded={k: cat(f"pad{k}", np.int64) for k in config.ks},
        ordered=np.vstack([p["ordered"] for p in parts]),
        tau=config.tau,
    )


def _rate(count: int, total: int) -> float | None:
    return count / total if total else None


def summarise(
    batch: ProbeBatch, config: StudyConfig, truth: IntArray
) -> dict[str, Any]:
    """Per-k counts and rates: hits (all / within τ), decision agreement, padding.

    ``truth``: the probe's own gallery row (mated) or -1 (non-mated), for the plaintext
    accuracy figures and the correct/incorrect split of the disagreements.
    """
    within = batch.nearest_d <= config.tau
    mated = truth >= 0
    n, n_in = len(within), int(within.sum())
    want = batch.wanted
    per_k: dict[str, Any] = {}
    for k in config.ks:
        hits, got = batch.hits[k], batch.decided[k]
        agree = got == want
        per_k[str(k)] = {
            "hit_all": int(hits.sum()), "hit_all_rate": _rate(int(hits.sum()), n),
            "hit_within": int(hits[within].sum()),
            "hit_within_rate": _rate(int(hits[within].sum()), n_in),
            "agree": int(agree.sum()), "agree_rate": _rate(int(agree.sum()), n),
            "disagree_mated": int((~agree & mated).sum()),
            "disagree_non_mated": int((~agree & ~mated).sum()),
            "disagree_match_lost": int((~agree & (got == -1)).sum()),
            "disagree_other_subject": int((~agree & (got >= 0)).sum()),
            "disagree_correct_match_lost": int((~agree & mated & (want == truth)).sum()),
            "mated_correct_match": int((mated & (got == truth)).sum()),
            "non_mated_false_match": int((~mated & (got >= 0)).sum()),
            "probes_padded": int((batch.padded[k] > 0).sum()),
        }
    return {
        "probes": n, "mated": int(mated.sum()), "non_mated": int((~mated).sum()),
        "target_within_threshold": n_in,
        "plaintext_full_search": {
            "mated_correct_match": int((mated & (want == truth)).sum()),
            "mated_nearest_is_mate": int((mated & (batch.nearest == truth)).sum()),
            "non_mated_false_match": int((~mated & (want >= 0)).sum()),
        },
        "head_rank_of_target": _rank_stats(batch.head_rank, within),
        "view_rank_max": int(batch.view_rank.max()),
        "probes_with_head_score_ties": int((batch.head_ties > 0).sum()),
        "per_k": per_k,
        "smallest_k_full_agreement": smallest_full_agreement(
            {"per_k": per_k, "probes": n}, config.ks),
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
        query = [pub.ciphertext_to_bytes(pub.encrypt_query(probe[:m]))]
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
        "all_sets_identical": all(v == total for v in same.values()),
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


def load_lfw(
    non_mated: int, probes_per_identity: int, seed: int,
    model_id: str = "dlib_face_recognition_resnet_model_v1",
) -> LFWDescriptors:
    """Descriptors from the model's client torch pipeline through the shared cache (embeds
    misses)."""
    from pura_client.datasets.lfw import LFWDataset
    from pura_client.embedding.aligned import pipeline_for
    from pura_client.embedding.batch import embed_files
    from pura_client.embedding.cache import EmbeddingCache

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
    pipeline = pipeline_for(model_id, device="cpu")
    _log(f"embedding {len(paths)} LFW images (cached: {pipeline.model_id})")
    results = embed_files(pipeline, paths, cache=EmbeddingCache(), progress=True)
    if any(r.descriptor is None for r in results):
        raise ConfigError("a study image has no detected face; the protocol needs all of them")
    raw = np.stack([r.descriptor for r in results if r.descriptor is not None]).astype(np.float64)
    vecs = raw / np.linalg.norm(raw, axis=1, keepdims=True)
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
    truth: IntArray  # the probe's own gallery row, -1 for non-mated probes


def galleries(data: LFWDescriptors, seed: int, subset_size: int = SUBSET_SIZE) -> list[Gallery]:
    """The three galleries of the module docstring, each with its mated + non-mated probes."""
    n_multi = len(data.multi)
    if not 0 < subset_size <= n_multi:
        raise ConfigError(f"subset_size must be in 1..{n_multi}, got {subset_size}")
    subset = np.sort(np.asarray(random.Random(seed).sample(range(n_multi), subset_size)))
    keep = np.isin(data.mated_owner, subset)
    sub_owner = np.searchsorted(subset, data.mated_owner[keep]).astype(np.int64)
    out = []
    for name, vectors, mated, owner in (
        (str(subset_size), data.multi[subset], data.mated[keep], sub_owner),
        (str(n_multi), data.multi, data.mated, data.mated_owner),
        (str(n_multi + len(data.singles)), np.vstack([data.multi, data.singles]), data.mated,
         data.mated_owner),
    ):
        probes = np.vstack([mated, data.non_mated])
        truth = np.concatenate([owner, np.full(len(data.non_mated), -1, dtype=np.int64)])
        out.append(Gallery(name, vectors, probes, truth))
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


def sweep_table(result: dict[str, Any]) -> str:
    """head_dim × gallery: smallest k with 100 % agreement (worst within-τ head rank)."""
    sweep = result.get("head_dim_sweep", {})
    if not sweep:
        return "(no head_dim sweep)"
    sizes = list(result["galleries"])
    lines = ["| head_dim | " + " | ".join(
        f"N={s}: k for 100 % agree (max rank ≤τ), agree @k={result['product_top_k']}"
        for s in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for m, row in sweep.items():
        cells = [f"{c['smallest_k_full_agreement']} ({c['head_rank_within_threshold_max']}), "
                 f"{_pct(c['agree_rate_at_product_top_k'])}" for c in (row[s] for s in sizes)]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def extrapolation_table(result: dict[str, Any]) -> str:
    """Synthetic sizes × head_dim: smallest k with 100 % agreement (worst within-τ rank)."""
    ext = result.get("synthetic_extrapolation", {}).get("by_size_then_head_dim", {})
    if not ext:
        return "(no synthetic extrapolation)"
    dims = list(next(iter(ext.values())))
    lines = ["| synthetic N | " + " | ".join(
        f"m={m}: k for 100 % (max rank ≤τ), agree @k={result['product_top_k']}" for m in dims)
        + " |", "|---|" + "---|" * len(dims)]
    for n, row in ext.items():
        cells = [f"{c['smallest_k_full_agreement']} ({c['head_rank_within_threshold_max']}), "
                 f"{_pct(c['agree_rate_at_product_top_k'])}" for c in (row[m] for m in dims)]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.2f}%"


def recommend(result: dict[str, Any]) -> int | None:
    """Smallest k whose decision agreement is 100 % on every gallery (None if no k is)."""
    for k in result["ks"]:
        if all(g["per_k"][str(k)]["agree"] == g["probes"] for g in result["galleries"].values()):
            return int(k)
    return None


def smallest_full_agreement(summary: dict[str, Any], ks: Sequence[int]) -> int | None:
    """Smallest studied k with 100 % decision agreement in one gallery's summary."""
    for k in ks:
        if summary["per_k"][str(k)]["agree"] == summary["probes"]:
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
    head_dims: Sequence[int] = HEAD_DIMS, extrapolation_sizes: Sequence[int] = EXTRAPOLATION_SIZES,
    head_dim: int | None = None,
    extrapolation_head_dims: Sequence[int] = EXTRAPOLATION_HEAD_DIMS,
) -> dict[str, Any]:
    """Whole study: load LFW, every gallery, the CKKS check, JSON + PNG in ``out``.

    ``head_dim`` overrides the preset's (to study, CKKS check included, a candidate setting).
    """
    params = get_preset(preset)
    enc = params.encoding
    m = enc.head_dim if head_dim is None else head_dim
    if not 0 < m <= enc.dim:
        raise ConfigError(f"head_dim must be in 1..{enc.dim}, got {m}")
    search = SearchConfig.for_model(enc.model_id)
    config = StudyConfig(m, enc.scale_bits, threshold_units(search.tau, enc.scale_bits))
    pca = load_shipped_pca(enc.model_id)
    data = load_lfw(non_mated, probes_per_identity, seed, enc.model_id)
    result: dict[str, Any] = {
        "machine": machine_info(), "model_id": data.model_id, "preset": preset,
        "head_dim": m, "preset_head_dim": enc.head_dim, "dim": enc.dim,
        "scale_bits": enc.scale_bits,
        "threshold_sq_distance": search.tau, "threshold_units": config.tau,
        "view_k": config.view_k, "product_top_k": PRODUCT.top_k, "ks": list(config.ks),
        "slot_count": params.ckks.slot_count, "seed": seed, "galleries": {},
    }
    rng = random.Random(seed)
    largest = None
    gals = galleries(data, seed)
    for g in gals:  # the largest gallery comes last
        result["galleries"][g.name], largest = _one_gallery(g, pca, config,
                                                            params.ckks.slot_count, rng)
    result["head_dim_sweep"] = head_dim_sweep(gals, pca, config, params.ckks.slot_count,
                                              head_dims, seed)
    if extrapolation_sizes:
        result["synthetic_extrapolation"] = {
            "note": "largest real gallery + Gaussian strangers from the PCA face model; "
                    "probes are the real ones; a lower bound on the k needed, not a measurement",
            "by_size_then_head_dim": extrapolate(
                gals[-1], pca, config, params.ckks.slot_count, extrapolation_sizes,
                extrapolation_head_dims, seed),
        }
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
    summary = summarise(batch, config, g.truth)
    summary.update({"gallery": len(g.vectors), "blocks": blocks, "decoy_slots": n_decoys,
                    "seconds": round(time.perf_counter() - t0, 2)})
    _log(f"N={g.name}: {summary['probes']} probes, {summary['seconds']} s")
    return summary, (gallery_rot, decoys, probes_rot, batch)


def head_dim_sweep(
    gals: Sequence[Gallery], pca: PCARotation, config: StudyConfig, slots: int,
    head_dims: Sequence[int], seed: int,
) -> dict[str, dict[str, Any]]:
    """Sensitivity: how the needed k moves with ``head_dim`` (CKKS cost is linear in it)."""
    out: dict[str, dict[str, Any]] = {}
    for m in head_dims:
        cfg = StudyConfig(m, config.scale_bits, config.tau, config.view_k, config.ks)
        rng = random.Random(seed)
        row: dict[str, Any] = {}
        for g in gals:
            summary, _ = _one_gallery(g, pca, cfg, slots, rng)
            row[g.name] = _sweep_cell(summary)
        out[str(m)] = row
    return out


def synthetic_strangers(pca: PCARotation, n: int, rng: random.Random) -> FloatArray:
    """``n`` unit vectors (original space) drawn from the rotation's N(mean, cov) face model.

    The same model the product uses for decoy heads, here in all 128 dimensions. Only for the
    extrapolation beyond LFW's 5,749 people: a Gaussian has the real faces' second moments but
    not their clusters (look-alikes), so the k it suggests is a lower bound, not a measurement.
    """
    gen = np.random.default_rng(rng.getrandbits(128))
    rotated = gen.multivariate_normal(pca.mean, pca.cov, size=n, method="eigh")
    rotated /= np.linalg.norm(rotated, axis=1, keepdims=True)
    out: FloatArray = rotated @ pca.matrix  # R is orthogonal: x = Rᵀ x'
    return out


def extrapolate(
    base: Gallery, pca: PCARotation, config: StudyConfig, slots: int, sizes: Sequence[int],
    head_dims: Sequence[int], seed: int,
) -> dict[str, dict[str, Any]]:
    """The largest real gallery padded with synthetic strangers to each of ``sizes``."""
    rng = random.Random(seed)
    extra = max(sizes, default=len(base.vectors)) - len(base.vectors)
    strangers = synthetic_strangers(pca, max(0, extra), rng)
    out: dict[str, dict[str, Any]] = {}
    for n in sizes:
        if n <= len(base.vectors):
            raise ConfigError(f"extrapolation size {n} is not above the real {len(base.vectors)}")
        vectors = np.vstack([base.vectors, strangers[: n - len(base.vectors)]])
        g = Gallery(str(n), vectors, base.probes, base.truth)
        row: dict[str, Any] = {}
        for m in head_dims:
            cfg = StudyConfig(m, config.scale_bits, config.tau, config.view_k, config.ks)
            summary, _ = _one_gallery(g, pca, cfg, slots, random.Random(rng.getrandbits(64)))
            row[str(m)] = _sweep_cell(summary)
        out[str(n)] = row
    return out


def _sweep_cell(summary: dict[str, Any]) -> dict[str, Any]:
    ranks = summary["head_rank_of_target"]["within_threshold"]
    return {
        "head_rank_within_threshold_max": ranks["max"],
        "head_rank_within_threshold_p99": ranks["p99"],
        "agree_rate_at_product_top_k": summary["per_k"].get(str(PRODUCT.top_k), {}).get(
            "agree_rate"),
        "smallest_k_full_agreement": summary["smallest_k_full_agreement"],
        "target_within_threshold": summary["target_within_threshold"],
        "non_mated_false_match_plaintext":
            summary["plaintext_full_search"]["non_mated_false_match"],
    }


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
    parser.add_argument("--preset", default="default",
                        help="parameter preset; its model's descriptors and threshold are used")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--non-mated", type=int, default=1000)
    parser.add_argument("--probes-per-identity", type=int, default=2)
    parser.add_argument("--ckks-probes", type=int, default=50)
    parser.add_argument("--head-dim", type=int, default=None,
                        help="study this head size instead of the preset's")
    parser.add_argument("--head-dims", type=int, nargs="*", default=list(HEAD_DIMS),
                        help="head sizes of the sensitivity sweep (none: skip it)")
    parser.add_argument("--extrapolate", type=int, nargs="*", default=list(EXTRAPOLATION_SIZES),
                        help="synthetic gallery sizes beyond LFW (none: skip)")
    parser.add_argument("--extrapolate-head-dims", type=int, nargs="*",
                        default=list(EXTRAPOLATION_HEAD_DIMS),
                        help="head sizes of the synthetic extrapolation")
    args = parser.parse_args(argv)
    result = run(args.out, preset=args.preset, seed=args.seed, non_mated=args.non_mated,
                 probes_per_identity=args.probes_per_identity, ckks_probes=args.ckks_probes,
                 head_dims=args.head_dims, extrapolation_sizes=args.extrapolate,
                 head_dim=args.head_dim, extrapolation_head_dims=args.extrapolate_head_dims)
    print(markdown_table(result))
    print()
    print(sweep_table(result))
    print()
    print(extrapolation_table(result))
    print(f"\nrecommended top_k (smallest with 100 % decision agreement on every gallery): "
          f"{result['recommended_top_k']}; CKKS check: {result.get('ckks_check')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
