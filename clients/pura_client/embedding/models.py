"""Locate the model files shipped by the ``face-recognition-models`` PyPI package.

Importing ``face_recognition_models`` fails in this environment (it imports ``pkg_resources``), and
we only need its data files, so we find the package folder with ``importlib.util.find_spec``
without executing it. No model is ever downloaded at run time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pura.errors import ConfigError

RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE5_FILE = "shape_predictor_5_face_landmarks.dat"
MMOD_FILE = "mmod_human_face_detector.dat"
RESNET_MODEL_ID = "dlib_face_recognition_resnet_model_v1"


def models_dir() -> Path:
    """The ``models/`` folder of the installed face-recognition-models package."""
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConfigError("package face-recognition-models is not installed")
    path = Path(locations[0]) / "models"
    if not path.is_dir():
        raise ConfigError(f"face-recognition-models has no models/ folder at {path}")
    return path


def model_file(name: str) -> Path:
    """Path of one model file; ConfigError naming the file if it is missing."""
    path = models_dir() / name
    if not path.is_file():
        raise ConfigError(f"model file missing: {name} (looked in {path.parent})")
    return path
