"""Face detection and 5-point landmarks with dlib-bin (HOG by default, CNN/MMOD fallback).

This is the only module that runs dlib's detectors; both the reference pipeline and the torch
pipeline use it, so the two see identical boxes and landmarks. The HOG detector is fast on CPU
and finds the frontal faces dlib's ResNet was trained on; the CNN detector (same model package)
catches the harder poses HOG misses and is only run when HOG finds nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dlib
import numpy as np
import numpy.typing as npt

from pura_client.embedding.models import MMOD_FILE, SHAPE5_FILE, model_file
from pura_client.embedding.types import Box, MultiFacePolicy

if TYPE_CHECKING:
    from pura_client.embedding.mmod import TorchCnnFaceDetector


def _box(rect: Any) -> Box:
    return (int(rect.left()), int(rect.top()), int(rect.right()), int(rect.bottom()))


def box_area(box: Box) -> int:
    """Pixel area of an inclusive (left, top, right, bottom) box."""
    return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)


@dataclass(frozen=True)
class Detection:
    """All faces found in an image, which detector found them, and the largest one."""

    boxes: tuple[Box, ...]
    detector: str

    @property
    def largest(self) -> Box | None:
        return max(self.boxes, key=box_area) if self.boxes else None

    def pick(self, policy: MultiFacePolicy, width: int, height: int) -> Box | None:
        """The face the policy keeps: closest to the image centre for CENTER, else the largest
        (STRICT rejects several faces later, in :func:`apply_policy`)."""
        if policy is not MultiFacePolicy.CENTER or len(self.boxes) < 2:
            return self.largest

        def offset(box: Box) -> float:
            return ((box[0] + box[2] - width) / 2) ** 2 + ((box[1] + box[3] - height) / 2) ** 2

        return min(self.boxes, key=offset)


class FaceLocator:
    """HOG (+ optional CNN fallback) detector and the 5-point shape predictor."""

    def __init__(
        self,
        *,
        upsample: int = 1,
        cnn_fallback: bool = True,
        torch_cnn: TorchCnnFaceDetector | None = None,
    ) -> None:
        self.upsample = upsample
        self.cnn_fallback = cnn_fallback
        self.torch_cnn = torch_cnn  # the torch port of the CNN detector (GPU), else dlib-bin's
        self._hog = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(model_file(SHAPE5_FILE)))
        self._cnn: Any = None
        # Not thread-safe: dlib's object_detector loads each image's feature pyramid into its
        # scanner member, and a dlib DNN keeps per-call buffers. Use one FaceLocator per thread
        # (the pipeline does); the lock only guards the lazy CNN construction.
        self._cnn_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FaceLocator(upsample={self.upsample}, cnn_fallback={self.cnn_fallback})"

    @property
    def pipeline_id(self) -> str:
        """Short id of the detection settings (part of every pipeline's model id)."""
        if not self.cnn_fallback:
            return f"hog{self.upsample}"
        return f"hog{self.upsample}" + ("+tcnn" if self.torch_cnn is not None else "+cnn")

    def detect(self, rgb: npt.NDArray[np.uint8]) -> Detection:
        """Every face box (HOG first; the CNN detector only when HOG finds none)."""
        boxes = tuple(_box(r) for r in self._hog(rgb, self.upsample))
        if boxes or not self.cnn_fallback:
            return Detection(boxes, "hog" if boxes else "")
        if self.torch_cnn is not None:
            found = self.torch_cnn.detect(rgb, self.upsample)
            return Detection(tuple(d.box for d in found), "cnn" if found else "")
        with self._cnn_lock:
            if self._cnn is None:
                self._cnn = dlib.cnn_face_detection_model_v1(str(model_file(MMOD_FILE)))
        boxes = tuple(_box(d.rect) for d in self._cnn(rgb, self.upsample))
        return Detection(boxes, "cnn" if boxes else "")

    def shape(self, rgb: npt.NDArray[np.uint8], box: Box) -> Any:
        """dlib ``full_object_detection`` (5 parts) for the face in ``box``."""
        return self._shape(rgb, dlib.rectangle(*box))

    @staticmethod
    def points(shape: Any) -> npt.NDArray[np.float64]:
        """The landmarks of a dlib shape as a (5, 2) array of (x, y)."""
        return np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)], float)
