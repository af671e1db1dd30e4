"""Linkability (ISO/IEC 24745 unlinkability): can two deployments' records be linked to one person?

Setting (Gomez-Barrero et al., IEEE TIFS 2018): the same people are enrolled in two applications
with different images; an attacker holding both databases computes a *linkage score* for each
cross-database pair and tries to tell mated pairs (same subject) from non-mated ones. The local
measure D↔(s) and the global D↔sys (:func:`metrics.unlinkability`) say how much the scores help.

Compared here:

* **plaintext templates** in two applications: the attacker's linkage function is the cosine of
  the embeddings (the same face model in both) — expected to be highly linkable;
* **Pura records** of the same people in two real deployments with *independent key sets*:
  what server A stored per template, read from A's store as the ``pura serve`` process left it
  (:func:`run_recorded_linkability`). Application 1 is a ``pura-audit views`` run (first LFW
  image of each person); application 2 is a second pair of real servers with fresh keys that
  enrols the second image of the first ``people`` of them (``DIR/link``). The per-template
  record A keeps is the packed threshold-Paillier template; A keeps a template's CKKS head
  only until B's block refresh packs it into a block shared by many people, so once enrolment
  is done there is no per-person CKKS record to link (the count left unpacked is reported).
  The attacker has no key, so its linkage functions are the key-free ones security.md §1.3
  lists: byte equality rate, byte-value correlation, bit-level (Hamming) similarity and record
  size. Semantic security predicts D↔sys ≈ 0 for all of them.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

from pura_client.audit.data import LabelledEmbeddings
from pura_client.audit.metrics import (
    AuditError,
    FloatArray,
    Unlinkability,
    auto_bins,
    bootstrap_d_sys,
    null_d_sys,
    unlinkability,
)
from pura_client.audit.report import EvaluationResult, save_figure

if TYPE_CHECKING:
    from pura_client.audit.recorded import RecordedRun

#: Two applications' protected records of the same people, row i of both the same subject.
Records = tuple[Sequence[bytes], Sequence[bytes]]
#: Project bar T14: D↔sys ≤ 0.05 for every key-free linkage function.
MAX_D_SYS = 0.05

_BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)


def _as_u8(records: Sequence[bytes]) -> npt.NDArray[np.uint8]:
    """Records as an (n × L) byte matrix, zero-padded to the longest (lengths are scored apart)."""
    width = max(len(r) for r in records)
    out = np.zeros((len(records), width), dtype=np.uint8)
    for i, r in enumerate(records):
        out[i, : len(r)] = np.frombuffer(r, dtype=np.uint8)
    return out


def byte_equality(a: Sequence[bytes], b: Sequence[bytes]) -> FloatArray:
    """Share of byte positions with equal values, for every (a_i, b_j)."""
    ma, mb = _as_u8(a), _as_u8(b)
    width = max(ma.shape[1], mb.shape[1])
    ma = np.pad(ma, ((0, 0), (0, width - ma.shape[1])))
    mb = np.pad(mb, ((0, 0), (0, width - mb.shape[1])))
    out = np.empty((len(a), len(b)))
    for i in range(len(a)):
        out[i] = (mb == ma[i]).mean(axis=1)
    return out


def byte_correlation(a: Sequence[bytes], b: Sequence[bytes]) -> FloatArray:
    """Pearson correlation of byte values (position-aligned), for every (a_i, b_j)."""
    ma, mb = _as_u8(a).astype(np.float64), _as_u8(b).astype(np.float64)
    width = max(ma.shape[1], mb.shape[1])
    ma = np.pad(ma, ((0, 0), (0, width - ma.shape[1])))
    mb = np.pad(mb, ((0, 0), (0, width - mb.shape[1])))
    za = (ma - ma.mean(1, keepdims=True)) / (ma.std(1, keepdims=True) + 1e-12)
    zb = (mb - mb.mean(1, keepdims=True)) / (mb.std(1, keepdims=True) + 1e-12)
    result: FloatArray = za @ zb.T / width
    return result


def bit_similarity(a: Sequence[bytes], b: Sequence[bytes]) -> FloatArray:
    """1 − normalised Hamming distance of the bit strings, for every (a_i, b_j)."""
    ma, mb = _as_u8(a), _as_u8(b)
    width = max(ma.shape[1], mb.shape[1])
    ma = np.pad(ma, ((0, 0), (0, width - ma.shape[1])))
    mb = np.pad(mb, ((0, 0), (0, width - mb.shape[1])))
    out = np.empty((len(a), len(b)))
    for i in range(len(a)):
        out[i] = 1.0 - _BYTE_BITS[np.bitwise_xor(mb, ma[i])].sum(1) / (8.0 * width)
    return out


def size_similarity(a: Sequence[bytes], b: Sequence[bytes]) -> FloatArray:
    """−|len(a_i) − len(b_j)|: variable-length encodings would leak through record size."""
    la = np.array([len(r) for r in a], dtype=np.float64)
    lb = np.array([len(r) for r in b], dtype=np.float64)
    result: FloatArray = -np.abs(la[:, None] - lb[None, :])
    return result


KEY_FREE_LINKAGE: dict[str, Callable[[Sequence[bytes], Sequence[bytes]], FloatArray]] = {
    "byte equality": byte_equality,
    "byte correlation": byte_correlation,
    "bit similarity": bit_similarity,
    "record size": size_similarity,
}


@dataclass(frozen=True)
class TwoApplications:
    """The same people in two applications: row i of both matrices is the same subject.

    Built from people with at least two images: image 1 enrolled in application 1, image 2 in
    application 2, so mated pairs are different captures, as in a real cross-deployment link.
    """

    app1: FloatArray
    app2: FloatArray
    labels: tuple[str, ...]

    @classmethod
    def from_embeddings(cls, data: LabelledEmbeddings, people: int) -> TwoApplications:
        first: dict[str, int] = {}
        second: dict[str, int] = {}
        for i, lab in enumerate(data.labels):
            if lab not in first:
                first[lab] = i
            elif lab not in second:
                second[lab] = i
        names = [n for n in first if n in second][:people]
        if len(names) < 2:
            raise AuditError("linkability needs at least two people with two images each")
        return cls(
            app1=data.vectors[[first[n] for n in names]],
            app2=data.vectors[[second[n] for n in names]],
            labels=tuple(names),
        )


def mated_nonmated(scores: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Split an (n × n) cross-application score matrix: diagonal = mated, the rest non-mated."""
    mask = np.eye(scores.shape[0], dtype=bool)
    return scores[mask], scores[~mask]


#: Family-wise error rate of the "is this function linking?" decisions (Bonferroni-corrected).
FAMILY_ALPHA = 0.05


@dataclass(frozen=True)
class LinkageOutcome:
    """One (record kind, linkage function) row of the evaluation.

    ``null_p95`` and ``p_value`` come from D↔sys under label permutation (no link) at the same
    sample size and bins: the p-value is the share of permutations reaching the measured D↔sys.
    """

    protection: str
    function: str
    result: Unlinkability
    ci: tuple[float, float]
    null_p95: float
    p_value: float
    mated: int
    nonmated: int

    def linkable(self, alpha: float) -> bool:
        """Evidence of linkage: above the project bar *and* significant at level ``alpha``."""
        return self.result.d_sys > MAX_D_SYS and self.p_value < alpha


def evaluate_scores(
    protection: str,
    function: str,
    scores: FloatArray,
    rng: np.random.Generator,
    rounds: int,
    null_rounds: int,
) -> LinkageOutcome:
    mated, nonmated = mated_nonmated(scores)
    bins = auto_bins(mated.size)
    result = unlinkability(mated, nonmated, bins=bins)
    null = null_d_sys(mated, nonmated, rng, null_rounds, bins)
    return LinkageOutcome(
        protection=protection,
        function=function,
        result=result,
        ci=bootstrap_d_sys(mated, nonmated, rng, rounds=rounds, bins=bins),
        null_p95=float(np.percentile(null, 95)),
        p_value=float((1 + np.sum(null >= result.d_sys)) / (1 + null.size)),
        mated=mated.size,
        nonmated=nonmated.size,
    )


@dataclass(frozen=True)
class LinkabilityConfig:
    """``max_record_bytes``: the byte-level linkage functions read at most this prefix of a
    record (headers and metadata included) — a CKKS ciphertext is ~230 KB and its body is
    pseudo-random polynomial coefficients, so the prefix is where any structure would be."""

    people: int = 150
    bootstrap_rounds: int = 100
    null_rounds: int = 400
    max_record_bytes: int = 16384
    seed: int = 0


def run_linkability(
    apps: TwoApplications,
    protected: Mapping[str, Records],
    out_dir: Path,
    config: LinkabilityConfig,
    extra: Mapping[str, object] | None = None,
) -> EvaluationResult:
    """Plaintext vs. protected linkability.

    ``protected`` maps a record kind (e.g. "Paillier template") to the two applications'
    records of ``apps.labels`` (row i of both: the same subject); every key-free linkage
    function is applied to every kind."""
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    plain = apps.app1 @ apps.app2.T
    rounds = (config.bootstrap_rounds, config.null_rounds)
    outcomes = [evaluate_scores("plaintext templates", "cosine", plain, rng, *rounds)]
    sizes: dict[str, int] = {}
    for kind, (rec1, rec2) in protected.items():
        if len(rec1) != len(apps.labels) or len(rec2) != len(apps.labels):
            raise AuditError(f"{kind}: one record per person and application is needed")
        sizes[kind] = len(rec1[0])
        cut1 = [r[: config.max_record_bytes] for r in rec1]
        cut2 = [r[: config.max_record_bytes] for r in rec2]
        for name, fn in KEY_FREE_LINKAGE.items():
            scores = fn(rec1, rec2) if name == "record size" else fn(cut1, cut2)
            outcomes.append(evaluate_scores(kind, name, scores, rng, *rounds))
    result = _result(outcomes, sizes, out_dir, started)
    result.metrics.update(extra or {})
    return result


def link_deployment(rec: RecordedRun, people: int, log: Callable[[str], Any] = print) -> Path:
    """Application 2: a second pair of real ``pura serve`` processes with fresh keys that
    enrols the *second* LFW image of the first ``people`` people ``rec`` enrolled (recorded
    under ``rec.out/link``; reused when it exists for the same people). Returns A's store copy.
    """
    from pura_client.audit.views import Faces, ViewsConfig, drive

    work = rec.out / "link" / "work"
    n = min(people, len(rec.faces.enrolled_labels))
    store = work / "record" / "a" / "data" / "gallery.db"
    done = work / "link.json"
    labels = list(rec.faces.enrolled_labels[:n])
    if store.exists() and done.exists() and json.loads(done.read_text()).get("labels") == labels:
        return store
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    empty = np.zeros((0, rec.faces.enrolled.shape[1]))
    faces = Faces(rec.faces.mated[:n], labels, empty, empty, [], rec.faces.public)
    config = ViewsConfig(people=n, epochs=1, mated_per_epoch=0, nonmated_per_epoch=0,
                         profile=rec.profile, seed=rec.config.seed + 1)
    log(f"linkability: second deployment enrolling {n} people (second images)")
    run = drive(work, faces, config, rec.wolf, log)
    done.write_text(json.dumps({"labels": labels, "servers": run.servers}))
    return store


def stored_records(store_path: Path) -> tuple[dict[str, bytes], int]:
    """Each subject's stored Paillier template in one A store copy (first template), and how
    many templates still hold a per-template CKKS head (not yet packed into a block)."""
    from pura.gallery.store import GalleryStore
    from pura_client.audit.views import COLLECTION, WOLF

    out: dict[str, bytes] = {}
    unpacked = 0
    with GalleryStore(store_path) as store:
        for t in store.all_templates(COLLECTION):
            unpacked += t.head is not None
            if t.subject_id != WOLF:
                out.setdefault(t.subject_id, t.paillier)
    return out, unpacked


def run_recorded_linkability(
    rec: RecordedRun, out_dir: Path, config: LinkabilityConfig,
    log: Callable[[str], Any] = print,
) -> EvaluationResult:
    """Linkability of what A stored in two real deployments (see the module docstring)."""
    second = link_deployment(rec, config.people, log)
    one, unpacked1 = stored_records(rec.a.root / "data" / "gallery.db")
    two, unpacked2 = stored_records(second)
    names = [n for n in rec.faces.enrolled_labels if n in one and n in two][: config.people]
    if len(names) < 2:
        raise AuditError("linkability needs at least two people stored in both deployments")
    index = {n: i for i, n in enumerate(rec.faces.enrolled_labels)}
    apps = TwoApplications(
        app1=rec.faces.enrolled[[index[n] for n in names]],
        app2=rec.faces.mated[[index[n] for n in names]],
        labels=tuple(names),
    )
    records = {"A: stored Paillier template": ([one[n] for n in names], [two[n] for n in names])}
    extra = {"ckks_heads_unpacked": [unpacked1, unpacked2],
             "second_deployment": str(rec.out / "link")}
    result = run_linkability(apps, records, out_dir, config, extra)
    result.notes.append(
        "Records read from the stores of two real `pura serve` deployments with independent "
        f"keys: the recorded views run ({rec.out}) and a second one enrolling the second image "
        f"of {len(names)} of its people ({rec.out / 'link'}). A keeps no per-person CKKS record "
        "once B's refresh has packed the heads into blocks (ckks_heads_unpacked)."
    )
    return result


def _result(
    outcomes: list[LinkageOutcome], record_bytes: dict[str, int], out_dir: Path, started: float
) -> EvaluationResult:
    protected = [o for o in outcomes if o.protection != "plaintext templates"]
    alpha = FAMILY_ALPHA / max(1, len(protected))  # Bonferroni over the protected functions
    worst = max(o.result.d_sys for o in protected)
    plain = outcomes[0]
    rows: list[dict[str, object]] = [
        {
            "record": o.protection,
            "linkage function": o.function,
            "D_sys": round(o.result.d_sys, 4),
            "95% CI": f"[{o.ci[0]:.3f}, {o.ci[1]:.3f}]",
            "chance level (null p95)": round(o.null_p95, 4),
            "p-value": round(o.p_value, 4),
            "linkable": o.linkable(FAMILY_ALPHA if o is plain else alpha),
            "mated": o.mated,
            "non-mated": o.nonmated,
        }
        for o in outcomes
    ]
    linked = [r for r in rows[1:] if r["linkable"]]
    return EvaluationResult(
        key="linkability",
        title="Linkability across deployments (ISO/IEC 24745)",
        summary=(
            f"plaintext D↔sys = {plain.result.d_sys:.3f}; Pura records: worst D↔sys = "
            f"{worst:.3f}, {len(linked)} of {len(protected)} key-free functions link"
        ),
        metrics={
            "plaintext_d_sys": plain.result.d_sys,
            "pura_worst_d_sys": worst,
            "bar_max_d_sys": MAX_D_SYS,
            "record_bytes": record_bytes,
            "mated_pairs": outcomes[0].mated,
            "nonmated_pairs": outcomes[0].nonmated,
        },
        passed=not linked and bool(rows[0]["linkable"]),
        figures=[save_figure(_plot(outcomes), out_dir, "linkability.png")],
        tables={"D↔sys per linkage function": rows},
        notes=[
            "D↔sys: 0 = fully unlinkable, 1 = fully linkable (Gomez-Barrero et al., TIFS 2018).",
            "Histograms use shared bins (about ten mated scores per bin, at most the paper's "
            "100) and ω = 1; CIs are 95% percentile bootstrap.",
            "The histogram estimator is biased upwards on finite samples, so a linkage function "
            "counts as linking only when D↔sys exceeds the 0.05 bar (security.md T14) and is "
            "significant against D↔sys under label permutation (p-value, Bonferroni-corrected "
            f"over the {len(protected)} protected functions at family-wise 5%).",
            "PASS also requires the plaintext control to be linkable (the test is sensitive).",
        ],
        seconds=time.perf_counter() - started,
    )


def _plot(outcomes: list[LinkageOutcome]) -> Figure:
    fig = Figure(figsize=(10, 3.2 * ((len(outcomes) + 2) // 3)))
    cols = 3
    rows = (len(outcomes) + cols - 1) // cols
    for i, o in enumerate(outcomes):
        ax = fig.add_subplot(rows, cols, i + 1)
        r = o.result
        ax.bar(r.bin_centres, r.nonmated_density, r.bin_width, alpha=0.5, label="non-mated")
        ax.bar(r.bin_centres, r.mated_density, r.bin_width, alpha=0.5, label="mated")
        twin = ax.twinx()
        twin.plot(r.bin_centres, r.local, "k-", lw=1)
        twin.set_ylim(-0.05, 1.05)
        twin.set_ylabel("D↔(s)", fontsize=7)
        ax.set_title(f"{o.protection}: {o.function}\nD↔sys={r.d_sys:.3f}", fontsize=8)
        ax.tick_params(labelsize=6)
        if i == 0:
            ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


__all__ = [
    "FAMILY_ALPHA",
    "KEY_FREE_LINKAGE",
    "MAX_D_SYS",
    "LinkabilityConfig",
    "LinkageOutcome",
    "Records",
    "TwoApplications",
    "bit_similarity",
    "byte_correlation",
    "byte_equality",
    "evaluate_scores",
    "link_deployment",
    "mated_nonmated",
    "run_linkability",
    "run_recorded_linkability",
    "size_similarity",
    "stored_records",
]
