"""The search parameters every caller of the pipeline shares (server, bench, audit).

Why one object: the audit and the benchmarks must certify the configuration the server runs.
When each carried its own ``TOP_K`` and ``VIEW_K`` they drifted, and the audit measured a
pipeline no server ran. Nothing outside this module declares these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from pura.errors import ConfigError
from pura.protocols.identify import threshold_units

#: Default decision threshold on ||x - y||^2 of L2-normalised dlib descriptors. Measured on the
#: LFW identification split (500 enrolled, 775 mated probes, 200 non-enrolled; seed 0): FPIR 1.0%
#: and FNIR 25.7% at 0.115 (0.36, dlib's 0.6 Euclidean rule, gives FPIR 100% on normalised
#: descriptors). Collections set their own for their gallery size and target FPIR.
DEFAULT_THRESHOLD_SQ = 0.115
#: Default threshold per face model (a collection records its model and may set its own). dlib:
#: the figure above. The others: the cosine threshold c whose expected FPIR is 1 % for a 1,000-
#: person gallery, fitted on LFW DevTrain people only (``pura-eval compare``, calibration; the
#: client registry's ``Calibration.fpir[1000]``), as the squared distance 2 − 2c of unit vectors.
#: tests/clients/test_model_defaults.py checks these against the registry.
MODEL_THRESHOLD_SQ: dict[str, float] = {
    "dlib_face_recognition_resnet_model_v1": DEFAULT_THRESHOLD_SQ,
    "sface_2021dec_int8bq": 1.0536,  # c = 0.4732
    "edgeface_xs_q": 1.16,  # c = 0.4200
    "edgeface_xxs_q": 1.1726,  # c = 0.4137
}
#: Candidates handed from preselection to the exact Paillier stage. With the 64-d head the
#: decision-relevant nearest neighbour ranked ≤ 4 on every real LFW gallery and probe measured
#: (bench/preselect_recall.py); 6 leaves a margin of 1.5× at ~3/4 of k = 8's exact-stage cost.
DEFAULT_TOP_K = 6
#: Positions B ranks in its view. Empty slots hold decoy heads drawn like real faces (so B cannot
#: count templates); in a sparsely filled block many decoys outrank a true mate, so B ranks more
#: positions than the exact stage keeps. The number is a constant so that it tells B nothing
#: about how full the gallery is.
DEFAULT_VIEW_K = 256


@dataclass(frozen=True)
class SearchConfig:
    """``top_k`` candidates reach the exact stage out of B's ``view_k`` best positions; ``tau``
    is the decision threshold on the squared distance of unit vectors (a collection may set its
    own in integer units)."""

    top_k: int = DEFAULT_TOP_K
    view_k: int = DEFAULT_VIEW_K
    tau: float = DEFAULT_THRESHOLD_SQ
    #: Identifications per layout epoch (issue 12): A re-lays its blocks out after this many
    #: queries even without a gallery change, and B refuses a preselection over a block that
    #: has had that many since its last re-layout. 0: an epoch lasts until the gallery changes.
    epoch_queries: int = 0

    def __post_init__(self) -> None:
        if self.epoch_queries < 0:
            raise ConfigError(f"epoch_queries must be 0 (off) or positive, got "
                              f"{self.epoch_queries}")
        if self.top_k < 1:
            raise ConfigError(f"top_k must be positive, got {self.top_k}")
        if self.view_k < self.top_k:
            raise ConfigError(f"view_k ({self.view_k}) must be at least top_k ({self.top_k})")
        if not 0.0 < self.tau < 4.0:
            raise ConfigError(f"tau is a squared distance of unit vectors, in (0, 4): {self.tau}")

    @classmethod
    def for_model(
        cls, model_id: str, *, top_k: int = DEFAULT_TOP_K, view_k: int = DEFAULT_VIEW_K,
        epoch_queries: int = 0,
    ) -> SearchConfig:
        """The defaults with ``tau`` set to ``model_id``'s threshold (:data:`MODEL_THRESHOLD_SQ`).

        A squared distance means nothing across networks (dlib's 0.115 would refuse nearly every
        SFace mate), so servers take the threshold of their parameter set's model."""
        return cls(top_k=top_k, view_k=view_k, tau=default_threshold_sq(model_id),
                   epoch_queries=epoch_queries)

    def tau_units(self, scale_bits: int) -> int:
        """``tau`` in the integer units of the exact stage (scale ``2^scale_bits`` per factor)."""
        return threshold_units(self.tau, scale_bits)


def default_threshold_sq(model_id: str) -> float:
    """The default decision threshold of ``model_id``; ConfigError for an unknown model."""
    try:
        return MODEL_THRESHOLD_SQ[model_id]
    except KeyError:
        raise ConfigError(f"no default threshold for face model {model_id!r}; known: "
                          f"{sorted(MODEL_THRESHOLD_SQ)}") from None


__all__ = [
    "DEFAULT_THRESHOLD_SQ",
    "DEFAULT_TOP_K",
    "DEFAULT_VIEW_K",
    "MODEL_THRESHOLD_SQ",
    "SearchConfig",
    "default_threshold_sq",
]
