"""Fit the public population mean of each face model and calibrate A's wolf-check bound.

Writes ``pura/data/population-mean-<model id>.json`` (read by :mod:`pura.protocols.population`):

* ``direction``: the unit mean ``μ̂`` of the L2-normalised descriptors of every LFW image of the
  View-1 ``peopleDevTrain.txt`` people (never evaluation people: DevTest, and the 1:N split is
  drawn from people disjoint from DevTrain's calibration figures), in the model's own
  (unrotated) embedding space: A rotates it with whatever PCA its deployment uses;
* ``max_cosine``: the admission bound ``c``. A template ``y`` is refused when ``cos(y, μ̂) > c``.
  ``c`` = the largest ``cos(x, μ̂)`` over **every** LFW face the model finds (all 5,749 people,
  DevTrain and evaluation alike, the face either multi-face policy picks, LARGEST or CENTER),
  plus ``--margin`` (0.01), rounded up to 3 decimals: no real LFW template is rejected, and the
  population centroid itself (``cos = 1``) is.

Descriptors come from the client pipelines through the shared on-disk cache
(:mod:`pura_client.embedding.cache`); ``--cache-only`` skips images not cached yet instead of
embedding them (the file then records how many faces were measured).

Run: ``.venv/bin/python scripts/fit_population_mean.py [--models MODEL_ID ...] [--cache-only]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "clients"))
sys.path.insert(0, str(ROOT))

from pura.protocols.population import FORMAT_VERSION, population_mean_path  # noqa: E402

MODELS = ("dlib_face_recognition_resnet_model_v1", "sface_2021dec_int8bq", "edgeface_xs_q",
          "edgeface_xxs_q")


def _cached(pipeline: object, paths: list[Path]) -> list[np.ndarray | None]:
    """Descriptors of ``paths`` found in the cache (None where absent or no face)."""
    from pura_client.embedding.batch import _lookup
    from pura_client.embedding.cache import EmbeddingCache, sha256_hex

    cache = EmbeddingCache()
    out: list[np.ndarray | None] = []
    for path in paths:
        hit = _lookup(pipeline, cache, sha256_hex(path.read_bytes()))  # type: ignore[arg-type]
        out.append(None if hit is None else hit.descriptor)
    return out


def fit(model_id: str, margin: float, cache_only: bool) -> dict[str, object]:
    from pura_client.datasets.lfw import LFWDataset
    from pura_client.embedding.aligned import pipeline_for
    from pura_client.embedding.batch import embed_files
    from pura_client.embedding.cache import EmbeddingCache
    from pura_client.embedding.types import MultiFacePolicy

    ds = LFWDataset.open()
    train = {parts[0] for parts in (line.split() for line in
             (ds.root / "peopleDevTrain.txt").read_text().splitlines()[1:]) if len(parts) == 2}
    names = [(name, i) for name, count in sorted(ds.people().items())
             for i in range(1, count + 1)]
    paths = [ds.image_path(name, i) for name, i in names]
    # The mean: each image's LARGEST face. The bound: every face either policy picks (an LFW
    # image with several faces may give a bystander under LARGEST and the labelled person under
    # CENTER; both are real faces a client could enrol).
    per_policy = []
    for policy in (MultiFacePolicy.LARGEST, MultiFacePolicy.CENTER):
        pipeline = pipeline_for(model_id, device="cpu", policy=policy)
        if cache_only:
            per_policy.append(_cached(pipeline, paths))
        else:
            per_policy.append([r.descriptor for r in embed_files(
                pipeline, paths, cache=EmbeddingCache(), progress=True)])
    found = per_policy[0]
    rows = [i for i, d in enumerate(found) if d is not None]
    x = np.stack([np.asarray(found[i], np.float64) for i in rows])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    extra = [(i, d) for i, (d, f) in enumerate(zip(per_policy[1], found, strict=True))
             if d is not None and (f is None or not np.array_equal(d, f))]
    y = np.stack([np.asarray(d, np.float64) for _, d in extra]) if extra else x[:0]
    y = y / np.linalg.norm(y, axis=1, keepdims=True) if len(y) else y
    in_train = np.array([names[i][0] in train for i in rows])
    mean = x[in_train].mean(axis=0)
    train_images = int(in_train.sum())
    train_people = len({names[i][0] for i, t in zip(rows, in_train, strict=True) if t})
    direction = mean / np.linalg.norm(mean)
    cos = np.concatenate([x @ direction, y @ direction])
    in_train = np.concatenate([in_train, np.array([names[i][0] in train for i, _ in extra],
                                                  dtype=bool)])
    top = float(cos.max())
    bound = math.ceil((top + margin) * 1000) / 1000
    if bound >= 1.0:
        raise SystemExit(f"{model_id}: real faces reach cos {top:.4f} with the mean; no bound "
                         f"below the centroid's 1.0 leaves the margin {margin}")
    people = {names[i][0] for i in rows}
    return {
        "format_version": FORMAT_VERSION,
        "model_id": model_id,
        "direction": [float(v) for v in direction],
        "max_cosine": bound,
        "fitted_on": "LFW View-1 peopleDevTrain.txt people, every image with a face "
                     f"({train_images} images of {train_people} people, the LARGEST face of "
                     "each), unit descriptors averaged, then normalised",
        "calibration": {
            "lfw_images": len(paths),
            "faces_measured": len(rows) + len(extra),
            "faces_largest_policy": len(rows),
            "faces_center_policy_only": len(extra),
            "people_measured": len(people),
            "cache_only": cache_only,
            "mean_norm": float(np.linalg.norm(mean)),
            "cos_mean": float(cos.mean()),
            "cos_sd": float(cos.std()),
            "cos_max_all_lfw": top,
            "cos_max_outside_devtrain": float(cos[~in_train].max()),
            "margin": margin,
            "rule": "max_cosine = ceil((cos_max_all_lfw + margin) * 1000) / 1000",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--margin", type=float, default=0.01)
    parser.add_argument("--cache-only", action="store_true")
    args = parser.parse_args()
    for model_id in args.models:
        record = fit(model_id, args.margin, args.cache_only)
        path = population_mean_path(model_id)
        path.write_text(json.dumps(record, indent=1) + "\n")
        cal = record["calibration"]
        print(f"{model_id}: max_cosine {record['max_cosine']} (LFW max {cal['cos_max_all_lfw']:.4f}"  # type: ignore[index]
              f" over {cal['faces_measured']} faces) -> {path}")  # type: ignore[index]


if __name__ == "__main__":
    main()
