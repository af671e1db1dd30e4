"""How many strangers an enrolled wolf captures, with and without the mean bound (issue 13).

Plaintext measurement on cached LFW descriptors (``scripts/fit_population_mean.py`` fills the
cache); the encrypted check decides exactly ``⟨u, m⟩ ≤ T`` (tests/protocols/test_wolf_admission.py),
so the bound a wolf must satisfy is the shipped ``max_cosine`` plus the rounding slack
``√d·2^-s + d·4^(-s-1)`` (0.0055 at d = 128, s = 11).

People: the attacker knows DevTrain people (one image each: their LARGEST face); probes are one
image of every LFW person outside DevTrain (the evaluation people). Capture = share of probes
within the threshold τ (cosine ≥ c_τ) of the wolf. Wolves:

* ``centroid``: the unit mean of the attacker's faces (what the audit enrols);
* ``crafted``: the best unit vector found by projected gradient ascent on a sigmoid-smoothed
  capture count of the attacker's faces, from 16 starts (the centroid, random faces), under the
  constraint ``cos(w, μ̂) ≤ c_eff`` (or none); the best *found*, not a proven maximum;
* ``natural``: the largest capture of any real DevTrain face (the gallery's worst real wolf).

Thresholds: the model's default 1:N threshold (``pura.pipeline.config``) and, looser, its 1:1
verification threshold (client registry calibration, FMR 1 %); a collection may use either.

Run: ``.venv/bin/python scripts/wolf_capture.py [--out eval/results/wolf_capture.json]``.
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

from pura.pipeline.config import default_threshold_sq  # noqa: E402
from pura.protocols.population import PopulationMean  # noqa: E402

MODELS = ("dlib_face_recognition_resnet_model_v1", "sface_2021dec_int8bq")
SCALE_BITS = 11


def faces(model_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(attacker's faces: DevTrain people, probes: everyone else), one LARGEST face each."""
    from pura_client.datasets.lfw import LFWDataset
    from pura_client.embedding.aligned import pipeline_for
    from pura_client.embedding.batch import _lookup
    from pura_client.embedding.cache import EmbeddingCache, sha256_hex

    ds = LFWDataset.open()
    train = {parts[0] for parts in (line.split() for line in
             (ds.root / "peopleDevTrain.txt").read_text().splitlines()[1:]) if len(parts) == 2}
    pipeline = pipeline_for(model_id, device="cpu")
    cache = EmbeddingCache()
    known: list[np.ndarray] = []
    probes: list[np.ndarray] = []
    for name, count in sorted(ds.people().items()):
        for i in range(1, count + 1):
            hit = _lookup(pipeline, cache, sha256_hex(ds.image_path(name, i).read_bytes()))
            if hit is not None and hit.descriptor is not None:
                (known if name in train else probes).append(hit.descriptor)
                break
    out = [np.asarray(v, np.float64) for v in (known, probes)]
    return tuple(v / np.linalg.norm(v, axis=1, keepdims=True) for v in out)  # type: ignore[return-value]


def _project(w: np.ndarray, mu: np.ndarray, c: float) -> np.ndarray:
    w = w / np.linalg.norm(w)
    a = float(w @ mu)
    if a > c and c < 1.0:
        p = w - a * mu
        if np.linalg.norm(p) < 1e-9:  # w is μ̂ itself: leave it along any orthogonal direction
            p = np.roll(mu, 1) - (np.roll(mu, 1) @ mu) * mu
        w = c * mu + math.sqrt(1 - c * c) * p / np.linalg.norm(p)
    return w


def craft(x: np.ndarray, mu: np.ndarray, c: float, t: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    starts = [mu, *x[rng.choice(len(x), 15, replace=False)]]
    best, best_w = -1.0, mu
    for w0 in starts:
        w = _project(w0.copy(), mu, c)
        for temp in (0.05, 0.02, 0.01):
            for _ in range(60):
                s = x @ w
                g = 1 / (1 + np.exp(-(s - t) / temp))
                g = g * (1 - g) / temp
                w = _project(w + 0.05 * (x.T @ g) / max(float(g.sum()), 1e-9), mu, c)
        cap = float(np.mean(x @ w >= t))
        if cap > best:
            best, best_w = cap, w
    return best_w


def measure(model_id: str) -> dict[str, object]:
    from pura_client.embedding.registry import get_model

    known, probes = faces(model_id)
    mean = PopulationMean.load(model_id)
    mu = np.asarray(mean.direction)
    slack = math.sqrt(len(mu)) * 2.0 ** -SCALE_BITS + len(mu) * 4.0 ** (-SCALE_BITS - 1)
    c_eff = mean.max_cosine + slack
    centroid = known.mean(axis=0)
    centroid /= np.linalg.norm(centroid)
    thresholds = {"default_1toN": 1 - default_threshold_sq(model_id) / 2}
    verification = get_model(model_id).calibration.verification
    if verification is not None:
        thresholds["verification_1to1"] = verification
    out: dict[str, object] = {"attacker_faces": len(known), "probes": len(probes),
                              "max_cosine": mean.max_cosine, "effective_bound": c_eff,
                              "centroid_cos_mu": float(centroid @ mu)}
    for label, t in thresholds.items():
        natural = float(((known @ probes.T) >= t).mean(axis=1).max())
        free = craft(known, mu, 1.0, t)
        bounded = craft(known, mu, c_eff, t)
        out[label] = {
            "cosine_threshold": t,
            "centroid_capture": float(np.mean(probes @ centroid >= t)),
            "centroid_admitted": bool(centroid @ mu <= c_eff),
            # a wolf found under the bound is a wolf without it too: report the better one
            "crafted_unbounded_capture": float(max(np.mean(probes @ free >= t),
                                                   np.mean(probes @ bounded >= t))),
            "crafted_under_bound_capture": float(np.mean(probes @ bounded >= t)),
            "crafted_under_bound_cos_mu": float(bounded @ mu),
            "natural_wolf_max_capture": natural,
        }
        print(model_id, label, json.dumps(out[label]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results" /
                        "wolf_capture.json")
    args = parser.parse_args()
    result = {m: measure(m) for m in args.models}
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
