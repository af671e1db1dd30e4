"""Pipeline of the ArcFace-aligned models (SFace, EdgeFace): YuNet → 5-point warp → network.

::

    from pura_client.embedding.aligned import AlignedEmbedder
    embedder = AlignedEmbedder("sface_2021dec_int8bq", device="auto")
    vectors = embedder.embed(paths)          # (n, dim) float32, L2-normalised; NaN rows = no face

The model id (a key of :data:`~pura_client.embedding.registry.MODELS`) picks the network; the
detector and alignment are shared. Descriptors are returned L2-normalised because these networks
are trained with cosine (margin) losses: only the direction carries identity, and the encrypted
path works on unit vectors anyway. Same interface as the dlib :class:`~.pipeline.Embedder`
(``model_id``, ``policy``, ``embed_rgb_many``), so :func:`~.batch.embed_files` and the on-disk
cache work unchanged; the cache id names detector, alignment and network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from pura.errors import ConfigError
from pura_client.embedding.align import CHIP_SIZE, align_face
from pura_client.embedding.image import ImageInput, load_rgb
from pura_client.embedding.pipeline import Device, resolve_device
from pura_client.embedding.registry import DLIB_MODEL_ID, ModelSpec, get_model
from pura_client.embedding.types import FaceResult, MultiFacePolicy, apply_policy
from pura_client.embedding.yunet import YuNetDetector

if TYPE_CHECKING:
    from pura_client.embedding.pipeline import Embedder


def load_network(spec: ModelSpec) -> nn.Module:
    """The torch network of an aligned model (weights SHA-256 checked by the loaders)."""
    if spec.network == "sface":
        from pura_client.embedding.sface import load_sface

        return load_sface()
    if spec.network.startswith("edgeface-"):
        from pura_client.embedding.edgeface import load_edgeface

        network: nn.Module = load_edgeface(spec)
        return network
    raise ConfigError(f"model {spec.model_id!r} is not an ArcFace-aligned torch model")


class AlignedEmbedder:
    """Batched YuNet + ArcFace alignment + network (see module docstring)."""

    def __init__(
        self,
        model_id: str,
        *,
        device: Device | str = "auto",
        batch_size: int = 32,
        policy: MultiFacePolicy = MultiFacePolicy.LARGEST,
        network: nn.Module | None = None,
        detector: YuNetDetector | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.spec = get_model(model_id)
        if self.spec.alignment != "arcface112":
            raise ConfigError(f"model {model_id!r} does not use the ArcFace 112 alignment")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.policy = policy
        self.detector = detector if detector is not None else YuNetDetector(self.device)
        net = network if network is not None else load_network(self.spec)
        self.network = net.to(self.device).eval()

    def __repr__(self) -> str:
        return f"AlignedEmbedder({self.spec.model_id!r}, device={self.device.type!r})"

    @property
    def model_id(self) -> str:
        """Cache id: detector settings, alignment and network."""
        return f"torch-{self.detector.pipeline_id}-arcface{CHIP_SIZE}-{self.spec.model_id}"

    @property
    def dim(self) -> int:
        return self.spec.dim

    def embed_chips(self, chips: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Unit-norm descriptors of aligned chips, (n, 112, 112, 3) uint8 RGB → (n, dim)."""
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ConfigError(f"chips must have shape (n, 112, 112, 3), got {chips.shape}")
        out = np.empty((len(chips), self.dim), np.float32)
        for start in range(0, len(chips), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(chips[start : start + self.batch_size]))
            with torch.inference_mode():
                raw = self.network(batch.to(self.device)).float()
                vectors = torch.nn.functional.normalize(raw, dim=1)
            out[start : start + len(batch)] = vectors.cpu().numpy()
        return out

    def locate(
        self, images: Sequence[npt.NDArray[np.uint8]]
    ) -> list[tuple[int, tuple[int, int, int, int] | None, npt.NDArray[np.uint8] | None]]:
        """Per image: faces found, the kept box (rounded) and its aligned chip."""
        found = self.detector.detect_many(images)
        center = self.policy is MultiFacePolicy.CENTER
        out: list[tuple[int, tuple[int, int, int, int] | None, npt.NDArray[np.uint8] | None]] = []
        for rgb, det in zip(images, found, strict=True):
            i = det.pick(center, rgb.shape[1], rgb.shape[0])
            if i is None:
                out.append((0, None, None))
                continue
            box = tuple(round(float(v)) for v in det.boxes[i])
            out.append((len(det), (box[0], box[1], box[2], box[3]),
                        align_face(rgb, det.landmarks[i])))
        return out

    def embed_rgb_many(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[FaceResult]:
        """Detect + align every image, then one network pass over all found faces."""
        located = self.locate(images)
        chips = [chip for _, _, chip in located if chip is not None]
        vectors = self.embed_chips(np.stack(chips)) if chips else np.zeros((0, self.dim))
        rows = iter(vectors.astype(np.float32))
        return [
            FaceResult(next(rows) if chip is not None else None, n, box,
                       "yunet" if chip is not None else "")
            for n, box, chip in located
        ]

    def embed_results(self, images: Sequence[ImageInput]) -> list[FaceResult]:
        """A :class:`FaceResult` per input (FaceError for unreadable/tiny inputs)."""
        results: list[FaceResult] = []
        for start in range(0, len(images), self.batch_size):
            decoded = [load_rgb(item) for item in images[start : start + self.batch_size]]
            results.extend(apply_policy(r, self.policy) for r in self.embed_rgb_many(decoded))
        return results

    def embed(self, images: Sequence[ImageInput]) -> npt.NDArray[np.float32]:
        """``(n, dim)`` unit-norm float32 descriptors; all-NaN row where no face was found."""
        out = np.full((len(images), self.dim), np.nan, dtype=np.float32)
        for i, result in enumerate(self.embed_results(images)):
            if result.descriptor is not None:
                out[i] = result.descriptor
        return out


def pipeline_for(
    model_id: str,
    *,
    device: Device | str = "auto",
    batch_size: int = 32,
    policy: MultiFacePolicy = MultiFacePolicy.LARGEST,
) -> Embedder | AlignedEmbedder:
    """The client pipeline of a registered model id (dlib's Embedder or an AlignedEmbedder).

    A collection's model id picks this; templates of one model are useless to another, so a
    client must embed with exactly the collection's model (the servers refuse a mismatch).
    """
    if model_id == DLIB_MODEL_ID:
        from pura_client.embedding.pipeline import Embedder

        return Embedder(device=device, batch_size=batch_size, policy=policy)
    return AlignedEmbedder(model_id, device=device, batch_size=batch_size, policy=policy)
