"""The client face pipeline: image → face → aligned chip → 128-d descriptor.

Modules (heavy backends are imported only by the module that needs them):

* ``types``     — :class:`FaceResult`, :class:`MultiFacePolicy` (shared by all pipelines).
* ``image``     — decoding of paths/bytes/arrays/PIL images to RGB; the FaceError boundary.
* ``cache``     — :class:`EmbeddingCache`, atomic on-disk cache keyed by model id + image SHA-256.
* ``batch``     — :func:`embed_files`: many files through a pipeline and the cache.
* ``reference`` — :class:`DlibReferenceEmbedder`, dlib-bin's own pipeline (the parity reference).
* ``detect``    — :class:`FaceLocator`: dlib HOG detector (+ CNN fallback) and 5-point landmarks.
* ``chip``      — numpy reproduction of dlib's ``get_face_chip`` (150×150, padding 0.25).
* ``dlib_format`` — reader of dlib's serialized DNN files (``.dat``).
* ``resnet``    — :class:`DlibFaceResNet`, dlib's face ResNet in torch with the shipped weights.
* ``mmod``      — dlib's CNN (MMOD) face detector in torch (same parser): the GPU fallback detector.
* ``pipeline``  — :class:`Embedder`: the client pipeline (batched, ``device="auto"|"cpu"|"cuda"``).

Typical use: ``Embedder(device="auto").embed(images)`` → ``(n, 128)`` float32, NaN rows where no
face was found; ``pura_client.datasets.embedded`` for cached LFW descriptor sets.
"""

from __future__ import annotations

from pura_client.embedding.cache import EmbeddingCache, default_cache_dir, sha256_hex
from pura_client.embedding.types import DESCRIPTOR_DIM, FaceResult, MultiFacePolicy

__all__ = [
    "DESCRIPTOR_DIM",
    "EmbeddingCache",
    "FaceResult",
    "MultiFacePolicy",
    "default_cache_dir",
    "sha256_hex",
]
