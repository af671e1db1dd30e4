"""What two unbuilt mechanisms would need to meet issue 12's targets on B's view (projections).

``python -m bench.b_view_mechanisms --recording /tmp/views-1k \
--out bench/results/b_view_mechanisms.json`` (also writes ``b_view_mechanisms.png`` next
to the JSON).

Input: a ``pura-audit views`` run (its ``work/`` holds A's and B's recordings of the real servers
and the keys). B's views are decrypted once with B's own key (:func:`views.b_views`) and cached
(``--cache``, default ``/tmp/b_views_<name>.npz``). Every attack and statistic is the audit's own
(:mod:`pura_client.audit.view_attacks`: ``aligned_matrix``, ``recovered_subspace``,
``subspace_cosines``, ``match_statistic``, ``auc``; B's candidate selection is the product's
:func:`pura.protocols.candidates.choose`). What is simulated is the *mechanism*, on top of the
recorded views:

1. **Epochs bounded at E queries** (fresh secret slot layout per epoch, so B aligns only the E
   queries of one epoch): B's subspace attack on E recorded queries, several random draws per E.
   With E < head_dim B's SVD yields only E directions; B completes them with random directions
   (its best guess for the rest) so that the figure compares ``head_dim``-dimensional subspaces,
   like the random baseline does. The audit's unpadded figure (mean over the E angles found) is
   reported too.
2. **Extra Gaussian noise σ' in B's masked units** (``a·S + c``, ``a ∈ [2^16, 2^17)`` for
   dlib-fast, so σ' is ``σ'/a`` in score units; B's own flooding is ``FLOOD_SIGMA`` = 128). Against
   B itself this only works if A adds it under encryption before B decrypts (B sees its own
   decryptions before any noise it adds). Cost: recall of the true mate in B's ``top_k``.
3. **Per-query planted near-match decoys**: d values per query at random positions (empty slots,
   or live slots of other subjects), each at a level a mate has in a recorded mated view (a
   mated probe's top score as ``z`` above its view's median in robust spread units, replayed in
   this query's own median and spread). Match detection with the audit's statistic and with an
   outlier count; cost: top_k places taken and the top_k that restores today's recall.

These are projections from recorded views of mechanisms that do not exist in the product; they
are not privacy measurements of the product.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pura_client.audit import view_attacks as va

from pura.pipeline.config import DEFAULT_TOP_K, DEFAULT_VIEW_K
from pura.protocols.candidates import choose
from pura.protocols.preselect import FLOOD_SIGMA

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

NATURE = ("projection: simulations of unbuilt mechanisms (per-epoch layouts bounded at E "
          "queries, extra noise before B decrypts, planted decoys) applied to B's recorded "
          "views of real queries; not a privacy measurement of the product")
EPOCH_SIZES = (2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 24, 32, 48, 64, 96, 128, 256, 400)
#: Across gallery epochs (the audit's whole-run setting): fewer sizes and draws, each SVD is big.
WHOLE_RUN_SIZES = (8, 32, 64, 128, 256, 400)
SIGMAS = (0.0, 128.0, 512.0, 1024.0, 2048.0, 3072.0, 4096.0, 6144.0, 8192.0, 12288.0, 16384.0,
          32768.0)
FIXED_DECOYS = (0, 1, 2, 3, 4, 6, 8)
MAX_DECOYS = (1, 2, 4, 6, 8, 12, 16, 24)
RECALL_K = (6, 12, 24, 48)
OUTLIER_Z = (2.5, 3.0, 3.5, 4.0, 5.0)
AUC_TARGET = 0.6
SUBSPACE_MARGIN = 0.1


@dataclass
class Recorded:
    """What the projections need from one recording (ground truth kept apart from B's view)."""

    queries: list[va.QueryView]  # B's decrypted views, A's block order and rotations
    values: FloatArray  # queries × positions: the views concatenated (B's view)
    mated: npt.NDArray[np.bool_]
    epochs: IntArray
    mate_pos: IntArray  # view position of the true mate (mated probes), else -1 (ground truth)
    held: list[npt.NDArray[np.bool_]]  # per query: positions that hold a live template
    heads: dict[int, FloatArray]  # block id -> true heads (slots × head_dim), auditor-decrypted
    head_dim: int
    slots: int


# --- loading ---------------------------------------------------------------------------------


def default_cache(recording: Path) -> Path:
    name = recording.resolve().name.removeprefix("views-")
    return Path(f"/tmp/b_views_{name}.npz")


def load(recording: Path, cache: Path) -> Recorded:
    """B's views (decrypted once, cached), A's recorded state, the store's slots (truth)."""
    from pura_client.audit import views
    from pura_client.audit.recordings import Recording

    from pura.crypto.params import get_preset
    from pura.gallery.store import GalleryStore

    work = recording / "work"
    run = views.Run.load(work / "run.json")
    config = json.loads((work / "config.json").read_text()) if (work / "config.json").exists() \
        else {"profile": "dlib-fast"}
    head_dim = get_preset(config["profile"]).encoding.head_dim
    rec_a = Recording(work / "record" / "a")
    if cache.exists():
        raw = np.load(cache)
        flat, counts = raw["values"], raw["nviews"]
    else:
        decrypted = views.b_views(Recording(work / "record" / "b"), work / "keys" / "b")
        flat = np.stack([np.concatenate(v) for v, _ in decrypted])
        counts = np.array([len(v) for v, _ in decrypted])
        np.savez(cache, values=flat, nviews=counts)
    states = views._states(rec_a)
    if not len(flat) == len(states) == len(run.probes):
        raise ValueError(f"{len(flat)} views, {len(states)} states, {len(run.probes)} probes")
    store = GalleryStore(rec_a.root / "data" / "gallery.db")
    try:
        where = {(t.subject_id): (t.block_no, t.slot) for t in store.all_templates(
            views.COLLECTION)}
    finally:
        store.close()
    queries, mate_pos, held = [], [], []
    for row, counted, state, probe in zip(flat, counts, states, run.probes, strict=True):
        if state is None:
            raise ValueError("A's recording lacks a preselection state")
        n = int(state["slot_count"])
        order, rots = tuple(state["block_order"]), tuple(state["rotations"])
        parts = [np.asarray(p, float) for p in np.split(row, int(counted))]
        queries.append(va.QueryView(parts, order, rots, probe.epoch, probe.mated, order, rots))
        live = np.zeros(len(row), bool)
        for view, (table, rot) in enumerate(zip(state["slot_tables"], rots, strict=True)):
            for slot in table:
                live[view * n + (int(slot) - rot) % n] = True
        held.append(live)
        pos = -1
        if probe.mated:
            block, slot = where[probe.label]
            view = order.index(block)
            pos = view * n + (slot - rots[view]) % n
            if not live[pos]:
                raise ValueError(f"{probe.label}'s slot was not live when it was probed")
        mate_pos.append(pos)
    blocks = sorted({b for q in queries for b in q.block_order or ()})
    heads = {b: views.true_heads(rec_a, work / "keys" / "b", b) for b in blocks}
    return Recorded(queries, np.asarray(flat, float), np.array([q.mated for q in queries]),
                    np.array([q.epoch for q in queries]), np.array(mate_pos), held, heads,
                    head_dim, len(queries[0].views[0]))


# --- 1. epochs bounded at E queries ----------------------------------------------------------


def epoch_point(queries: Sequence[va.QueryView], heads: FloatArray, dim: int,
                rng: np.random.Generator) -> tuple[float, float, float]:
    """(padded cosine, audit's unpadded cosine, random baseline) of B's attack on ``queries``
    (one epoch). ``heads``: slots × head_dim in slot order, rolled into the first query's
    frame as the audit does."""
    recovered = va.recovered_subspace(va.aligned_matrix(queries), dim)
    ref = queries[0]
    rot = ref.rotations[0] if ref.rotations else 0
    truth = np.roll(heads, -rot, axis=0)
    seed = int(rng.integers(1 << 31))
    cos, rand = va.subspace_cosines(va.complete_basis(recovered, dim, rng), truth,
                                    np.random.default_rng(seed))
    unpadded, _ = va.subspace_cosines(recovered, truth, np.random.default_rng(seed))
    return cos, unpadded, rand


def epoch_curve(queries: Sequence[va.QueryView], heads: FloatArray, dim: int,
                sizes: Sequence[int], draws: int, seed: int) -> list[dict[str, Any]]:
    """Per epoch length E: B's subspace cosine over ``draws`` random E-query epochs."""
    rng = np.random.default_rng(seed)
    out = []
    for e in sizes:
        if e > len(queries):
            continue
        n = 1 if e == len(queries) else draws
        points = [epoch_point([queries[i] for i in rng.choice(len(queries), e, replace=False)],
                              heads, dim, rng) for _ in range(n)]
        cos, unpadded, rand = (np.array(x) for x in zip(*points, strict=True))
        out.append({"E": e, "draws": n, "cosine_mean": float(cos.mean()),
                    "cosine_std": float(cos.std()), "cosine_min": float(cos.min()),
                    "cosine_max": float(cos.max()), "unpadded_mean": float(unpadded.mean()),
                    "random_mean": float(rand.mean())})
    return out


def largest_meeting(curve: Sequence[dict[str, Any]], key: str) -> int | None:
    """Largest E whose ``key`` figure is ≤ random + 0.1, with every smaller E meeting it too."""
    best = None
    for point in curve:
        if point[key] > point["random_mean"] + SUBSPACE_MARGIN:
            break
        best = int(point["E"])
    return best


# --- B's match statistics and the candidates it would choose ---------------------------------


def robust(values: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per row: median and a robust spread (1.4826·MAD), which a few planted values barely move."""
    med = np.median(values, axis=1)
    mad = 1.4826 * np.median(np.abs(values - med[:, None]), axis=1)
    return med, np.where(mad > 0, mad, 1.0)


def audit_statistic(values: FloatArray) -> FloatArray:
    return np.array([va.match_statistic([row]) for row in values])


def outlier_count(values: FloatArray, z: float,
                  centre: tuple[FloatArray, FloatArray] | None = None) -> FloatArray:
    """How many positions stand ``z`` robust spreads above the view's median (``centre``:
    :func:`robust` of ``values``, when already computed)."""
    med, spread = centre if centre is not None else robust(values)
    out: FloatArray = ((values - med[:, None]) / spread[:, None] > z).sum(axis=1).astype(float)
    return out


def auc_of(stat: FloatArray, mated: npt.NDArray[np.bool_]) -> float:
    return float(va.auc(list(stat[mated]), list(stat[~mated])))


def b_best(auc: float) -> float:
    """B can flip a statistic that ranks mated probes low: its best AUC is max(AUC, 1 − AUC)."""
    return max(auc, 1.0 - auc)


def match_aucs(values: FloatArray, mated: npt.NDArray[np.bool_]) -> dict[str, float]:
    """The audit's statistic, and the best outlier count over thresholds (B's best of each)."""
    audit = auc_of(audit_statistic(values), mated)
    centre = robust(values)
    counts = {z: b_best(auc_of(outlier_count(values, z, centre), mated)) for z in OUTLIER_Z}
    z_best = max(counts, key=lambda z: counts[z])
    return {"auc_audit": audit, "auc_audit_b_best": b_best(audit),
            "auc_outliers": counts[z_best], "outlier_z": z_best,
            "auc_strongest": max(b_best(audit), counts[z_best])}


def mate_ranks(values: FloatArray, mate_pos: IntArray, held: Sequence[npt.NDArray[np.bool_]],
               view_k: int) -> IntArray:
    """Per mated row: the mate's rank among positions that hold a copy, or a large number when
    it is outside B's ``view_k`` overall (the rule of :func:`candidates.choose`)."""
    out = []
    for row, pos, live in zip(values, mate_pos, held, strict=True):
        above = row > row[pos]
        overall = int(above.sum())
        out.append(int((above & live).sum()) if overall < view_k else 1 << 20)
    return np.array(out)


def top_k_needed(ranks: IntArray, recall: float, top_k: int, most: int = 256) -> int:
    """The smallest top_k (≥ ``top_k``, ≤ ``most``) whose recall is at least ``recall``."""
    need = top_k
    while need < most and float((ranks < need).mean()) < recall:
        need += 1
    return need


def chosen_by_b(row: FloatArray, live: npt.NDArray[np.bool_], top_k: int, view_k: int,
                rng: random.Random) -> list[int]:
    """The product's choice (:func:`candidates.choose`) on one view (positions as (0, p))."""
    k = min(view_k, len(row))
    top = np.argpartition(-row, k - 1)[:k]
    ranked = [(0, int(p)) for p in top[np.argsort(-row[top], kind="stable")]]
    held = {(0, int(p)): None for p in np.flatnonzero(live)}
    return [p for _, p in choose(ranked, held, top_k, rng)]


def recall_choose(values: FloatArray, mate_pos: IntArray,
                  held: Sequence[npt.NDArray[np.bool_]], top_k: int, view_k: int,
                  seed: int) -> float:
    rng = random.Random(seed)
    return float(np.mean([int(pos) in chosen_by_b(row, live, top_k, view_k, rng)
                          for row, pos, live in zip(values, mate_pos, held, strict=True)]))


# --- 2. extra noise --------------------------------------------------------------------------


def noise_curve(rec: Recorded, sigmas: Sequence[float], draws: int, top_k: int, view_k: int,
                seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    m = rec.mated
    base = float((mate_ranks(rec.values[m], rec.mate_pos[m],
                             [h for h, f in zip(rec.held, m, strict=True) if f], view_k)
                  < top_k).mean())
    out = []
    for sigma in sigmas:
        rows = []
        for d in range(draws if sigma > 0 else 1):
            noisy = rec.values + rng.normal(0.0, sigma, rec.values.shape) if sigma > 0 \
                else rec.values
            figures = match_aucs(noisy, m)
            held = [h for h, f in zip(rec.held, m, strict=True) if f]
            figures["recall"] = recall_choose(noisy[m], rec.mate_pos[m], held, top_k, view_k,
                                              seed + d)
            ranks = mate_ranks(noisy[m], rec.mate_pos[m], held, view_k)
            figures["top_k_needed"] = top_k_needed(ranks, base, top_k)
            for k in RECALL_K:
                figures[f"recall_top{k}"] = float((ranks < k).mean())
            rows.append(figures)
        point: dict[str, Any] = {"sigma": sigma, "draws": len(rows)}
        for key in ("auc_audit", "auc_audit_b_best", "auc_outliers", "auc_strongest", "recall",
                    "top_k_needed", *(f"recall_top{k}" for k in RECALL_K)):
            vals = np.array([r[key] for r in rows], float)
            point[key] = float(vals.mean())
            point[key + "_std"] = float(vals.std())
        point["top_k_needed_max"] = int(max(r["top_k_needed"] for r in rows))
        out.append(point)
    return out


def noise_subspace(rec: Recorded, sigmas: Sequence[float], sizes: Sequence[int],
                   draws: int, seed: int) -> list[dict[str, Any]]:
    """Does the noise that hides matches also hide the subspace? B's attack on E noisy queries
    of the last gallery epoch (same padded figure as :func:`epoch_curve`)."""
    last = int(rec.epochs.max())
    rows = [i for i, q in enumerate(rec.queries) if q.epoch == last]
    rng = np.random.default_rng(seed)
    heads = rec.heads[sorted(rec.heads)[0]]
    out = []
    for sigma in sigmas:
        noisy = [dataclasses.replace(rec.queries[i], views=list(np.split(
            rec.values[i] + rng.normal(0.0, sigma, rec.values.shape[1]),
            len(rec.queries[i].views)))) for i in rows]
        for point in epoch_curve(noisy, heads, rec.head_dim, sizes, draws, seed):
            out.append({"sigma": sigma, **point})
    return out


def crossing(curve: Sequence[dict[str, Any]], xkey: str, ykey: str,
             target: float) -> float | None:
    """First ``x`` (log-linear interpolation) where ``y`` falls to ``target``."""
    prev = None
    for point in curve:
        if point[ykey] <= target:
            if prev is None or prev[xkey] <= 0:
                return float(point[xkey])
            x0, x1 = math.log(prev[xkey]), math.log(point[xkey])
            y0, y1 = prev[ykey], point[ykey]
            return float(math.exp(x0 + (x1 - x0) * (y0 - target) / (y0 - y1)))
        prev = point
    return None


def at(curve: Sequence[dict[str, Any]], xkey: str, x: float, ykey: str) -> float:
    xs = [math.log(max(p[xkey], 1e-9)) for p in curve]
    return float(np.interp(math.log(max(x, 1e-9)), xs, [p[ykey] for p in curve]))


# --- 3. planted decoys -----------------------------------------------------------------------


def decoy_levels(rec: Recorded) -> FloatArray:
    """The levels a match has in a recorded mated view: each mated probe's top score in robust
    spread units above its view's median."""
    med, spread = robust(rec.values[rec.mated])
    out: FloatArray = (rec.values[rec.mated].max(axis=1) - med) / spread
    return out


def plant(rec: Recorded, counts: IntArray, levels: FloatArray, where: str,
          rng: np.random.Generator) -> tuple[FloatArray, list[npt.NDArray[np.bool_]]]:
    """The views with ``counts[i]`` decoys planted in query i, and the planted positions.
    ``where``: "empty" slots (B must then hold dummy copies there, or it tells them apart) or
    "live" slots of other subjects (the exact stage then rejects a real non-mate)."""
    med, spread = robust(rec.values)
    values = rec.values.copy()
    planted = []
    for i, (live, d) in enumerate(zip(rec.held, counts, strict=True)):
        pool = np.flatnonzero(~live if where == "empty" else live)
        pool = pool[pool != rec.mate_pos[i]]
        pos = rng.choice(pool, int(d), replace=False)
        values[i, pos] = med[i] + rng.choice(levels, int(d)) * spread[i]
        mask = np.zeros(len(live), bool)
        mask[pos] = True
        planted.append(mask)
    return values, planted


def decoy_point(rec: Recorded, label: str, sample: Any, levels: FloatArray, where: str,
                draws: int, top_k: int, view_k: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    m = rec.mated
    rows = []
    baseline = mate_ranks(rec.values[m], rec.mate_pos[m],
                          [h for h, f in zip(rec.held, m, strict=True) if f], view_k)
    base_recall = float((baseline < top_k).mean())
    for _ in range(draws):
        counts = sample(rng, len(rec.queries))
        values, planted = plant(rec, counts, levels, where, rng)
        held = [live | p for live, p in zip(rec.held, planted, strict=True)]
        figures: dict[str, Any] = match_aucs(values, m)
        ranks = mate_ranks(values[m], rec.mate_pos[m],
                           [h for h, f in zip(held, m, strict=True) if f], view_k)
        figures["recall"] = float((ranks < top_k).mean())
        figures["pushed_out"] = float(((baseline < top_k) & (ranks >= top_k)).mean())
        figures["top_k_needed"] = top_k_needed(ranks, base_recall, top_k)
        figures["decoys_in_top_k"] = float(np.mean(
            [p[_held_order(row, h, view_k)[:top_k]].sum()
             for row, h, p in zip(values, held, planted, strict=True)]))
        figures["mean_decoys"] = float(counts.mean())
        rows.append(figures)
    point: dict[str, Any] = {"decoys": label, "where": where, "draws": draws,
                             "baseline_recall": base_recall}
    for key in ("auc_audit", "auc_audit_b_best", "auc_outliers", "auc_strongest", "recall",
                "pushed_out", "top_k_needed", "decoys_in_top_k", "mean_decoys"):
        vals = np.array([r[key] for r in rows], float)
        point[key] = float(vals.mean())
        point[key + "_std"] = float(vals.std())
    point["top_k_needed_max"] = int(max(r["top_k_needed"] for r in rows))
    point["exact_stage_cost"] = point["top_k_needed_max"] / top_k
    return point


def _held_order(row: FloatArray, held: npt.NDArray[np.bool_], view_k: int) -> IntArray:
    """Positions holding a copy among B's ``view_k`` best, best first."""
    k = min(view_k, len(row))
    top = np.argpartition(-row, k - 1)[:k]
    best = top[np.argsort(-row[top], kind="stable")]
    out: IntArray = best[held[best]]
    return out


def decoy_curve(rec: Recorded, draws: int, top_k: int, view_k: int, seed: int,
                where: str) -> list[dict[str, Any]]:
    levels = decoy_levels(rec)
    out = []
    for d in FIXED_DECOYS:
        def fixed(rng: np.random.Generator, n: int, d: int = d) -> IntArray:
            return np.full(n, d)
        out.append(decoy_point(rec, f"{d}", fixed, levels, where, draws, top_k, view_k,
                               seed + d))
    for top in MAX_DECOYS:
        def uniform(rng: np.random.Generator, n: int, top: int = top) -> IntArray:
            out_: IntArray = rng.integers(0, top + 1, n)
            return out_
        out.append(decoy_point(rec, f"0..{top}", uniform, levels, where, draws, top_k, view_k,
                               seed + 100 + top))
    return out


# --- driver ----------------------------------------------------------------------------------


def measure(rec: Recorded, draws: int, noise_draws: int, seed: int, top_k: int,
            view_k: int, log: Any = None) -> dict[str, Any]:
    if log is None:
        def log(line: str) -> None:
            print(line, flush=True)

    started = time.perf_counter()
    last = int(rec.epochs.max())
    final_block = sorted(rec.heads)[0]
    heads = rec.heads[final_block]
    in_last = epoch_curve([q for q in rec.queries if q.epoch == last], heads, rec.head_dim,
                          EPOCH_SIZES, draws, seed + 1)
    log(f"epochs (last gallery epoch): {time.perf_counter() - started:.0f} s")
    whole = epoch_curve(rec.queries, heads, rec.head_dim, WHOLE_RUN_SIZES,
                        max(2, draws // 2), seed)
    log(f"epochs (whole run): {time.perf_counter() - started:.0f} s")
    noise = noise_curve(rec, SIGMAS, noise_draws, top_k, view_k, seed)
    noisy_subspace = noise_subspace(rec, (0.0, 1024.0, 2048.0, 4096.0, 8192.0),
                                    (8, 16, 64, 100), max(2, draws // 4), seed)
    log(f"noise: {time.perf_counter() - started:.0f} s")
    decoys = {w: decoy_curve(rec, noise_draws, top_k, view_k, seed, w) for w in ("empty", "live")}
    log(f"decoys: {time.perf_counter() - started:.0f} s")
    base = match_aucs(rec.values, rec.mated)
    m = rec.mated
    base_recall = recall_choose(rec.values[m], rec.mate_pos[m],
                                [h for h, f in zip(rec.held, m, strict=True) if f], top_k,
                                view_k, seed)
    sigma_audit = crossing(noise, "sigma", "auc_audit_b_best", AUC_TARGET)
    sigma_strong = crossing(noise, "sigma", "auc_strongest", AUC_TARGET)
    meeting = [p for p in decoys["empty"] if p["auc_strongest"] <= AUC_TARGET]
    summary: dict[str, Any] = {
        "E_max_mean": largest_meeting(in_last, "cosine_mean"),
        "E_max_best_draw": largest_meeting(in_last, "cosine_max"),
        "E_max_mean_whole_run": largest_meeting(whole, "cosine_mean"),
        "sigma_for_auc_audit": sigma_audit,
        "recall_at_sigma_audit": None if sigma_audit is None else at(noise, "sigma",
                                                                     sigma_audit, "recall"),
        "sigma_for_auc_strongest": sigma_strong,
        "recall_at_sigma_strongest": None if sigma_strong is None else at(
            noise, "sigma", sigma_strong, "recall"),
        "noise_first_grid_point_meeting_auc": next(
            ({k: p[k] for k in ("sigma", "auc_audit_b_best", "auc_strongest", "recall",
                                *(f"recall_top{k}" for k in RECALL_K))}
             for p in noise if p["auc_strongest"] <= AUC_TARGET), None),
        "decoys_meeting_auc": meeting[0]["decoys"] if meeting else None,
        "decoys_meeting_top_k_needed": meeting[0]["top_k_needed_max"] if meeting else None,
    }
    return {
        "nature": NATURE,
        "settings": {"queries": len(rec.queries), "mated": int(m.sum()), "slots": rec.slots,
                     "head_dim": rec.head_dim, "top_k": top_k, "view_k": view_k,
                     "flood_sigma": FLOOD_SIGMA, "mask_a_range": [1 << 16, 1 << 17],
                     "draws": draws, "noise_draws": noise_draws, "seed": seed,
                     "targets": {"b_subspace_cosine": "≤ random + 0.1",
                                 "b_match_auc": f"≤ {AUC_TARGET} (B's best: max(AUC, 1 − AUC))"},
                     "seconds": round(time.perf_counter() - started, 1)},
        "today": {**base, "recall": base_recall},
        "summary": summary,
        "epochs_last_gallery_epoch": in_last,
        "epochs_whole_run": whole,
        "noise": noise,
        "noise_and_subspace": noisy_subspace,
        "decoys": decoys,
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    curve = results["epochs_last_gallery_epoch"]
    es = [p["E"] for p in curve]
    mean = np.array([p["cosine_mean"] for p in curve])
    ax[0].errorbar(es, mean, yerr=[p["cosine_std"] for p in curve], marker="o",
                   label="B's cosine (padded), mean ± sd")
    ax[0].plot(es, [p["cosine_max"] for p in curve], "v--", label="best draw")
    ax[0].plot(es, [p["unpadded_mean"] for p in curve], "s:", label="audit's unpadded mean")
    rand = np.array([p["random_mean"] for p in curve])
    ax[0].plot(es, rand, "k-", lw=1, label="random subspace")
    ax[0].plot(es, rand + SUBSPACE_MARGIN, "r--", lw=1, label="target: random + 0.1")
    ax[0].set(xscale="log", xlabel="queries B can align (epoch length E)",
              ylabel="mean principal cosine", title="1. epoch length vs subspace recovery")
    ax[0].legend(fontsize=7)
    noise = results["noise"]
    xs = [max(p["sigma"], 64.0) for p in noise]
    ax[1].plot(xs, [p["auc_audit_b_best"] for p in noise], "o-", label="AUC, audit statistic")
    ax[1].plot(xs, [p["auc_strongest"] for p in noise], "s-", label="AUC, strongest")
    ax[1].plot(xs, [p["recall"] for p in noise], "^-", label=f"mate in top_k "
               f"{results['settings']['top_k']}")
    ax[1].axhline(AUC_TARGET, color="r", ls="--", lw=1, label="AUC target")
    ax[1].set(xscale="log", xlabel="extra noise σ' (B's masked units; 0 drawn at 64)",
              title="2. noise before B decrypts")
    ax[1].legend(fontsize=7)
    dec = results["decoys"]["empty"]
    labels = [p["decoys"] for p in dec]
    twin = ax[2].twinx()
    for part, (lo, hi) in enumerate(((0, len(FIXED_DECOYS)), (len(FIXED_DECOYS), len(dec)))):
        x = np.arange(lo, hi)
        seg = dec[lo:hi]
        tag = "" if part else "_"
        ax[2].plot(x, [p["auc_audit_b_best"] for p in seg], "o-", color="C0",
                   label=f"{tag}AUC, audit statistic")
        ax[2].plot(x, [p["auc_strongest"] for p in seg], "s-", color="C1",
                   label=f"{tag}AUC, strongest")
        ax[2].plot(x, [p["recall"] for p in seg], "^-", color="C2", label=f"{tag}mate in top_k")
        twin.plot(x, [p["top_k_needed_max"] for p in seg], "k:", marker=".",
                  label=f"{tag}top_k to keep today's recall")
    ax[2].axvline(len(FIXED_DECOYS) - 0.5, color="grey", lw=0.5)
    ax[2].axhline(AUC_TARGET, color="r", ls="--", lw=1)
    twin.set_ylabel("top_k to keep today's recall (dotted)")
    ax[2].set_xticks(np.arange(len(labels)), labels, rotation=60, fontsize=7)
    ax[2].set(xlabel="planted decoys per query: fixed d | uniform 0..D",
              title="3. planted near-match decoys")
    ax[2].legend(fontsize=7, loc="lower left")
    fig.suptitle("Projections on recorded B views (unbuilt mechanisms; not product measurements)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recording", type=Path, required=True,
                        help="a `pura-audit views` output folder (holds work/)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/b_view_mechanisms.json"))
    parser.add_argument("--cache", type=Path, default=None,
                        help="decrypted views (default /tmp/b_views_<name>.npz)")
    parser.add_argument("--draws", type=int, default=20, help="random epochs per E")
    parser.add_argument("--noise-draws", type=int, default=5, help="draws per σ' and per d")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    parser.add_argument("--view-k", type=int, default=DEFAULT_VIEW_K)
    args = parser.parse_args(argv)
    rec = load(args.recording, args.cache or default_cache(args.recording))
    results = measure(rec, args.draws, args.noise_draws, args.seed, args.top_k, args.view_k)
    results["settings"]["recording"] = str(args.recording)
    results["settings"]["command"] = ("python -m bench.b_view_mechanisms --recording "
                                      f"{args.recording} --out {args.out}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    plot(results, args.out.with_suffix(".png"))
    print(json.dumps({"today": results["today"], "summary": results["summary"]}, indent=1))


if __name__ == "__main__":
    main()
