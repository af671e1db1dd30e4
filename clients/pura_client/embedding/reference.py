"""dlib's own face pipeline through dlib-bin: the reference the torch port is checked against.

Pipeline (exactly dlib's ``dnn_face_recognition_ex``): HOG frontal face detector (upsampled
``upsample`` times) → 5-point landmarks (``shape_predictor_5_face_landmarks.dat``) →
``get_face_chip`` 150×150 with padding 0.25 → ``compute_face_descriptor`` (ResNet, 128-d, float32).
When HOG finds nothing, dlib's CNN (MMOD) detector is tried if ``cnn_fallback`` (slow on CPU but
HOG misses are rare on LFW). "No face" is reported in the :class:`FaceResult`, never raised.

This module is the only place that runs dlib's own network (``compute_face_descriptor``); the
torch port (``pura_client.embedding.resnet``) must reproduce :meth:`embed_chip` to 1e-4.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dlib
import numpy as np
import numpy.typing as npt

from pura_client.embedding.detect import FaceLocator
from pura_client.embedding.image import ImageInput, load_rgb
from pura_client.embedding.models import RESNET_FILE, RESNET_MODEL_ID, model_file
from pura_client.embedding.types import (
    DESCRIPTOR_DIM,
    Box,
    FaceResult,
    MultiFacePolicy,
    apply_policy,
)

CHIP_SIZE = 150
CHIP_PADDING = 0.25


class DlibReferenceEmbedder:
    """Face → 128-d float32 descriptor with dlib-bin, one image at a time (CPU)."""

    def __init__(
        self,
        *,
        upsample: int = 1,
        cnn_fallback: bool = True,
        policy: MultiFacePolicy = MultiFacePolicy.LARGEST,
    ) -> None:
        self.policy = policy
        self.locator = FaceLocator(upsample=upsample, cnn_fallback=cnn_fallback)
        self._net = dlib.face_recognition_model_v1(str(model_file(RESNET_FILE)))

    def __repr__(self) -> str:
        return f"DlibReferenceEmbedder(model_id={self.model_id!r}, policy={self.policy.value!r})"

    @property
    def model_id(self) -> str:
        """Names the whole pipeline so cache entries of different pipelines never mix."""
        return f"dlibref-{self.locator.pipeline_id}-sp5-chip{CHIP_SIZE}p25-{RESNET_MODEL_ID}"

    def landmarks(self, rgb: npt.NDArray[np.uint8], box: Box) -> Any:
        """dlib ``full_object_detection`` with the 5 landmarks of the face in ``box``."""
        return self.locator.shape(rgb, box)

    def chip(self, rgb: npt.NDArray[np.uint8], box: Box) -> npt.NDArray[np.uint8]:
        """The aligned 150×150 RGB chip dlib's network sees for the face in ``box``."""
        shape = self.landmarks(rgb, box)
        chip: npt.NDArray[np.uint8] = dlib.get_face_chip(rgb, shape, CHIP_SIZE, CHIP_PADDING)
        return chip

    def embed_chip(self, chip: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """dlib's descriptor of an already aligned 150×150 chip."""
        vec = self._net.compute_face_descriptor(np.ascontiguousarray(chip))
        return np.asarray(vec, dtype=np.float32).reshape(DESCRIPTOR_DIM)

    def embed_rgb(self, rgb: npt.NDArray[np.uint8]) -> FaceResult:
        """Embed the face the policy selects (STRICT enforced later: see apply_policy)."""
        found = self.locator.detect(rgb)
        box = found.pick(self.policy, rgb.shape[1], rgb.shape[0])
        if box is None:
            return FaceResult(None, 0, None, "")
        descriptor = self.embed_chip(self.chip(rgb, box))
        return FaceResult(descriptor, len(found.boxes), box, found.detector)

    def embed_rgb_many(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[FaceResult]:
        """One result per decoded image (dlib-bin has no useful batching on CPU)."""
        return [self.embed_rgb(rgb) for rgb in images]

    def embed_image(self, source: ImageInput) -> FaceResult:
        """Decode ``source`` (FaceError if unusable) and embed it under this embedder's policy."""
        return apply_policy(self.embed_rgb(load_rgb(source)), self.policy)
