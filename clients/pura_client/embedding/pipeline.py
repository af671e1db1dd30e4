"""The client face pipeline: images → faces → dlib-style chips → torch ResNet → descriptors.

::

    from pura_client.embedding.pipeline import Embedder
    embedder = Embedder(device="auto")             # "cpu", "cuda" or "auto" (cuda when present)
    vectors = embedder.embed(["a.jpg", b"...", array])   # (n, 128) float32; NaN rows = no face
    results = embedder.embed_results(images)        # list[FaceResult] with boxes/face counts

Detection and landmarks run on the CPU with dlib-bin (HOG; for faces HOG misses, the CNN
detector: dlib-bin's on CPU, its torch port :mod:`.mmod` on the GPU); chips are cut by the
numpy reproduction of dlib's ``get_face_chip`` (:mod:`.chip`) and embedded in batches by the
torch port of dlib's ResNet (:mod:`.resnet`) on the chosen device. On CPU the result is
deterministic (same input, same bits) and matches dlib-bin's descriptor to ~1e-6.

Errors: unreadable or tiny images raise :class:`pura.errors.FaceError`; "no face" is a result
(a NaN row in :meth:`Embedder.embed`, ``descriptor=None`` in :meth:`Embedder.embed_results`);
several faces keep the largest (``MultiFacePolicy.LARGEST``, default), the most central
(``CENTER``) or raise FaceError (``STRICT``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import dlib
import numpy as np
import numpy.typing as npt
import torch
from rich.progress import Progress

from pura.errors import ConfigError
from pura_client.embedding.chip import (
    CHIP_PADDING,
    CHIP_SIZE,
    extract_chip,
    face_chip_details,
    needs_pyramid,
)
from pura_client.embedding.detect import FaceLocator
from pura_client.embedding.image import ImageInput, load_rgb
from pura_client.embedding.mmod import TorchCnnFaceDetector
from pura_client.embedding.models import RESNET_MODEL_ID
from pura_client.embedding.resnet import DlibFaceResNet, load_dlib_resnet
from pura_client.embedding.types import (
    DESCRIPTOR_DIM,
    Box,
    FaceResult,
    MultiFacePolicy,
    apply_policy,
)

Device = Literal["auto", "cpu", "cuda"]
PROGRESS_THRESHOLD = 50


def resolve_device(device: str) -> torch.device:
    """``auto`` → cuda when available else cpu; asking for cuda without a GPU is a ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' requested but torch sees no CUDA device")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    return torch.device(device)


class Embedder:
    """Batched face embedding with the torch port of dlib's ResNet (see module docstring)."""

    def __init__(
        self,
        *,
        device: Device | str = "auto",
        batch_size: int = 32,
        policy: MultiFacePolicy = MultiFacePolicy.LARGEST,
        upsample: int = 1,
        cnn_fallback: bool = True,
        progress: bool = False,
        model: DlibFaceResNet | None = None,
        workers: int | None = None,
        cnn_backend: Literal["auto", "dlib", "torch"] = "auto",
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.policy = policy
        self.progress = progress
        self.torch_cnn = self._make_torch_cnn(cnn_backend) if cnn_fallback else None
        self.locator = FaceLocator(
            upsample=upsample, cnn_fallback=cnn_fallback, torch_cnn=self.torch_cnn
        )
        self._per_thread = threading.local()  # dlib detectors are not thread-safe
        self._pool: ThreadPoolExecutor | None = None
        self.model = (model if model is not None else load_dlib_resnet()).to(self.device).eval()

    def __repr__(self) -> str:
        return f"Embedder(device={self.device.type!r}, model_id={self.model_id!r})"

    def _make_torch_cnn(self, backend: str) -> TorchCnnFaceDetector | None:
        """The CNN fallback in torch on this device ("auto": only when that device is a GPU,
        where it is fast; on CPU dlib-bin's implementation is quicker and gives the same boxes)."""
        if backend not in ("auto", "dlib", "torch"):
            raise ConfigError(f"cnn_backend must be 'auto', 'dlib' or 'torch', got {backend!r}")
        if backend == "torch" or (backend == "auto" and self.device.type == "cuda"):
            return TorchCnnFaceDetector(self.device)
        return None

    @property
    def model_id(self) -> str:
        """Pipeline id for caches: detector settings, chip geometry and network."""
        return f"torch-{self.locator.pipeline_id}-sp5-chip{CHIP_SIZE}p25-{RESNET_MODEL_ID}"

    # -- single stages -------------------------------------------------------------------

    def chip(self, rgb: npt.NDArray[np.uint8], box: Box) -> npt.NDArray[np.uint8]:
        """The aligned 150×150 chip of the face in ``box`` (dlib's pixels)."""
        return self._chip(self._thread_locator(), rgb, box)

    @staticmethod
    def _chip(locator: FaceLocator, rgb: npt.NDArray[np.uint8], box: Box) -> npt.NDArray[np.uint8]:
        shape = locator.shape(rgb, box)
        details = face_chip_details(FaceLocator.points(shape), CHIP_SIZE, CHIP_PADDING)
        if needs_pyramid(details):  # very large face: dlib's pyramid path, same pixels
            chip: npt.NDArray[np.uint8] = dlib.get_face_chip(rgb, shape, CHIP_SIZE, CHIP_PADDING)
            return chip
        return extract_chip(rgb, details)

    def embed_chips(self, chips: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Descriptors of already aligned chips, shape (n, 150, 150, 3) uint8 → (n, 128)."""
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ConfigError(f"chips must have shape (n, 150, 150, 3), got {chips.shape}")
        out = np.empty((len(chips), DESCRIPTOR_DIM), np.float32)
        for start in range(0, len(chips), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(chips[start : start + self.batch_size]))
            with torch.inference_mode():
                vectors = self.model(batch.to(self.device))
            out[start : start + len(batch)] = vectors.float().cpu().numpy()
        return out

    # -- whole images --------------------------------------------------------------------

    def embed_rgb(self, rgb: npt.NDArray[np.uint8]) -> FaceResult:
        """One decoded image; face selected by the policy, STRICT not enforced (apply_policy)."""
        return self.embed_rgb_many([rgb])[0]

    def locate(
        self, rgb: npt.NDArray[np.uint8]
    ) -> tuple[int, Box | None, str, npt.NDArray[np.uint8] | None]:
        """Faces found, the kept box, the detector that found it, and its chip (CPU work)."""
        locator = self._thread_locator()
        found = locator.detect(rgb)
        box = found.pick(self.policy, rgb.shape[1], rgb.shape[0])
        chip = self._chip(locator, rgb, box) if box is not None else None
        return len(found.boxes), box, found.detector, chip

    def _thread_locator(self) -> FaceLocator:
        """This thread's own FaceLocator (the main thread uses ``self.locator``)."""
        if threading.current_thread() is threading.main_thread():
            return self.locator
        locator: FaceLocator | None = getattr(self._per_thread, "locator", None)
        if locator is None:
            locator = FaceLocator(
                upsample=self.locator.upsample,
                cnn_fallback=self.locator.cnn_fallback,
                torch_cnn=self.torch_cnn,  # a torch module is safe to share between threads
            )
            self._per_thread.locator = locator
        return locator

    def embed_rgb_many(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[FaceResult]:
        """Detect + cut chips on CPU (``workers`` threads: dlib releases the GIL), then run the
        network once over all found faces. Order and values do not depend on ``workers``."""
        if self.workers > 1 and len(images) > 1:
            if self._pool is None:  # persistent, so each worker keeps its FaceLocator
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="pura-faces")
            located = list(self._pool.map(self.locate, images))
        else:
            located = [self.locate(rgb) for rgb in images]
        chips = [chip for *_, chip in located if chip is not None]
        vectors = self.embed_chips(np.stack(chips)) if chips else np.zeros((0, DESCRIPTOR_DIM))
        results: list[FaceResult] = []
        rows = iter(vectors.astype(np.float32))
        for n_faces, box, detector, chip in located:
            descriptor = next(rows) if chip is not None else None
            results.append(FaceResult(descriptor, n_faces, box, detector))
        return results

    def embed_results(self, images: Sequence[ImageInput]) -> list[FaceResult]:
        """A :class:`FaceResult` per input (FaceError for unreadable/tiny inputs)."""
        results: list[FaceResult] = []
        with Progress(disable=not self._show(len(images)), transient=True) as bar:
            task = bar.add_task("embedding faces", total=len(images))
            for chunk in _chunks(images, self.batch_size):
                decoded = [load_rgb(item) for item in chunk]
                for result in self.embed_rgb_many(decoded):
                    results.append(apply_policy(result, self.policy))
                bar.advance(task, len(chunk))
        return results

    def embed(self, images: Sequence[ImageInput]) -> npt.NDArray[np.float32]:
        """``(n, 128)`` float32 descriptors; the row of an image without a face is all NaN.

        NaN (rather than dropping the row) keeps row ``i`` aligned with input ``i``; Pura's
        encoders reject non-finite vectors, so a missing face cannot be enrolled by accident.
        """
        out = np.full((len(images), DESCRIPTOR_DIM), np.nan, dtype=np.float32)
        for i, result in enumerate(self.embed_results(images)):
            if result.descriptor is not None:
                out[i] = result.descriptor
        return out

    def _show(self, n: int) -> bool:
        return self.progress and n > PROGRESS_THRESHOLD


def _chunks(items: Sequence[ImageInput], size: int) -> Iterator[Sequence[ImageInput]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
