"""Result types shared by every face pipeline (reference dlib pipeline and the torch port)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from pura.errors import FaceError

DESCRIPTOR_DIM = 128


class MultiFacePolicy(StrEnum):
    """What to do when an image holds several faces.

    ``LARGEST`` keeps the largest detection (the usual enrolment photo case); ``CENTER`` keeps the
    face whose box centre is closest to the image centre (photos cropped around their subject:
    ID photos, kiosk captures, and LFW, whose images are by construction centred on the labelled
    person while bystanders are often larger); ``STRICT`` makes the pipeline raise
    :class:`pura.errors.FaceError`, for callers (e.g. enrolment kiosks) that must not silently
    pick one person out of a group photo.
    """

    LARGEST = "largest"
    CENTER = "center"
    STRICT = "strict"


Box = tuple[int, int, int, int]
"""A detection rectangle ``(left, top, right, bottom)`` in image pixels (dlib convention)."""


@dataclass(frozen=True)
class FaceResult:
    """Outcome for one image: a descriptor, or ``descriptor is None`` when no face was found.

    "No face" is a result, not an error (see :class:`pura.errors.FaceError`). ``n_faces`` counts
    all detections before the multi-face policy applied; ``detector`` says which detector found
    the kept face ("hog", "cnn") or is empty.
    """

    descriptor: npt.NDArray[np.float32] | None
    n_faces: int = 0
    box: Box | None = None
    detector: str = ""

    @property
    def found(self) -> bool:
        """True when a face was found and embedded."""
        return self.descriptor is not None

    def __repr__(self) -> str:
        # A descriptor is biometric data: never print its values.
        state = "descriptor" if self.found else "no face"
        return f"FaceResult({state}, n_faces={self.n_faces}, box={self.box}, {self.detector!r})"


_DETECTORS = ("", "hog", "cnn", "yunet")
_HEADER = 6
_DIMS = (0, DESCRIPTOR_DIM, 512)
"""Descriptor lengths a record may hold: none, 128 (dlib, SFace), 512 (EdgeFace)."""


def apply_policy(result: FaceResult, policy: MultiFacePolicy) -> FaceResult:
    """Enforce STRICT on a result (pipelines record how many faces they saw).

    Selection (largest / centre) happens in the pipeline; STRICT is enforced here, after the
    cache, so the cached records of LARGEST and STRICT are shared.
    """
    if policy is MultiFacePolicy.STRICT and result.n_faces > 1:
        raise FaceError(f"{result.n_faces} faces found and the caller asked for exactly one")
    return result


def encode_result(result: FaceResult) -> npt.NDArray[np.float64]:
    """Flatten a result to ``[n_faces, detector, left, top, right, bottom, *descriptor]``.

    Used as the cache value. float64 holds every float32 descriptor value exactly.
    """
    box = result.box if result.box is not None else (0, 0, -1, -1)
    header = [float(result.n_faces), float(_DETECTORS.index(result.detector)), *map(float, box)]
    descriptor = result.descriptor if result.descriptor is not None else np.zeros(0, np.float32)
    return np.concatenate([np.asarray(header, np.float64), descriptor.astype(np.float64)])


def decode_result(value: npt.NDArray[np.generic]) -> FaceResult | None:
    """Inverse of :func:`encode_result`; ``None`` if ``value`` is not a well-formed record."""
    flat = np.asarray(value, dtype=np.float64).ravel()
    if flat.shape[0] - _HEADER not in _DIMS or not np.all(np.isfinite(flat)):
        return None
    n_faces, detector = int(flat[0]), int(flat[1])
    if not 0 <= detector < len(_DETECTORS):
        return None
    left, top, right, bottom = (int(v) for v in flat[2:_HEADER])
    box = None if right < left else (left, top, right, bottom)
    descriptor = flat[_HEADER:].astype(np.float32) if flat.shape[0] > _HEADER else None
    return FaceResult(descriptor, n_faces, box, _DETECTORS[detector])
