"""Process-pool helper for the heavy, embarrassingly parallel loops of the protocols.

Why processes and not threads: gmpy2 (and TenSEAL) hold the GIL while they compute, so threads
give no speed-up for modular exponentiation. The protocols hand this engine *chunk functions*
(module-level functions taking a list of work items, e.g. ``partial_decrypt_batch`` with its key
share bound by :func:`functools.partial`), so one process receives one pickled key/table per chunk
instead of one per item.

Security note: a worker process holds a copy of whatever the chunk function carries (a key share
for partial decryptions). Workers are children of the party's own process on the same host and
live no longer than the engine; nothing is written to disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from multiprocessing import get_context
from typing import TypeVar

from pura.errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")


class LocalEngine:
    """Runs chunk functions serially (``workers=1``) or across a lazily started process pool.

    ``min_chunk`` keeps tiny batches in-process: shipping a 768-byte ciphertext to a worker costs
    more than one multiplication, so batches smaller than ``2 * min_chunk`` are not split.
    """

    def __init__(self, workers: int | None = None, *, min_chunk: int = 2) -> None:
        count = (os.cpu_count() or 1) if workers is None else workers
        if count < 1 or min_chunk < 1:
            raise ConfigError(f"workers and min_chunk must be ≥ 1, got {count}, {min_chunk}")
        self.workers = count
        self.min_chunk = min_chunk
        self._pool: Executor | None = None

    def __repr__(self) -> str:
        return f"LocalEngine(workers={self.workers})"

    def _executor(self) -> Executor:
        if self._pool is None:
            # "spawn" (not fork): the parent may hold threads (gRPC, Ray) that fork would corrupt.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))
        return self._pool

    def split(self, items: Sequence[T]) -> list[Sequence[T]]:
        """Contiguous chunks, at most one per worker, none smaller than ``min_chunk``."""
        parts = max(1, min(self.workers, len(items) // self.min_chunk))
        size, extra = divmod(len(items), parts)
        out: list[Sequence[T]] = []
        start = 0
        for i in range(parts):
            end = start + size + (1 if i < extra else 0)
            out.append(items[start:end])
            start = end
        return out

    def map_chunks(self, fn: Callable[[Sequence[T]], list[R]], items: Sequence[T]) -> list[R]:
        """``fn`` applied to chunks of ``items``; results concatenated in input order."""
        if not items:
            return []
        chunks = self.split(items)
        if self.workers == 1 or len(chunks) == 1:
            return fn(items)
        results: list[R] = []
        for part in self._executor().map(fn, chunks):
            results.extend(part)
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: In-process engine: the default wherever no engine is passed (tests, clients).
SERIAL = LocalEngine(workers=1)

__all__ = ["SERIAL", "LocalEngine"]
