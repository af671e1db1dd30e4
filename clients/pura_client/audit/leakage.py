"""Leakage audit of the A↔B protocol: what does server B's view reveal?

Every message real ``pura serve`` processes A and B exchanged during a ``pura-audit views`` run
(enrolment, block refreshes, candidate copies, the identifications) is in their recordings
(:class:`~pura_client.audit.recorded.RecordedRun`). From those records the audit measures:

1. **Where the true match sits in B's preselection view.** A permutes blocks and rotates every
   block by a fresh random offset per query, so the position of the enrolled mate among B's
   masked scores must be uniform over B's view (positions as a fraction of each query's view,
   since the view grows with the gallery). Pearson χ² over equal-width position bins.
2. **B's own top-1 position** over all queries: also uniform (else B could follow a subject).
3. **B's view in the exact stage**: the values it decrypts from the blinded-product requests it
   received are ``v = q(y) + 2^s + r`` with a κ = 40-bit mask; their residues mod ``2^(s+1)``
   (which would equal ``q + 2^s`` without the mask) must be uniform. χ² over 16 bins.
4. **Canary scan**: the raw bytes of every recorded payload, at A and at B, are searched for
   the enrolled templates' and probes' quantised integers (int16/int32/int64) and float
   coordinates (float32/float64).
5. **What B does learn** (measured, reported as a limitation): preselection must let B rank, so
   score *order and ratios of differences* survive the affine mask; we measure how well an
   affine-invariant statistic of B's view separates probes that have an enrolled mate from those
   that do not (ROC AUC). B learns "this probe probably matches someone", never whom.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure
from scipy import stats

from pura_client.audit.metrics import FloatArray, UniformityTest, chi_square_uniform
from pura_client.audit.recorded import RecordedQuery, RecordedRun
from pura_client.audit.report import EvaluationResult, save_figure

#: Significance level for "B's view is not uniform".
ALPHA = 0.01
POSITION_BINS = 16


def position_bins(
    positions: Sequence[int], total: int | Sequence[int], bins: int = POSITION_BINS
) -> UniformityTest:
    """χ² uniformity of positions in ``0..total-1`` grouped into ``bins`` equal ranges
    (``total`` per position when the views differ in size)."""
    arr = np.asarray(positions, dtype=np.int64)
    totals = np.broadcast_to(np.asarray(total, dtype=np.int64), arr.shape)
    return chi_square_uniform(arr * bins // totals, bins)


def residue_test(values: Iterable[int], scale_bits: int, bins: int = 16) -> UniformityTest:
    """χ² uniformity of ``v mod 2^(s+1)`` grouped into ``bins`` equal ranges."""
    modulus = 1 << (scale_bits + 1)
    residues = np.array([int(v) % modulus for v in values], dtype=np.int64)
    return chi_square_uniform(residues * bins // modulus, bins)


def view_statistic(values: FloatArray) -> float:
    """Affine-invariant "does one score stand out?": (max − 2nd) / (2nd − median)."""
    top = np.partition(values, [-1, -2])
    first, second = float(top[-1]), float(top[-2])
    spread = second - float(np.median(values))
    return (first - second) / spread if spread > 0 else 0.0


def auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """ROC AUC = P(statistic of a positive > of a negative), ties counted half (Mann–Whitney)."""
    if not positive or not negative:
        return 0.5
    u = stats.mannwhitneyu(positive, negative, alternative="two-sided").statistic
    return float(u) / (len(positive) * len(negative))


def canary_patterns(quantised: Sequence[npt.NDArray[np.int64]], floats: FloatArray) -> list[bytes]:
    """Byte patterns a plaintext leak would contain (first 4 coordinates, several encodings)."""
    out: list[bytes] = []
    for q in quantised:
        head = np.asarray(q[:4])
        out += [
            head.astype("<i2").tobytes(),
            head.astype("<i4").tobytes(),
            head.astype("<i8").tobytes(),
        ]
    for f in floats:
        out += [np.asarray(f[:2], "<f8").tobytes(), np.asarray(f[:4], "<f4").tobytes()]
    return out


#: Odd 64-bit constants that mix a pattern's 8-byte words into one key (see :func:`canary_hits`).
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], dtype=np.uint64)
#: Bytes per scanned chunk, and the overlap that keeps a pattern across a chunk border whole.
CHUNK = 8 << 20
_MAX_PATTERN = 32


def _prefix3(data: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint32]:
    """The 24-bit little-endian value of the 3 bytes at every offset of ``data``."""
    out: npt.NDArray[np.uint32] = data[:-2].astype(np.uint32)
    out |= data[1:-1].astype(np.uint32) << np.uint32(8)
    out |= data[2:].astype(np.uint32) << np.uint32(16)
    return out


def _key_at(data: npt.NDArray[np.uint8], pos: npt.NDArray[np.int64],
            words: int) -> npt.NDArray[np.uint64]:
    """The mixed key of the ``8 * words`` bytes at each of ``pos`` (see :func:`_pattern_key`)."""
    key = np.zeros(pos.size, dtype=np.uint64)
    for j in range(words):
        w = np.zeros(pos.size, dtype=np.uint64)
        for k in range(8):
            w |= data[pos + 8 * j + k].astype(np.uint64) << np.uint64(8 * k)
        key ^= w if j == 0 else w * _MIX[j - 1]
    return key


def _pattern_key(p: bytes) -> int:
    return int(_key_at(np.frombuffer(p, dtype=np.uint8), np.zeros(1, np.int64), len(p) // 8)[0])


def canary_hits(sources: Iterable[bytes], patterns: Sequence[bytes]) -> int:
    """How many patterns occur anywhere in ``sources`` (payloads, or chunks of recorded blob
    files that overlap by at least the longest pattern).

    Vectorised instead of one ``find`` per pattern (a 1,000-person recording holds gigabytes
    and the canaries number thousands): offsets whose first three bytes begin some pattern
    are found with one table lookup per offset; there, each pattern length's 8-byte words
    are mixed into one 64-bit key and looked up; a key hit is confirmed byte for byte.
    Patterns of other lengths (none of :func:`canary_patterns`) are searched directly."""
    regular = [p for p in patterns if p and len(p) % 8 == 0 and len(p) <= _MAX_PATTERN]
    taken = set(regular)
    odd = [p for p in patterns if p and p not in taken]
    groups: dict[int, dict[int, list[bytes]]] = {}
    starts = np.zeros(1 << 24, dtype=bool)
    for p in regular:
        groups.setdefault(len(p), {}).setdefault(_pattern_key(p), []).append(p)
        starts[p[0] | p[1] << 8 | p[2] << 16] = True
    keys = {n: np.array(sorted(g), dtype=np.uint64) for n, g in groups.items()}
    found: set[bytes] = set()
    for data in sources:
        found |= {p for p in odd if p not in found and data.find(p) >= 0}
        arr = np.frombuffer(data, dtype=np.uint8)
        if arr.size < 8 or not keys:
            continue
        candidates = np.flatnonzero(starts[_prefix3(arr)])
        for n, sorted_keys in keys.items():
            pos = candidates[candidates <= arr.size - n]
            if pos.size == 0:
                continue
            key = _key_at(arr, pos, n // 8)
            idx = np.minimum(np.searchsorted(sorted_keys, key), sorted_keys.size - 1)
            for i in np.flatnonzero(sorted_keys[idx] == key):
                at = int(pos[i])
                for p in groups[n][int(key[i])]:
                    if p not in found and data[at:at + n] == p:
                        found.add(p)
    return len(found)


def file_chunks(path: Path, size: int = CHUNK) -> Iterator[bytes]:
    """``path`` in chunks of ``size`` bytes, each overlapping the previous by the longest
    pattern, so that a pattern across a border is seen whole."""
    with open(path, "rb") as f:
        tail = b""
        while block := f.read(size):
            yield tail + block
            tail = block[-(_MAX_PATTERN - 1):]


@dataclass(frozen=True)
class Message:
    """One recorded A↔B payload's step, direction (``A->B`` request, ``B->A`` reply), size."""

    step: str
    direction: str
    size: int


def recorded_messages(rec: RecordedRun) -> list[Message]:
    """Every payload B's recording holds (each request B received, each reply it sent), in
    order: B's side of the wire is A's too, byte for byte."""
    out = []
    for e in rec.b.exchanges():
        step = str(e.get("step"))
        out.append(Message(step, "A->B", _blob_size(e.get("request"))))
        if not e.get("error"):
            out.append(Message(step, "B->A", _blob_size(e.get("reply"))))
    return out


def _blob_size(ref: object) -> int:
    return int(ref["blob"][1]) if isinstance(ref, dict) and "blob" in ref else 0


@dataclass(frozen=True)
class LeakageInputs:
    """The recorded identifications, the recorded traffic (sizes, and the blob files holding
    every payload, scanned for canaries), B's exact-stage values, canaries and the scale."""

    mated: Sequence[RecordedQuery]
    nonmated: Sequence[RecordedQuery]
    messages: Sequence[Message]
    payload_files: Sequence[Path]
    masked: Sequence[int]
    patterns: Sequence[bytes]
    scale_bits: int

    @classmethod
    def of(cls, rec: RecordedRun) -> LeakageInputs:
        """Everything from one ``views`` run: B's decrypted views, B's exact-stage values,
        every recorded payload (A's and B's blob files), and canaries from the run's faces."""
        quantised = [rec.quantised(v) for v in rec.faces.enrolled]
        floats = np.vstack([rec.faces.enrolled, rec.faces.mated])
        return cls(
            mated=[q for q in rec.queries if q.probe.mated],
            nonmated=[q for q in rec.queries if not q.probe.mated],
            messages=recorded_messages(rec),
            payload_files=[r.root / "blobs.bin" for r in (rec.a, rec.b)
                           if (r.root / "blobs.bin").exists()],
            masked=[v for rows in rec.masked_values() for row in rows for v in row],
            patterns=canary_patterns(quantised, floats),
            scale_bits=rec.params.encoding.scale_bits,
        )

    def payload_chunks(self) -> Iterator[bytes]:
        for path in self.payload_files:
            yield from file_chunks(path)


def run_leakage(inputs: LeakageInputs, out_dir: Path) -> EvaluationResult:
    started = time.perf_counter()
    queries = [*inputs.mated, *inputs.nonmated]
    placed = [q for q in inputs.mated if q.mate_position is not None]
    mate_pos = [q.mate_position for q in placed if q.mate_position is not None]
    tests = {
        "true-match position in B's view": position_bins(mate_pos, [q.b_total for q in placed]),
        "B's top-1 position": position_bins([int(np.argmax(q.b_view)) for q in queries],
                                            [q.b_total for q in queries]),
        "exact-stage masked values (residues)": residue_test(inputs.masked, inputs.scale_bits),
    }
    hits = canary_hits(inputs.payload_chunks(), inputs.patterns)
    separation = auc(
        [view_statistic(q.b_view) for q in inputs.mated],
        [view_statistic(q.b_view) for q in inputs.nonmated],
    )
    total = max((q.b_total for q in queries), default=0)
    return _result(tests, hits, separation, inputs, mate_pos, total, out_dir, started)


def _traffic(messages: Sequence[Message]) -> list[dict[str, object]]:
    counts: Counter[tuple[str, str]] = Counter()
    sizes: Counter[tuple[str, str]] = Counter()
    for m in messages:
        counts[(m.step, m.direction)] += 1
        sizes[(m.step, m.direction)] += m.size
    return [
        {"step": s, "direction": d, "messages": n, "bytes": sizes[(s, d)]}
        for (s, d), n in sorted(counts.items())
    ]


def _result(
    tests: dict[str, UniformityTest],
    hits: int,
    separation: float,
    inputs: LeakageInputs,
    mate_pos: list[int],
    total: int,
    out_dir: Path,
    started: float,
) -> EvaluationResult:
    rows: list[dict[str, object]] = [
        {
            "what B sees": name,
            "observations": int(t.counts.sum()),
            "chi2": round(t.statistic, 3),
            "dof": t.dof,
            "p-value": round(t.p_value, 4),
            "uniform at 1%": t.p_value > ALPHA,
        }
        for name, t in tests.items()
    ]
    uniform = all(t.p_value > ALPHA for t in tests.values())
    metrics: dict[str, object] = {
        "recorded_messages": len(inputs.messages),
        "recorded_bytes": sum(m.size for m in inputs.messages),
        "scanned_bytes": sum(p.stat().st_size for p in inputs.payload_files),
        "b_view_slots": total,
        "mated_queries": len(inputs.mated),
        "nonmated_queries": len(inputs.nonmated),
        "canary_patterns": len(inputs.patterns),
        "canary_hits": hits,
        "min_p_value": min(t.p_value for t in tests.values()),
        "b_mated_vs_nonmated_auc": separation,
    }
    position = tests["true-match position in B's view"]
    pmatch = position.p_value
    fig = _plot(position, mate_pos, total)
    return EvaluationResult(
        key="leakage",
        title="Leakage audit of the A↔B protocol",
        summary=(
            f"true-match position in B's view: χ² p = {pmatch:.3f}; {hits} canary hits in "
            f"{metrics['recorded_bytes']} recorded bytes; B separates mated from non-mated "
            f"probes with AUC {separation:.2f}"
        ),
        metrics=metrics,
        passed=uniform and hits == 0,
        figures=[save_figure(fig, out_dir, "leakage.png")],
        tables={"uniformity of B's view": rows, "recorded A↔B traffic": _traffic(inputs.messages)},
        notes=[
            "PASS: every χ² test uniform at the 1% level and no plaintext canary in any message.",
            "Measured on the recordings of real `pura serve` processes (a `pura-audit views` "
            "run): B's views decrypted with B's own keys, exactly as B can.",
            "The AUC is a measured limitation, not a failure: B must rank masked scores, so it can "
            "tell that a probe has a close match (AUC well above 0.5).",
            "A uniform match position shows A's per-query permutation; whether B can undo it "
            "(the oblivious-candidates request names each view's block and rotation) is "
            "measured by the views evaluation (b_slot_alignment, b_subspace_cosine).",
            "With few queries χ² has little power; run larger sizes for a stronger statement.",
        ],
        seconds=time.perf_counter() - started,
    )


def _plot(test: UniformityTest, positions: list[int], total: int) -> Figure:
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    bins = len(test.counts)
    ax.bar(np.arange(bins), test.counts, color="tab:blue", alpha=0.7, label="observed")
    ax.axhline(len(positions) / bins, color="k", ls="--", label="uniform expectation")
    ax.set_xlabel(f"position of the true match in B's view ({bins} bins; views up to {total} "
                  "slots)")
    ax.set_ylabel("queries")
    ax.set_title(f"B's view: χ² p = {test.p_value:.3f}")
    ax.legend()
    return fig


__all__ = [
    "ALPHA",
    "LeakageInputs",
    "Message",
    "auc",
    "canary_hits",
    "canary_patterns",
    "file_chunks",
    "position_bins",
    "recorded_messages",
    "residue_test",
    "run_leakage",
    "view_statistic",
]
