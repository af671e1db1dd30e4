"""The attacks of ``pura-audit views``, as functions of recorded views (no servers, no I/O).

Each attack takes what one party recorded (A's events, or B's decrypted preselection views)
and returns a figure; ground truth (A's rotations, the plaintext gallery) is a separate
argument and is used only to score the guess. Kept free of the driver so that tests can feed
crafted recordings and check that each attack computes the right thing.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Bytes of a stored ciphertext used to look for it in A's received payloads.
FINGERPRINT_BYTES = 32


# --- A: the nearest enrolled subject of a non-matching probe ---------------------------------


def fingerprints(stored: Mapping[str, Sequence[bytes]]) -> dict[bytes, str]:
    """``window -> subject`` for every stored template blob (``subject -> blobs``).

    Why a window from the middle: a stored template starts with a format header every
    template shares; its middle bytes are ciphertext, unique to this encryption. A received
    payload containing them carries that very ciphertext, not a re-randomisation of it."""
    out: dict[bytes, str] = {}
    for subject, blobs in stored.items():
        for blob in blobs:
            if len(blob) >= 4 * FINGERPRINT_BYTES:
                mid = len(blob) // 2
                out[blob[mid:mid + FINGERPRINT_BYTES]] = subject
    return out


def linked_subjects(payloads: Sequence[bytes], prints: Mapping[bytes, str]) -> list[str]:
    """Subjects whose stored ciphertext appears verbatim in ``payloads``, in order of first
    appearance (the order B or the pipeline handed them to A)."""
    found: list[tuple[int, int, str]] = []
    for i, payload in enumerate(payloads):
        for window, subject in prints.items():
            at = payload.find(window)
            if at >= 0:
                found.append((i, at, subject))
    ranked: list[str] = []
    for _, _, subject in sorted(found):
        if subject not in ranked:
            ranked.append(subject)
    return ranked


def a_guess(
    fetched_labels: Sequence[str], linked: Sequence[str], enrolled: Sequence[str],
    rng: random.Random, depth: int = 5,
) -> list[str]:
    """The attacker's ranked guess of one probe's nearest enrolled subjects.

    Best evidence first: the subjects of the candidates A's pipeline read, in the order read
    (today B's ranking); else stored ciphertexts found verbatim in what A received; else (A
    holds nothing that depends on the probe) a uniform guess, which is right with chance 1/N.
    """
    ranked: list[str] = []
    for subject in [*fetched_labels, *linked]:
        if subject not in ranked:
            ranked.append(subject)
    rest = [s for s in enrolled if s not in ranked]
    rng.shuffle(rest)
    return [*ranked, *rest][:depth]


@dataclass(frozen=True)
class NearestScore:
    """How often the attacker named the true nearest enrolled subject."""

    top1: float
    top5: float
    chance: float
    chance5: float
    probes: int
    evidence: str  # "fetched", "linked" or "none": what the guesses rested on


def score_nearest(guesses: Sequence[Sequence[str]], truth: Sequence[str], enrolled: int,
                  evidence: str) -> NearestScore:
    if not guesses or len(guesses) != len(truth):
        raise ValueError("need one guess list per probe")
    top1 = float(np.mean([bool(g) and g[0] == t for g, t in zip(guesses, truth, strict=True)]))
    top5 = float(np.mean([t in g[:5] for g, t in zip(guesses, truth, strict=True)]))
    return NearestScore(top1, top5, 1.0 / enrolled, min(1.0, 5.0 / enrolled), len(truth),
                        evidence)


def nearest_subjects(probes: FloatArray, gallery: FloatArray, labels: Sequence[str]) -> list[str]:
    """The true nearest enrolled subject of each probe (squared distance of unit vectors)."""
    d = (probes * probes).sum(1)[:, None] + (gallery * gallery).sum(1)[None, :] \
        - 2.0 * probes @ gallery.T
    return [labels[int(i)] for i in np.argmin(d, axis=1)]


# --- B: slot alignment, subspace recovery, match detection -----------------------------------


def _standard(v: FloatArray) -> FloatArray:
    centred = v - v.mean()
    scale = float(np.linalg.norm(centred))
    out: FloatArray = centred / scale if scale > 0 else centred
    return out


def estimate_shift(v1: FloatArray, v2: FloatArray) -> tuple[int, float]:
    """B's estimate of ``r`` with ``v2[p] ≈ v1[(p + r) mod n]`` (same slot), and the peak
    normalised correlation. Circular cross-correlation: invariant to each query's affine mask
    ``a·S + c`` with ``a > 0``; the peak is taken in absolute value, since two unrelated
    queries' scores may be anti-correlated at the true shift."""
    f = np.fft.rfft(_standard(v1)) * np.conj(np.fft.rfft(_standard(v2)))
    corr = np.abs(np.fft.irfft(f, n=len(v1)))
    r = int(np.argmax(corr))
    return r, float(corr[r])


def true_shift(rot1: int, rot2: int, n: int) -> int:
    """The shift :func:`estimate_shift` should find, from A's rotations (ground truth):
    view ``v[p]`` holds slot ``(p + rot) mod n``."""
    return (rot2 - rot1) % n


@dataclass(frozen=True)
class QueryView:
    """What B decrypted for one preselection (per view index), and A's secret state for it."""

    views: list[FloatArray]
    block_order: tuple[int, ...] | None  # ground truth (A's state); None if not recorded
    rotations: tuple[int, ...] | None
    epoch: int
    mated: bool
    #: What A's request itself told B (block id and rotation per view), if anything: then B
    #: needs no correlation to align.
    told_blocks: tuple[int, ...] = ()
    told_rotations: tuple[int, ...] = ()
    #: Ground truth of the secret re-layouts (issue 12), per view: ``canon[s]`` names the
    #: content of slot ``s`` by the slot it held before any re-layout. None: never re-laid out.
    canon: tuple[npt.NDArray[np.int64] | None, ...] = ()


def _told(q: QueryView) -> bool:
    return len(q.told_blocks) == len(q.views) and len(q.told_rotations) == len(q.views)


def match_views(q1: QueryView, q2: QueryView) -> list[tuple[int, int, float]]:
    """For each view of ``q1``: B's best ``(view of q2, shift, peak)``. When both requests
    named their blocks and rotations, B reads the alignment off them (peak 1.0)."""
    if _told(q1) and _told(q2):
        n = len(q1.views[0])
        out_told = []
        for i, block in enumerate(q1.told_blocks):
            if block in q2.told_blocks:
                j = q2.told_blocks.index(block)
                shift = true_shift(q1.told_rotations[i], q2.told_rotations[j], n)
                out_told.append((j, shift, 1.0))
            else:
                out_told.append((0, 0, 0.0))
        return out_told
    out = []
    for v1 in q1.views:
        best = max(((j, *estimate_shift(v1, v2)) for j, v2 in enumerate(q2.views)),
                   key=lambda t: t[2])
        out.append(best)
    return out


def aligned(q1: QueryView, q2: QueryView) -> bool | None:
    """Did B align every view of ``q1`` with the right view and shift of ``q2``? None without
    ground truth."""
    if q1.rotations is None or q2.rotations is None or q1.block_order is None \
            or q2.block_order is None:
        return None
    n = len(q1.views[0])
    for i, (j, shift, _) in enumerate(match_views(q1, q2)):
        if q1.block_order[i] != q2.block_order[j]:
            return False
        c1, c2 = _canon(q1, i, n), _canon(q2, j, n)
        if c1 is None or c2 is None:
            if shift != true_shift(q1.rotations[i], q2.rotations[j], n):
                return False
            continue
        # B claims q2's position p shows what q1's position p + shift shows: right on most
        # slots only if both name the same content (the layouts agree there).
        p = np.arange(n)
        same = c1[(p + shift + q1.rotations[i]) % n] == c2[(p + q2.rotations[j]) % n]
        if float(np.mean(same)) < 0.5:
            return False
    return True


def _canon(q: QueryView, view: int, n: int) -> npt.NDArray[np.int64] | None:
    if not q.canon:
        return None
    c = q.canon[view]
    return c if c is not None else np.arange(n, dtype=np.int64)


def slot_alignment(queries: Sequence[QueryView], rng: random.Random,
                   max_pairs: int = 400) -> tuple[float | None, int]:
    """Fraction of query pairs from DIFFERENT gallery epochs that B aligns, and pairs tried."""
    pairs = [(i, j) for i in range(len(queries)) for j in range(i + 1, len(queries))
             if queries[i].epoch != queries[j].epoch]
    if len(pairs) > max_pairs:
        pairs = rng.sample(pairs, max_pairs)
    verdicts = [aligned(queries[i], queries[j]) for i, j in pairs]
    known = [v for v in verdicts if v is not None]
    return (float(np.mean(known)) if known else None), len(known)


def orthonormal(m: FloatArray, dim: int) -> FloatArray:
    u, _, _ = np.linalg.svd(m, full_matrices=False)
    out: FloatArray = u[:, :dim]
    return out


def mean_principal_cosine(a: FloatArray, b: FloatArray) -> float:
    """Mean cosine of the principal angles between the column spans of orthonormal a, b."""
    return float(np.mean(np.clip(np.linalg.svd(a.T @ b, compute_uv=False), 0.0, 1.0)))


def aligned_matrix(queries: Sequence[QueryView]) -> FloatArray:
    """B's queries × slots matrix: every query's best-matching view rolled onto the first
    query's view 0, with B's own shift estimates (no ground truth)."""
    ref = queries[0]
    rows = []
    for q in queries:
        j, shift, _ = match_views(ref, q)[0]
        rows.append(np.roll(q.views[j], shift))
    return np.stack(rows)


def recovered_subspace(matrix: FloatArray, dim: int) -> FloatArray:
    """B's estimate of the gallery head subspace (slots × dim): rows centred (removes each
    mask's offset), scaled to unit norm (removes its scale), top right singular vectors."""
    centred = matrix - matrix.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    rows = centred / np.where(norms > 0, norms, 1.0)
    _, _, vt = np.linalg.svd(rows, full_matrices=False)
    out: FloatArray = vt[:dim].T
    return out


def complete_basis(recovered: FloatArray, dim: int, rng: np.random.Generator) -> FloatArray:
    """B's ``dim``-dimensional guess of the head subspace: the directions its SVD found,
    completed with random directions orthogonal to them (centred over slots, as every basis
    here). Why: with fewer aligned queries than ``dim`` B finds fewer directions than the
    subspace has; comparing only those with the heads' top directions would credit B with a
    whole subspace it never saw (0.48 from two queries), where the random baseline is scored
    over all ``dim`` (``bench/b_view_mechanisms.py``, docs/b-view-mechanisms.md)."""
    if recovered.shape[1] >= dim:
        return recovered[:, :dim]
    noise = rng.standard_normal((recovered.shape[0], dim - recovered.shape[1]))
    q, _ = np.linalg.qr(np.hstack([recovered, noise - noise.mean(axis=0, keepdims=True)]))
    out: FloatArray = q[:, :dim]
    return out


def subspace_cosines(recovered: FloatArray, heads: FloatArray,
                     rng: np.random.Generator) -> tuple[float, float]:
    """(cosine to the true head subspace, cosine of a random subspace of the same dimension).

    ``heads`` (slots × head_dim) in the frame of the reference view; both are centred over
    slots the way B's rows are, so a mask offset cannot favour either."""
    dim = recovered.shape[1]
    truth = orthonormal(heads - heads.mean(axis=0, keepdims=True), min(dim, heads.shape[1]))
    noise = rng.standard_normal(heads.shape)
    random_basis = orthonormal(noise - noise.mean(axis=0, keepdims=True), truth.shape[1])
    return (mean_principal_cosine(truth, recovered[:, :truth.shape[1]]),
            mean_principal_cosine(truth, random_basis))


def match_statistic(views: Sequence[FloatArray]) -> float:
    """B's ``(s1 − s2)/(s2 − median)`` over its whole decrypted view: a mated probe's mate
    stands out from the runner-up; invariant to the affine mask."""
    values = np.sort(np.concatenate(list(views)))
    s1, s2, med = float(values[-1]), float(values[-2]), float(np.median(values))
    return (s1 - s2) / (s2 - med) if s2 > med else 0.0


def auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Area under the ROC curve (Mann–Whitney, ties count half): P(pos > neg)."""
    pos, neg = np.asarray(positive, float), np.asarray(negative, float)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("AUC needs both classes")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


__all__ = [
    "NearestScore",
    "QueryView",
    "a_guess",
    "aligned",
    "aligned_matrix",
    "auc",
    "complete_basis",
    "estimate_shift",
    "fingerprints",
    "linked_subjects",
    "match_statistic",
    "mean_principal_cosine",
    "nearest_subjects",
    "recovered_subspace",
    "score_nearest",
    "slot_alignment",
    "subspace_cosines",
    "true_shift",
]
