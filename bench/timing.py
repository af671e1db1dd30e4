"""Timing and machine description for the benchmarks.

Why medians over repeated runs after a warm-up: the first call of a HE routine pays one-off costs
(NTT tables, gmpy2 caches, page faults of freshly allocated ciphertexts) that a served query does
not pay, and two cores shared with other processes give heavy right tails. The median of at least
five warm repetitions is robust to both; min/max are kept so a reader can see the spread.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

#: The issue asks for medians over at least five repetitions.
MIN_REPETITIONS = 5


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated calls of one operation (warm-up excluded)."""

    median_s: float
    min_s: float
    max_s: float
    repetitions: int
    warmup: int

    @classmethod
    def from_samples(cls, samples: list[float], warmup: int) -> Timing:
        if not samples:
            raise ValueError("a timing needs at least one sample")
        return cls(
            median_s=statistics.median(samples),
            min_s=min(samples),
            max_s=max(samples),
            repetitions=len(samples),
            warmup=warmup,
        )

    def scaled(self, factor: float) -> Timing:
        """The same timing multiplied by ``factor`` (used for stated extrapolations)."""
        return Timing(
            self.median_s * factor, self.min_s * factor, self.max_s * factor,
            self.repetitions, self.warmup,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(
    fn: Callable[[], object],
    *,
    repetitions: int = MIN_REPETITIONS,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repetitions`` times timed.

    ``clock`` is injectable so tests can check the bookkeeping without depending on speed.
    """
    if repetitions < 1 or warmup < 0:
        raise ValueError(f"need repetitions >= 1 and warmup >= 0, got {repetitions}, {warmup}")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    for _ in range(repetitions):
        start = clock()
        fn()
        samples.append(clock() - start)
    return Timing.from_samples(samples, warmup)


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare figures: CPU, cores, load, library versions."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "memory_gib": _memory_gib(),
        "git_commit": _git_commit(),
        "libraries": _library_versions(),
        "note": "2 cores shared with other engineers' processes while measured",
    }
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=5,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _library_versions() -> dict[str, str]:
    from importlib import metadata

    versions: dict[str, str] = {}
    for name in ("numpy", "gmpy2", "tenseal", "faiss-cpu", "ray", "grpcio", "torch"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
