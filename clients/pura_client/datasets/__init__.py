"""Face data sets on disk (LFW), read-only: the data is never copied into the repository."""

from __future__ import annotations

from pura_client.datasets.lfw import (
    IdentificationSplit,
    LabeledImage,
    LFWDataset,
    Pair,
    identification_split,
    locate_lfw,
)

__all__ = [
    "IdentificationSplit",
    "LFWDataset",
    "LabeledImage",
    "Pair",
    "identification_split",
    "locate_lfw",
]
