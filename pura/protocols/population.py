"""The public population mean of each face model: what A's wolf check compares templates with.

Why: a template's reach — the share of random probes within τ of it — grows with how close it
lies to where faces are dense. The unit centroid of a public face population passes the
unit-vector admission and, for SFace at its 1:1 threshold, sits within τ of ~14 % of LFW
people (issue 13, item 14). No real face lies that close to the centroid, so A refuses templates
whose cosine with the mean direction exceeds a bound that no real LFW face reaches
(:class:`~pura.protocols.norms.MeanBound`, decided with B like the norm check: neither server
sees the template).

The files ``pura/data/population-mean-<model id>.json`` hold the direction in the model's own
(unrotated) embedding space, fitted on LFW DevTrain people only, and the calibrated bound
(``scripts/fit_population_mean.py`` records how). A rotates the direction with the deployment's
PCA, so a custom rotation next to the keys needs no refit. A model without a file fails closed:
A refuses to start (:class:`~pura.errors.ConfigError`), since enrolment would otherwise accept
wolves silently.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pura.crypto.encoding import PCARotation
from pura.errors import ConfigError
from pura.protocols.norms import MeanBound

FORMAT_VERSION = 1
_DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def population_mean_path(model_id: str) -> Path:
    """Where the shipped population mean of ``model_id`` lives."""
    return _DATA_DIR / f"population-mean-{model_id}.json"


@dataclass(frozen=True)
class PopulationMean:
    """Unit mean direction (unrotated embedding space) and the admission bound ``max_cosine``."""

    model_id: str
    direction: tuple[float, ...]
    max_cosine: float

    def __repr__(self) -> str:
        return f"PopulationMean(model_id={self.model_id!r}, max_cosine={self.max_cosine})"

    @classmethod
    def load(cls, model_id: str, path: Path | None = None) -> PopulationMean:
        path = path if path is not None else population_mean_path(model_id)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"no population mean for face model {model_id!r} ({path.name}): A cannot check "
                "templates for wolves, so it refuses to run with this model; fit one with "
                "scripts/fit_population_mean.py") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read population mean {path}: {exc}") from exc
        if raw.get("format_version") != FORMAT_VERSION or raw.get("model_id") != model_id:
            raise ConfigError(f"{path.name} is not a version-{FORMAT_VERSION} population mean "
                              f"of {model_id!r}")
        direction = tuple(float(v) for v in raw["direction"])
        norm = math.sqrt(sum(v * v for v in direction))
        if not direction or not abs(norm - 1.0) < 1e-6 or not all(map(math.isfinite, direction)):
            raise ConfigError(f"{path.name}: the direction is not a unit vector")
        bound = float(raw["max_cosine"])
        if not 0.0 < bound < 1.0:
            raise ConfigError(f"{path.name}: max_cosine {bound} is not in (0, 1)")
        return cls(model_id, direction, bound)

    def bound(self, pca: PCARotation, scale_bits: int) -> MeanBound:
        """The integer check for templates encoded with ``pca`` and ``2^scale_bits``."""
        if pca.dim != len(self.direction):
            raise ConfigError(f"population mean of {self.model_id!r} has {len(self.direction)} "
                              f"dimensions, the rotation {pca.dim}")
        rotated = pca.apply(np.asarray(self.direction))
        rotated = rotated / np.linalg.norm(rotated)
        return MeanBound.for_direction([float(v) for v in rotated], scale_bits, self.max_cosine,
                                       self.model_id)


def mean_bound(model_id: str, pca: PCARotation, scale_bits: int) -> MeanBound:
    """A's wolf check for ``model_id`` (ConfigError when the model has no population mean)."""
    return PopulationMean.load(model_id).bound(pca, scale_bits)


__all__ = ["FORMAT_VERSION", "PopulationMean", "mean_bound", "population_mean_path"]
