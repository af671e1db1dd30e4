"""Fit the shipped PCA rotation ``pura/data/pca-<model id>.npz`` on public LFW people.

Training people (documented in the .npz next to the matrix is only the model id; this docstring
is the record): LFW View-1 ``peopleDevTrain.txt`` people with **exactly one image** (so they can
never be a gallery identity, which needs ≥ 2 images), minus every person used by the test
identification split ``identification_split(500, seed=0, n_non_enrolled=200)``; 2,000 of them
drawn with ``random.Random(2026)``, image 1 each. Descriptors: the dlib reference pipeline
(``pura_client.embedding.reference``) through the shared on-disk cache.

Run: ``.venv/bin/python scripts/fit_pca.py [--people 2000] [--out pura/data/...]``.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "clients"))
sys.path.insert(0, str(ROOT))

from pura.crypto.encoding import PCARotation, shipped_pca_path  # noqa: E402
from pura.crypto.params import EncodingParams  # noqa: E402

SEED = 2026


def training_people(dataset: object, count: int) -> list[str]:
    """DevTrain single-image people not used by the seed-0 test split, ``count`` of them."""
    from pura_client.datasets.lfw import LFWDataset, identification_split

    assert isinstance(dataset, LFWDataset)
    used = identification_split(500, 0, n_non_enrolled=200, dataset=dataset).used_people
    lines = (dataset.root / "peopleDevTrain.txt").read_text().splitlines()[1:]
    names = sorted(
        parts[0] for parts in (line.split() for line in lines)
        if len(parts) == 2 and parts[1] == "1" and parts[0] not in used
    )
    return sorted(random.Random(SEED).sample(names, count))


def main() -> None:
    from pura_client.datasets.lfw import LFWDataset
    from pura_client.embedding.batch import embed_files
    from pura_client.embedding.cache import EmbeddingCache
    from pura_client.embedding.reference import DlibReferenceEmbedder

    model_id = EncodingParams().model_id
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=shipped_pca_path(model_id))
    args = parser.parse_args()
    dataset = LFWDataset.open()
    names = training_people(dataset, args.people)
    paths = [dataset.image_path(name, 1) for name in names]
    results = embed_files(DlibReferenceEmbedder(), paths, cache=EmbeddingCache(), progress=True)
    rows = np.stack([r.descriptor for r in results if r.descriptor is not None])
    rotation = PCARotation.fit(rows, model_id=model_id)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rotation.save(args.out)
    energy = np.cumsum(np.diag(rotation.cov) + rotation.mean**2)
    energy /= energy[-1]
    print(f"fitted on {rows.shape[0]} descriptors of {len(names)} people -> {args.out}")
    for m in (16, 32, 64):
        print(f"  head_dim {m}: {100 * energy[m - 1]:.1f} % of the second moment")


if __name__ == "__main__":
    main()
