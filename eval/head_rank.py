"""How deep in the CKKS head ranking is the full search's answer? A quick per-model check.

``.venv/bin/python eval/head_rank.py MODEL_ID [MODEL_ID ...]``

On the issue-15 LFW 1:N set (1,000 enrolled, 4,705 mated + 1,000 non-mated probes, seed 0, the
``pura-eval compare`` images and cache): for each probe whose full-dimension nearest neighbour
(integer distance of the quantised PCA-rotated unit vectors, as the exact stage computes it) is
within the model's threshold, the rank of that neighbour when the gallery is ordered by the inner
product of the first ``m`` rotated coordinates (what CKKS preselection scores). Decoys, B's view
and padding are not modelled (``bench/preselect_recall.py`` does, on larger galleries); at m = 64
this proxy gives SFace's worst rank 17, the full study's figure for its 1,000-person gallery.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "clients"))
sys.path.insert(0, str(ROOT))

from pura.crypto.encoding import load_shipped_pca, quantize  # noqa: E402
from pura.pipeline.config import SearchConfig  # noqa: E402


def main(models: list[str]) -> None:
    from pura_client.datasets.lfw import LFWDataset
    from pura_client.embedding.types import MultiFacePolicy
    from pura_client.evaluate import (
        _compare_engine,
        _embed,
        _matrix_any_dim,
        compare_data,
        unit_rows,
    )

    split = compare_data(LFWDataset.open(), 0, view2=False).split
    paths = [i.path for i in (*split.gallery, *split.probes, *split.non_enrolled)]
    n_g = len(split.gallery)
    for model in models:
        results, _ = _embed(_compare_engine(model, "cpu", 16, MultiFacePolicy.CENTER), paths, None)
        rot = load_shipped_pca(model).apply(unit_rows(_matrix_any_dim(results)))
        g, p = rot[:n_g], rot[n_g:]
        qg, qp = quantize(g, 11).astype(float), quantize(p, 11).astype(float)
        d = (qp * qp).sum(1)[:, None] + (qg * qg).sum(1)[None, :] - 2 * qp @ qg.T
        nearest = d.argmin(1)
        within = d[np.arange(len(d)), nearest] <= SearchConfig.for_model(model).tau_units(11)
        for m in (64, 128, 256):
            if m > g.shape[1]:
                continue
            s = p[:, :m] @ g[:, :m].T
            own = s[np.arange(len(s)), nearest]
            rank = (1 + (s > own[:, None]).sum(1))[within]
            print(f"{model} head {m}: {int(within.sum())} probes within τ, worst rank "
                  f"{int(rank.max())}, p99 {float(np.quantile(rank, 0.99)):g}, "
                  f"beyond top_k = 6: {int((rank > 6).sum())}")


if __name__ == "__main__":
    main(sys.argv[1:])
