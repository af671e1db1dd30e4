"""Does a PCA reduction of the exact stage keep the decisions of full-dimension search? (issue 15)

``.venv/bin/python eval/exact_reduction.py [--models edgeface_xs_q,edgeface_xxs_q,...]
[--dims 64,128,256] [--out eval/results/exact_reduction.json]``

The exact Paillier stage computes ``D = ||q(Rx) − q(Ry)||²`` over all ``dim`` coordinates of the
PCA-rotated, quantised unit vectors (``q`` at the preset's ``scale_bits``), takes the argmin over
the candidates and matches iff ``D ≤ τ`` (the model's default threshold). Its cost grows with the
coordinates it packs and decrypts, so for the 512-d EdgeFace models one could run it on the first
``r`` rotated coordinates only. This script measures, on the issue-15 LFW 1:N protocol (1,000
enrolled people, their 4,705 other images as mated probes, 1,000 strangers; ``random.Random(0)``;
the ``pura-eval compare`` images and cache), how many probes get another decision (other subject,
or match vs no match) from the reduced search than from full-dimension plaintext search, with the
same threshold. The full search over the whole gallery is what the product must equal; candidates
are not modelled here (preselection is a separate question, ``bench/preselect_recall.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "clients"))
sys.path.insert(0, str(ROOT))

from pura.crypto.encoding import load_shipped_pca, quantize  # noqa: E402
from pura.crypto.params import EncodingParams  # noqa: E402
from pura.pipeline.config import SearchConfig  # noqa: E402

IntArray = npt.NDArray[np.int64]


def decisions(q_probes: IntArray, q_gallery: IntArray, tau: int) -> IntArray:
    """Per probe: the nearest gallery row if its integer distance is ≤ τ, else -1 (exact)."""
    p, g = q_probes.astype(np.float64), q_gallery.astype(np.float64)
    d = np.rint((p * p).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2.0 * p @ g.T)
    best = d.argmin(axis=1)
    out: IntArray = np.where(d[np.arange(len(d)), best] <= tau, best, -1).astype(np.int64)
    return out


def study(model_id: str, dims: list[int], scale_bits: int) -> dict[str, object]:
    from pura_client.datasets.lfw import LFWDataset
    from pura_client.embedding.types import MultiFacePolicy
    from pura_client.evaluate import (
        _compare_engine,
        _embed,
        _matrix_any_dim,
        compare_data,
        unit_rows,
    )

    ds = LFWDataset.open()
    data = compare_data(ds, 0, view2=False)
    split = data.split
    paths = [i.path for i in (*split.gallery, *split.probes, *split.non_enrolled)]
    engine = _compare_engine(model_id, "cpu", 16, MultiFacePolicy.CENTER)
    results, _ = _embed(engine, paths, None)
    vec = unit_rows(_matrix_any_dim(results))
    if np.isnan(vec).any():
        raise SystemExit(f"{model_id}: an image without a face; the protocol needs all of them")
    pca = load_shipped_pca(model_id)
    rot = pca.apply(vec)
    n_g = len(split.gallery)
    gallery, probes = rot[:n_g], rot[n_g:]
    truth = np.array([[g.label for g in split.gallery].index(p.label) for p in split.probes]
                     + [-1] * len(split.non_enrolled))
    tau = SearchConfig.for_model(model_id).tau_units(scale_bits)
    full = decisions(quantize(probes, scale_bits), quantize(gallery, scale_bits), tau)
    mated = truth >= 0

    def figures(got: IntArray) -> dict[str, object]:
        return {
            "fnir": float(np.mean(got[mated] != truth[mated])),
            "fpir": float(np.mean(got[~mated] >= 0)),
        }

    out: dict[str, object] = {
        "dim": pca.dim, "tau_units": tau, "probes": len(probes), "mated": int(mated.sum()),
        "non_mated": int((~mated).sum()), "full": figures(full), "reduced": {},
    }
    reduced: dict[str, object] = {}
    for r in dims:
        if r >= pca.dim:
            continue
        got = decisions(quantize(probes[:, :r], scale_bits), quantize(gallery[:, :r], scale_bits),
                        tau)
        differ = got != full
        reduced[str(r)] = {
            **figures(got),
            "decisions_differing": int(differ.sum()),
            "differing_mated": int((differ & mated).sum()),
            "differing_non_mated": int((differ & ~mated).sum()),
            "match_vs_no_match": int((differ & ((got < 0) != (full < 0))).sum()),
            "other_subject": int((differ & (got >= 0) & (full >= 0)).sum()),
        }
    out["reduced"] = reduced
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", default="edgeface_xs_q,edgeface_xxs_q,sface_2021dec_int8bq")
    parser.add_argument("--dims", default="64,128,256")
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results" /
                        "exact_reduction.json")
    args = parser.parse_args()
    scale_bits = EncodingParams().scale_bits
    dims = [int(d) for d in args.dims.split(",")]
    result = {
        "protocol": "issue-15 LFW 1:N (1,000 enrolled, 4,705 mated, 1,000 non-mated; seed 0; "
                    "policy center); exact integer distances of quantised PCA-rotated unit "
                    "vectors over the whole gallery; the model's default threshold",
        "scale_bits": scale_bits,
        "command": "python eval/exact_reduction.py --models " + args.models + " --dims "
                   + args.dims,
        "models": {m: study(m, dims, scale_bits) for m in args.models.split(",")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["models"], indent=2))


if __name__ == "__main__":
    main()
