"""``pura-eval``: accuracy of the client face pipeline on LFW (verification and 1:N identification).

Commands::

    pura-eval lfw             LFW View 2 (pairs.txt, 6,000 pairs, 10 folds): accuracy with the
                              threshold chosen on the 9 other folds, mean ± std; DET curve PNG;
                              JSON of every figure.
    pura-eval identification  gallery = first image of N people with ≥ 2 images, mated probes =
                              their other images, non-enrolled probes = people not in the gallery:
                              rank-1 and FNIR at FPIR = 1 % (rank 1, thresholded, ISO/IEC 19795-1).
    pura-eval throughput      faces/s of the torch pipeline on LFW images (no cache): whole
                              pipeline, and the network alone on the same chips.

Descriptors go through the on-disk cache (``--cache-dir`` / ``$PURA_CACHE_DIR``), so a second run
only recomputes the statistics. Comparisons use the Euclidean distance of raw dlib descriptors
(dlib's own convention, same-person threshold ≈ 0.6); scores are negated distances so that
"higher = more alike" as in :mod:`pura_client.audit.metrics`, whose DET and FNIR@FPIR code is
reused so the audit and the evaluation report the same statistics. A pair where a face was not
found is scored −inf (rejected): it counts as an error for a genuine pair, never as a success.

Multi-face images: LFW images are centred on the labelled person (the data set's construction),
and ~5 % of them show bystanders who are often larger, so the evaluation defaults to
``--policy center``; ``--policy largest`` gives the generic pipeline's figure.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import numpy.typing as npt
import torch
import typer
from matplotlib.figure import Figure
from rich.console import Console

from pura_client.audit.metrics import (
    DetCurve,
    SearchOutcomes,
    det_curve,
    fnir_at_fpir,
    identification_det,
    rank1_rate,
    threshold_at_fmr,
)
from pura_client.datasets.lfw import (
    IdentificationSplit,
    LFWDataset,
    Pair,
    identification_split,
)
from pura_client.embedding.batch import ImagePipeline, embed_files
from pura_client.embedding.cache import EmbeddingCache
from pura_client.embedding.image import load_rgb
from pura_client.embedding.types import DESCRIPTOR_DIM, FaceResult, MultiFacePolicy

if TYPE_CHECKING:
    from pura.crypto.encoding import PCARotation

app = typer.Typer(help="Accuracy of the Pura client face pipeline on LFW.", no_args_is_help=True)
console = Console(stderr=True)
Floats = npt.NDArray[np.float64]

OutOption = Annotated[Path, typer.Option("--out", help="folder for the JSON and PNG outputs")]
PipelineOption = Annotated[str, typer.Option(help="'torch' (default) or 'dlib' (reference)")]
DeviceOption = Annotated[str, typer.Option(help="torch device: auto, cpu or cuda")]
LfwOption = Annotated[Path | None, typer.Option(help="LFW folder (default: $PURA_LFW_DIR)")]
CacheOption = Annotated[Path | None, typer.Option(help="cache folder (default: $PURA_CACHE_DIR)")]
PolicyOption = Annotated[
    MultiFacePolicy, typer.Option(help="face kept when an image has several (LFW: center)")
]


# ---------------------------------------------------------------------------------------------
# Statistics (pure functions, tested directly)
# ---------------------------------------------------------------------------------------------


def floor_missing(scores: Floats) -> Floats:
    """Replace non-finite scores (no face) by a score below every real one: always rejected.

    The audit metrics require finite scores; a sentinel strictly below the minimum keeps a
    missing face an error for genuine comparisons and a correct rejection for impostors.
    """
    finite = scores[np.isfinite(scores)]
    low = float(finite.min()) - 1.0 if finite.size else -1.0
    return np.where(np.isfinite(scores), scores, low)


def best_threshold(scores: Floats, same: npt.NDArray[np.bool_]) -> float:
    """Threshold maximising accuracy of ``accept = score >= t`` on a training set.

    Candidates are midpoints between consecutive distinct scores (plus ±inf ends); ties in
    accuracy keep the smallest candidate. Vectorised via sorted cumulative counts.
    """
    finite = np.unique(scores[np.isfinite(scores)])
    if finite.size == 0:
        return 0.0
    cands = np.concatenate([[finite[0] - 1.0], (finite[:-1] + finite[1:]) / 2, [finite[-1] + 1]])
    gen = np.sort(scores[same])
    imp = np.sort(scores[~same])
    accepted_gen = gen.size - np.searchsorted(gen, cands, side="left")
    rejected_imp = np.searchsorted(imp, cands, side="left")
    accuracy = (accepted_gen + rejected_imp) / scores.size
    return float(cands[int(np.argmax(accuracy))])


@dataclass(frozen=True)
class FoldResult:
    """Held-out fold: the threshold chosen on the other folds and the accuracy it reaches."""

    fold: int
    threshold: float
    accuracy: float


def ten_fold_accuracy(
    scores: Floats, same: npt.NDArray[np.bool_], folds: npt.NDArray[np.int64]
) -> list[FoldResult]:
    """LFW protocol: for each fold, pick the threshold on the others, test on it."""
    results: list[FoldResult] = []
    for fold in np.unique(folds):
        test = folds == fold
        tau = best_threshold(scores[~test], same[~test])
        correct = (scores[test] >= tau) == same[test]
        results.append(FoldResult(int(fold), tau, float(np.mean(correct))))
    return results


def search_outcomes(
    probes: Floats,
    probe_labels: list[str],
    gallery: Floats,
    gallery_labels: list[str],
    non_enrolled: Floats,
) -> SearchOutcomes:
    """Rank-1 search outcomes with scores = −Euclidean distance (NaN rows: no face → −inf)."""

    def best(queries: Floats) -> tuple[Floats, npt.NDArray[np.int64]]:
        d2 = (queries**2).sum(1)[:, None] + (gallery**2).sum(1)[None, :] - 2 * queries @ gallery.T
        dist = np.sqrt(np.maximum(d2, 0.0))
        dist = np.where(np.isnan(dist), np.inf, dist)
        idx = np.argmin(dist, axis=1)
        return -dist[np.arange(len(queries)), idx], idx

    mated_best, idx = best(probes)
    correct = np.array([gallery_labels[i] == lab for i, lab in zip(idx, probe_labels, strict=True)])
    nonmated_best, _ = best(non_enrolled)
    found = np.isfinite(mated_best)
    both = floor_missing(np.concatenate([mated_best, nonmated_best]))
    return SearchOutcomes(both[: len(probes)], correct & found, both[len(probes) :])


# ---------------------------------------------------------------------------------------------
# Plumbing
# ---------------------------------------------------------------------------------------------


def _pipeline(
    name: str, device: str, batch_size: int, policy: MultiFacePolicy
) -> ImagePipeline:
    if name == "torch":
        from pura_client.embedding.pipeline import Embedder

        return Embedder(device=device, batch_size=batch_size, policy=policy)
    if name == "dlib":
        from pura_client.embedding.reference import DlibReferenceEmbedder

        return DlibReferenceEmbedder(policy=policy)
    raise typer.BadParameter(f"unknown pipeline {name!r} (torch or dlib)")


def _descriptor_matrix(results: list[FaceResult]) -> Floats:
    out = np.full((len(results), DESCRIPTOR_DIM), np.nan)
    for i, r in enumerate(results):
        if r.descriptor is not None:
            out[i] = r.descriptor
    return out


def _plot_det(curve: DetCurve, path: Path, title: str, xlabel: str, ylabel: str) -> None:
    fig = Figure(figsize=(5, 4))  # no pyplot: no global state, no display backend
    ax = fig.subplots()
    shown = (curve.fmr > 0) & (curve.fnmr > 0)  # zero rates have no place on log axes
    ax.loglog(curve.fmr[shown], curve.fnmr[shown], lw=1.5, drawstyle="steps-post")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _write_json(path: Path, payload: dict[str, object]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _embed(
    pipeline: ImagePipeline, paths: list[Path], cache_dir: Path | None
) -> tuple[list[FaceResult], float]:
    start = time.perf_counter()
    results = embed_files(pipeline, paths, cache=EmbeddingCache(cache_dir), progress=True)
    return results, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


@app.command()
def lfw(
    out: OutOption = Path("eval-results"),
    pipeline: PipelineOption = "torch",
    device: DeviceOption = "auto",
    batch_size: int = 32,
    policy: PolicyOption = MultiFacePolicy.CENTER,
    lfw_dir: LfwOption = None,
    cache_dir: CacheOption = None,
) -> None:
    """LFW View 2 verification accuracy (10-fold threshold selection) + DET curve."""
    ds = LFWDataset.open(lfw_dir)
    pairs: list[Pair] = [p for fold in ds.pairs() for p in fold]
    paths = sorted({p.first.path for p in pairs} | {p.second.path for p in pairs})
    engine = _pipeline(pipeline, device, batch_size, policy)
    results, seconds = _embed(engine, paths, cache_dir)
    vectors = dict(zip(paths, _descriptor_matrix(results), strict=True))
    a = np.stack([vectors[p.first.path] for p in pairs])
    b = np.stack([vectors[p.second.path] for p in pairs])
    dist = np.linalg.norm(a - b, axis=1)
    scores = floor_missing(np.where(np.isnan(dist), -np.inf, -dist))
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs], dtype=np.int64)
    per_fold = ten_fold_accuracy(scores, same, folds)
    accs = np.array([f.accuracy for f in per_fold])
    out.mkdir(parents=True, exist_ok=True)
    curve = det_curve(scores[same], scores[~same])
    _plot_det(curve, out / "lfw-det.png", "LFW View 2 (6,000 pairs)", "FMR", "FNMR")
    payload: dict[str, object] = {
        "protocol": "LFW View 2, pairs.txt, 10-fold threshold selection",
        "model_id": engine.model_id,
        "multi_face_policy": policy.value,
        "multi_face_images": sum(r.n_faces > 1 for r in results),
        "pairs": len(pairs),
        "images": len(paths),
        "no_face_images": sum(not r.found for r in results),
        "cnn_fallback_images": sum(r.detector == "cnn" for r in results),
        "accuracy_mean": float(accs.mean()),
        "accuracy_std": float(accs.std()),
        "folds": [asdict(f) for f in per_fold],
        "distance_threshold_mean": float(-np.mean([f.threshold for f in per_fold])),
        "embedding_seconds": seconds,
    }
    _write_json(out / "lfw.json", payload)
    console.print(
        f"LFW View 2 accuracy {accs.mean() * 100:.2f}% ± {accs.std() * 100:.2f}% "
        f"({len(pairs)} pairs, {payload['no_face_images']} images without a face) → {out}"
    )


@app.command()
def identification(
    out: OutOption = Path("eval-results"),
    n_identities: int = 1000,
    n_non_enrolled: int = 1000,
    max_probes_per_identity: int = 5,
    seed: int = 0,
    fpir: float = 0.01,
    pipeline: PipelineOption = "torch",
    device: DeviceOption = "auto",
    batch_size: int = 32,
    policy: PolicyOption = MultiFacePolicy.CENTER,
    lfw_dir: LfwOption = None,
    cache_dir: CacheOption = None,
) -> None:
    """1:N on LFW: rank-1 and FNIR at the FPIR target (default 1%) + identification DET."""
    split = identification_split(
        n_identities,
        seed,
        n_non_enrolled=n_non_enrolled,
        max_probes_per_identity=max_probes_per_identity,
        dataset=LFWDataset.open(lfw_dir),
    )
    engine = _pipeline(pipeline, device, batch_size, policy)
    items = [*split.gallery, *split.probes, *split.non_enrolled]
    results, seconds = _embed(engine, [i.path for i in items], cache_dir)
    matrix = _descriptor_matrix(results)
    n_g, n_p = len(split.gallery), len(split.probes)
    enrolled = ~np.isnan(matrix[:n_g, 0])
    gallery, gallery_labels = matrix[:n_g][enrolled], [g.label for g in split.gallery]
    gallery_labels = [lab for lab, ok in zip(gallery_labels, enrolled, strict=True) if ok]
    outcomes = search_outcomes(
        matrix[n_g : n_g + n_p],
        [p.label for p in split.probes],
        gallery,
        gallery_labels,
        matrix[n_g + n_p :],
    )
    fnir, tau = fnir_at_fpir(outcomes, fpir)
    out.mkdir(parents=True, exist_ok=True)
    curve = identification_det(outcomes)
    _plot_det(curve, out / "identification-det.png", "LFW 1:N (rank 1)", "FPIR", "FNIR")
    payload: dict[str, object] = {
        "protocol": "LFW 1:N: first image enrolled, others mated probes, non-enrolled people",
        "model_id": engine.model_id,
        "multi_face_policy": policy.value,
        "seed": seed,
        "gallery": int(enrolled.sum()),
        "mated_probes": n_p,
        "non_enrolled_probes": len(split.non_enrolled),
        "no_face_images": sum(not r.found for r in results),
        "rank1": rank1_rate(outcomes),
        "fpir_target": fpir,
        "fnir_at_fpir": fnir,
        "distance_threshold": -tau,
        "embedding_seconds": seconds,
    }
    _write_json(out / "identification.json", payload)
    console.print(
        f"rank-1 {payload['rank1']:.4f}, FNIR {fnir:.4f} at FPIR {fpir:g} "
        f"(gallery {payload['gallery']}, {n_p} mated, {len(split.non_enrolled)} non-mated) → {out}"
    )


@app.command()
def throughput(
    n_images: int = 200,
    device: DeviceOption = "auto",
    batch_size: int = 32,
    lfw_dir: LfwOption = None,
    out: Annotated[Path | None, typer.Option(help="optional JSON output file")] = None,
) -> None:
    """Faces per second, uncached: full pipeline (decode, HOG, landmarks, chip, ResNet) and
    the ResNet alone on the same chips (what a GPU accelerates)."""
    from pura_client.embedding.pipeline import Embedder

    split = identification_split(n_images, 0, n_non_enrolled=0, dataset=LFWDataset.open(lfw_dir))
    paths = [g.path for g in split.gallery]
    engine = Embedder(device=device, batch_size=batch_size, cnn_fallback=False)
    engine.embed(paths[:batch_size])  # warm-up (lazy init, allocator)
    start = time.perf_counter()
    results = engine.embed_results(paths)
    full = time.perf_counter() - start
    found = [r for r in results if r.found]
    chips = np.stack([engine.chip(load_rgb(p), r.box) for p, r in zip(paths, results, strict=True)
                      if r.box is not None])
    start = time.perf_counter()
    engine.embed_chips(chips)
    net = time.perf_counter() - start
    payload: dict[str, object] = {
        "device": engine.device.type,
        "torch_threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "images": len(paths),
        "faces": len(found),
        "pipeline_faces_per_s": len(found) / full,
        "network_faces_per_s": len(chips) / net,
    }
    if out is not None:
        _write_json(out, payload)
    console.print(
        f"{engine.device.type}: pipeline {payload['pipeline_faces_per_s']:.1f} faces/s, "
        f"network alone {payload['network_faces_per_s']:.1f} faces/s "
        f"({len(found)} faces, batch {batch_size}, {torch.get_num_threads()} threads)"
    )


# ---------------------------------------------------------------------------------------------
# compare: every installed model on the same protocols
# ---------------------------------------------------------------------------------------------

FPIR_TARGETS = (0.01, 0.001)
GALLERY_SIZES = (1_000, 10_000, 100_000)


def unit_rows(matrix: Floats) -> Floats:
    """Rows scaled to unit L2 norm (NaN rows — no face — stay NaN)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    out: Floats = matrix / np.where(norms > 0, norms, 1.0)
    return out


def tar_at_far(genuine: Floats, impostor: Floats, far: float) -> float:
    """TAR at the threshold whose empirical FAR on ``impostor`` is at most ``far``."""
    tau = threshold_at_fmr(impostor, far)
    return float(np.mean(genuine >= tau))


def fmr_for_fpir(fpir: float, gallery_size: int) -> float:
    """Per-comparison FMR giving ``fpir`` at rank 1 over ``gallery_size`` independent strangers:
    FPIR = 1 − (1 − FMR)^N. An extrapolation (impostor scores assumed independent), used because
    DevTrain cannot supply a 100K-person gallery."""
    return float(-np.expm1(np.log1p(-fpir) / gallery_size))


def _compare_engine(model: str, device: str, batch_size: int, policy: MultiFacePolicy
                    ) -> ImagePipeline:
    from pura_client.embedding.aligned import pipeline_for

    return pipeline_for(model, device=device, batch_size=batch_size, policy=policy)


def _matrix_any_dim(results: list[FaceResult]) -> Floats:
    dim = next((len(r.descriptor) for r in results if r.descriptor is not None), DESCRIPTOR_DIM)
    out = np.full((len(results), dim), np.nan)
    for i, r in enumerate(results):
        if r.descriptor is not None:
            out[i] = r.descriptor
    return out


def dev_train_pairs(ds: LFWDataset, exclude: frozenset[str]) -> list[Pair]:
    """pairsDevTrain.txt (LFW View 1 training pairs) minus pairs touching ``exclude`` people."""
    lines = [ln.split() for ln in (ds.root / "pairsDevTrain.txt").read_text().splitlines()[1:]]
    pairs: list[Pair] = []
    for parts in lines:
        if len(parts) == 3:
            a, b = ds.image(parts[0], int(parts[1])), ds.image(parts[0], int(parts[2]))
            pairs.append(Pair(0, a, b, True))
        elif len(parts) == 4:
            a, b = ds.image(parts[0], int(parts[1])), ds.image(parts[2], int(parts[3]))
            pairs.append(Pair(0, a, b, False))
    return [p for p in pairs if p.first.label not in exclude and p.second.label not in exclude]


@dataclass(frozen=True)
class CompareData:
    """The images every model is run on, and how the protocols index them."""

    paths: list[Path]
    view2: list[Pair]
    split: IdentificationSplit
    dev_pairs: list[Pair]


def compare_data(
    ds: LFWDataset, seed: int, *, view2: bool = True, max_probes: int | None = None
) -> CompareData:
    """View 2 pairs, the issue-15 1:N split (1,000 enrolled, all their other images, 1,000
    strangers; ``random.Random(seed)``) and the DevTrain calibration pairs, people of the 1:N
    split removed from calibration.

    ``max_probes`` caps the mated probes per enrolled person (None: all of them, the issue's
    protocol). ``paths`` lists the gallery, the strangers, one probe per person and the
    calibration images first, then the other probes and View 2, so an interrupted run leaves the
    smaller protocol cached first; ``view2=False`` skips View 2.
    """
    pairs = [p for fold in ds.pairs() for p in fold] if view2 else []
    split = identification_split(1000, seed, n_non_enrolled=1000, dataset=ds,
                                 max_probes_per_identity=max_probes)
    dev = dev_train_pairs(ds, split.used_people)
    first: dict[str, Path] = {}
    for probe in split.probes:
        first.setdefault(probe.label, probe.path)
    ordered = [i.path for i in (*split.gallery, *split.non_enrolled)] + list(first.values())
    ordered += [q.path for p in dev for q in (p.first, p.second)]
    ordered += [i.path for i in split.probes]
    ordered += [q.path for p in pairs for q in (p.first, p.second)]
    return CompareData(list(dict.fromkeys(ordered)), pairs, split, dev)


def _pair_scores(vec: dict[Path, Floats], pairs: list[Pair]) -> Floats:
    a = np.stack([vec[p.first.path] for p in pairs])
    b = np.stack([vec[p.second.path] for p in pairs])
    return floor_missing(np.where(np.isnan(a[:, 0]) | np.isnan(b[:, 0]), -np.inf,
                                  np.nan_to_num((a * b).sum(1), nan=0.0)))


def dev_matrix(vec: dict[Path, Floats], dev: list[Pair]) -> tuple[Floats, list[str]]:
    """Unit descriptors (rows with a face) and person labels of every DevTrain pair image."""
    images = sorted({p.first.path for p in dev} | {p.second.path for p in dev})
    labels = [p.parent.name for p in images]
    mat = np.stack([vec[p] for p in images])
    found = ~np.isnan(mat[:, 0])
    return mat[found], [lab for lab, ok in zip(labels, found, strict=True) if ok]


def fit_dev_pca(mat: Floats, model_id: str) -> PCARotation:
    """The shipped rotation of ``model_id``: uncentred PCA of DevTrain descriptors only.

    Needs at least ``dim`` rows; 1,372 DevTrain images (821 pairs minus the 1:N people) cover the
    512-d EdgeFace models too.
    """
    from pura.crypto.encoding import PCARotation

    return PCARotation.fit(mat, model_id=model_id)


def calibrate(vec: dict[Path, Floats], dev: list[Pair], model_id: str, out: Path
              ) -> dict[str, object]:
    """PCA and thresholds from DevTrain people only (see :class:`registry.Calibration`)."""
    scores = _pair_scores(vec, dev)
    same = np.array([p.same for p in dev])
    mat, labels = dev_matrix(vec, dev)
    pca = fit_dev_pca(mat, model_id)
    pca.save(out / f"pca-{model_id}.npz")
    sims = mat @ mat.T
    lab = np.array(labels)
    upper = np.triu(np.ones_like(sims, dtype=bool), 1) & (lab[:, None] != lab[None, :])
    impostor = sims[upper]
    fpir = {str(n): threshold_at_fmr(impostor, fmr_for_fpir(0.01, n)) for n in GALLERY_SIZES}
    # Resolved: the FMR target allows at least one DevTrain impostor score above the threshold;
    # otherwise the threshold is only "above every impostor seen", a lower bound.
    resolved = {str(n): fmr_for_fpir(0.01, n) * impostor.size >= 1 for n in GALLERY_SIZES}
    return {
        "fpir_resolved": resolved,
        "people": len(set(labels)), "images": len(labels), "pairs": len(dev),
        "impostor_scores": int(impostor.size),
        "verification_threshold": best_threshold(scores, same),
        "fpir_target": 0.01, "fpir_thresholds": fpir,
        "pca_file": f"pca-{model_id}.npz", "pca_rotation_id": pca.rotation_id,
    }


def _throughput(engine: ImagePipeline, paths: list[Path]) -> dict[str, float]:
    """Uncached faces/s over ``paths`` (decode, detect, align, network), after a warm-up."""
    rgbs = [load_rgb(p) for p in paths]
    engine.embed_rgb_many(rgbs[:4])
    start = time.perf_counter()
    found = 0
    for i in range(0, len(rgbs), 16):
        found += sum(r.found for r in engine.embed_rgb_many(rgbs[i : i + 16]))
    seconds = time.perf_counter() - start
    return {"faces_per_s": found / seconds, "ms_per_face": 1000 * seconds / max(found, 1),
            "torch_threads": float(torch.get_num_threads())}


def evaluate_model(engine: ImagePipeline, data: CompareData, cache_dir: Path | None, out: Path
                   ) -> tuple[dict[str, object], SearchOutcomes]:
    """Every figure of ``pura-eval compare`` for one model."""
    results, seconds = _embed(engine, data.paths, cache_dir)
    vec = dict(zip(data.paths, unit_rows(_matrix_any_dim(results)), strict=True))
    split = data.split
    gallery = np.stack([vec[g.path] for g in split.gallery])
    enrolled = ~np.isnan(gallery[:, 0])
    outcomes = search_outcomes(
        np.stack([vec[p.path] for p in split.probes]), [p.label for p in split.probes],
        gallery[enrolled], [g.label for g, ok in zip(split.gallery, enrolled, strict=True) if ok],
        np.stack([vec[n.path] for n in split.non_enrolled]),
    )
    fnir = {f"{f:g}": fnir_at_fpir(outcomes, f)[0] for f in FPIR_TARGETS}
    return {
        "model_id": engine.model_id,
        "dim": int(next(iter(vec.values())).shape[0]),
        "images": len(data.paths),
        "no_face_images": sum(not r.found for r in results),
        "embedding_seconds": seconds,
        "lfw_view2": view2_figures(vec, data.view2) if data.view2 else "not run",
        "identification": {
            "gallery": int(enrolled.sum()), "mated_probes": len(split.probes),
            "non_enrolled_probes": len(split.non_enrolled), "rank1": rank1_rate(outcomes),
            "fnir_at_fpir": fnir,
        },
        "calibration": calibrate(vec, data.dev_pairs, _registry_id(engine), out),
    }, outcomes


def view2_figures(vec: dict[Path, Floats], pairs: list[Pair]) -> dict[str, float]:
    """10-fold accuracy (mean, std) and TAR at FAR 1e-3 on the View 2 pairs (cosine)."""
    scores = _pair_scores(vec, pairs)
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs], dtype=np.int64)
    accs = np.array([f.accuracy for f in ten_fold_accuracy(scores, same, folds)])
    return {"accuracy_mean": float(accs.mean()), "accuracy_std": float(accs.std()),
            "tar_at_far_1e-3": tar_at_far(scores[same], scores[~same], 1e-3)}


def _registry_id(engine: ImagePipeline) -> str:
    spec = getattr(engine, "spec", None)
    if spec is not None:
        return str(spec.model_id)
    from pura_client.embedding.registry import DLIB_MODEL_ID

    return DLIB_MODEL_ID


def _plot_compare(curves: dict[str, DetCurve], path: Path) -> None:
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for name, curve in curves.items():
        shown = (curve.fmr > 0) & (curve.fnmr > 0)
        ax.loglog(curve.fmr[shown], curve.fnmr[shown], lw=1.5, drawstyle="steps-post", label=name)
    ax.axvline(0.01, color="grey", lw=0.8, ls=":")
    ax.axvline(0.001, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("FPIR (1,000 non-mated searches)")
    ax.set_ylabel("FNIR (rank 1)")
    ax.set_title("LFW 1:N, 1,000 enrolled (issue 15 protocol)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


ModelsOption = Annotated[
    str, typer.Option(help="comma-separated model ids, or 'installed' for every installed one")
]


@app.command()
def compare(
    out: OutOption = Path("eval/results"),
    models: ModelsOption = "installed",
    device: DeviceOption = "cpu",
    batch_size: int = 16,
    policy: PolicyOption = MultiFacePolicy.CENTER,
    seed: int = 0,
    throughput_images: int = 100,
    view2: Annotated[bool, typer.Option(help="include LFW View 2 (6,000 pairs)")] = True,
    max_probes: Annotated[
        int | None, typer.Option(help="cap mated probes per person (default: all, issue 15)")
    ] = None,
    lfw_dir: LfwOption = None,
    cache_dir: CacheOption = None,
) -> None:
    """Every installed face model on LFW View 2, the 1:N protocol of issue 15 and DevTrain
    calibration; writes compare.json, compare.png and the per-model PCA files."""
    from pura_client.embedding.registry import MODELS, installed_models

    ids = ([s.model_id for s in installed_models()] if models == "installed"
           else [m.strip() for m in models.split(",") if m.strip()])
    ds = LFWDataset.open(lfw_dir)
    data = compare_data(ds, seed, view2=view2, max_probes=max_probes)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, object] = {}
    curves: dict[str, DetCurve] = {}
    for model_id in ids:
        spec = MODELS[model_id]
        engine = _compare_engine(model_id, device, batch_size, policy)
        figs, outcomes = evaluate_model(engine, data, cache_dir, out)
        figs["throughput"] = _throughput(engine, data.paths[:throughput_images])
        figs["licence"] = spec.licence
        figures[model_id] = figs
        curves[model_id] = identification_det(outcomes)
        console.print(f"{model_id}: {json.dumps(figs['identification'])}")
    payload: dict[str, object] = {
        "protocols": {
            "lfw_view2": "pairs.txt, 6,000 pairs, 10-fold threshold selection; cosine scores",
            "identification": f"1,000 people with >= 2 images, random.Random({seed}); _0001 "
                              f"enrolled, their other images mated (cap per person: "
                              f"{max_probes or 'none'}); one image each of 1,000 other people "
                              "non-mated; rank 1; cosine on unit vectors",
            "calibration": "pairsDevTrain.txt people minus the 1:N split's people",
        },
        "device": device,
        "multi_face_policy": policy.value,
        "command": "pura-eval compare --out eval/results"
                   + ("" if view2 else " --no-view2")
                   + (f" --max-probes {max_probes}" if max_probes else ""),
        "models": figures,
    }
    _write_json(out / "compare.json", payload)
    _plot_compare(curves, out / "compare.png")
    console.print(f"wrote {out / 'compare.json'} and {out / 'compare.png'}")


@app.command("fit-pca")
def fit_pca(
    models: Annotated[str, typer.Option(help="comma-separated model ids")],
    out: Annotated[Path, typer.Option(help="folder for pca-<model id>.npz")] = Path("pura/data"),
    device: DeviceOption = "cpu",
    batch_size: int = 16,
    policy: PolicyOption = MultiFacePolicy.CENTER,
    seed: int = 0,
    lfw_dir: LfwOption = None,
    cache_dir: CacheOption = None,
) -> None:
    """Fit and write the shipped PCA rotation of each model on LFW DevTrain people only.

    Exactly the rotation ``pura-eval compare`` fits in its calibration (same images: DevTrain
    pairs minus the people of the seed's 1:N split, same policy), without the rest of compare:
    ``pura-eval fit-pca --models edgeface_xs_q,edgeface_xxs_q`` wrote pura/data's EdgeFace files.
    """
    ds = LFWDataset.open(lfw_dir)
    data = compare_data(ds, seed, view2=False)
    out.mkdir(parents=True, exist_ok=True)
    for model_id in [m.strip() for m in models.split(",") if m.strip()]:
        engine = _compare_engine(model_id, device, batch_size, policy)
        paths = sorted({q.path for p in data.dev_pairs for q in (p.first, p.second)})
        results, _ = _embed(engine, paths, cache_dir)
        vec = dict(zip(paths, unit_rows(_matrix_any_dim(results)), strict=True))
        mat, labels = dev_matrix(vec, data.dev_pairs)
        pca = fit_dev_pca(mat, model_id)
        path = out / f"pca-{model_id}.npz"
        pca.save(path)
        console.print(f"{model_id}: {mat.shape[0]} DevTrain descriptors of {len(set(labels))} "
                      f"people -> {path} (rotation id {pca.rotation_id})")


if __name__ == "__main__":
    app()
