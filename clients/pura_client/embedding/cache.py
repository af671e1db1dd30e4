"""On-disk cache of per-image arrays (face descriptors, chips) keyed by model id + image hash.

Why: computing a dlib descriptor costs ~0.1 s of CPU per image, and tests, benchmarks and
``pura-eval`` all need the same few thousand LFW descriptors. Keying by the SHA-256 of the image
*bytes* (not the path) means a renamed or re-downloaded file still hits, and a changed file never
returns a stale vector. The model id names the whole pipeline (detector, alignment, network), so
two pipelines never share entries.

Layout: ``<root>/<model id>/<sha256[:2]>/<sha256>.npy``; root is ``$PURA_CACHE_DIR`` or
``~/.cache/pura``. Concurrency: every write goes to a unique temporary file in the destination
folder and is published with ``os.replace`` (atomic on POSIX), so concurrent readers see either
nothing or a complete file, and concurrent writers of the same key simply race to write identical
bytes. A truncated or unreadable entry is treated as a miss and recomputed.

An empty array (shape ``(0,)``) is a valid cached value; the embedders use it for "no face".

Privacy: cached descriptors are *plaintext biometric templates*. The cache exists for public
evaluation data (LFW in tests, benchmarks, ``pura-eval``); the client pipeline never uses it
unless a cache is passed explicitly, and enrolment/identification of real users should not.
Entries are written owner-only (folders 0700, files 0600 from ``mkstemp``).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pura.errors import ConfigError

ENV_VAR = "PURA_CACHE_DIR"
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def default_cache_dir() -> Path:
    """``$PURA_CACHE_DIR`` or ``~/.cache/pura``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pura"


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``: the cache key of an image."""
    return hashlib.sha256(data).hexdigest()


class EmbeddingCache:
    """Atomic, process-safe ``(model id, image digest) -> ndarray`` store on disk."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"EmbeddingCache(root={str(self.root)!r})"

    def path_for(self, model_id: str, digest: str) -> Path:
        """Where the entry lives; validates both parts so no key can escape ``root``."""
        if not _MODEL_ID.match(model_id):
            raise ConfigError(f"invalid model id for the cache ({len(model_id)} characters)")
        if not _DIGEST.match(digest):
            raise ConfigError("cache digest must be 64 lowercase hex characters")
        return self.root / model_id / digest[:2] / f"{digest}.npy"

    def get(self, model_id: str, digest: str) -> npt.NDArray[np.generic] | None:
        """The cached array, or ``None`` when absent or unreadable (then it is recomputed)."""
        path = self.path_for(model_id, digest)
        try:
            with path.open("rb") as handle:
                value: npt.NDArray[np.generic] = np.load(handle, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        return value

    def put(self, model_id: str, digest: str, value: npt.NDArray[np.generic]) -> None:
        """Store ``value`` atomically (temporary file + ``os.replace``)."""
        path = self.path_for(model_id, digest)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, np.ascontiguousarray(value), allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __contains__(self, key: tuple[str, str]) -> bool:
        return self.path_for(*key).is_file()
