"""Template inversion (irreversibility, threat T1): rebuild a face from a leaked template.

White-box attack (the strongest setting of security.md §1.4): the attacker has the very network
Pura's clients use — dlib's ResNet ported to torch — and optimises the *pixels* of a 150×150 chip,
starting from the average face of public people, so that the chip's embedding points in the
direction of the target (loss ``1 − cos``, plus a total-variation image prior that keeps the
result smooth and face-like). Success is measured as in the literature: the share of
reconstructions the system accepts as the victim at its FMR 0.1% threshold (SAR), against the
leaked template itself (type I) and against another capture of the victim (type II).

Then the same attacker gets only what Pura's servers hold or see, read from the recordings of
real ``pura serve`` processes (a ``pura-audit views`` run, :mod:`_inversion_setup`):

* server A's stored record of the victim (the packed threshold-Paillier template in A's store);
* server B's view in the exact-distance step: the statistically masked values
  ``v = q(y) + 2^s + r`` it decrypted from every blinded-product request it received.

None of them is a template the attacker can invert, so it must turn them into a target vector by
some key-free mapping (bytes → 128 features; for B's values, the residues an unmasked value would
have). Two measurements: the full image-space attack on a few victims (with pictures), and a
*perfect-inverter* bound over ≥ 3,000 attempts — the derived target vector itself is compared with
the victim, which is at least as good as any face an inverter could draw for it. Zero accepts in
n attempts bound the SAR by 3/n (rule of three).

This module is the audit's only torch user: it needs gradients through the network.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.nn import functional as F  # noqa: N812 (torch convention)

from pura_client.audit.data import LabelledEmbeddings, system_threshold
from pura_client.audit.metrics import AuditError, FloatArray, rule_of_three, upper_bound
from pura_client.audit.report import EvaluationResult, save_figure

UInt8Array = npt.NDArray[np.uint8]
CHIP = 150


@dataclass(frozen=True)
class Victim:
    """An enrolled person: the leaked template, another capture, the enrolled chip (display)."""

    label: str
    template: FloatArray
    probe: FloatArray
    chip: UInt8Array | None = None


@dataclass(frozen=True)
class InversionConfig:
    """Attack sizes. ``steps``/``lr`` are Adam iterations and step size in pixel units."""

    victims: int = 6
    steps: int = 80
    lr: float = 3.0
    tv_weight: float = 0.05
    seed: int = 0


def average_face(chips: Sequence[UInt8Array]) -> FloatArray:
    """Pixel-wise mean of aligned public chips: the attacker's neutral starting image."""
    if not chips:
        raise AuditError("the average face needs at least one public chip")
    stack = np.stack([np.asarray(c, dtype=np.float64) for c in chips])
    if stack.shape[1:] != (CHIP, CHIP, 3):
        raise AuditError(f"chips must be {CHIP}x{CHIP}x3, got {stack.shape[1:]}")
    out: FloatArray = stack.mean(axis=0)
    return out


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (in units of the 0..255 range)."""
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean(dim=(1, 2, 3))
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean(dim=(1, 2, 3))
    return (dh + dw) / 255.0


class GradientInverter:
    """Pixel-space gradient attack through a face network (NCHW float 0..255 → descriptor)."""

    def __init__(self, model: nn.Module, config: InversionConfig) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.config = config

    def __repr__(self) -> str:
        return f"GradientInverter(steps={self.config.steps}, lr={self.config.lr})"

    def embed(self, images: UInt8Array) -> FloatArray:
        """Unit descriptors of HWC uint8 chips (the system's view of a presented image)."""
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
            out: FloatArray = F.normalize(self.model(x), dim=1).double().numpy()
        return out

    def invert(self, targets: FloatArray, start: FloatArray) -> UInt8Array:
        """Chips whose embeddings approach ``targets`` (n × 128), all starting from ``start``."""
        cfg = self.config
        t = F.normalize(torch.from_numpy(np.asarray(targets, dtype=np.float32)), dim=1)
        init = torch.from_numpy(np.asarray(start, dtype=np.float32)).permute(2, 0, 1)
        x = init.unsqueeze(0).repeat(t.shape[0], 1, 1, 1).contiguous().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=cfg.lr)
        for _ in range(cfg.steps):
            opt.zero_grad()
            emb = F.normalize(self.model(x), dim=1)
            loss = (1.0 - (emb * t).sum(dim=1) + cfg.tv_weight * _total_variation(x)).sum()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            with torch.no_grad():
                x.clamp_(0.0, 255.0)
        images: UInt8Array = x.detach().round().permute(0, 2, 3, 1).to(torch.uint8).numpy()
        return images


# ---------------------------------------------------------------------------------------------
# What the attacker can derive from the servers' data (no keys)
# ---------------------------------------------------------------------------------------------


def bytes_to_vector(data: bytes, dim: int = 128) -> FloatArray:
    """Key-free features of a record: mean byte of ``dim`` equal chunks, centred, unit norm."""
    raw = np.frombuffer(data, dtype=np.uint8).astype(np.float64)
    if raw.size < dim:
        raise AuditError(f"a record of {raw.size} bytes cannot give {dim} features")
    usable = raw[: raw.size - raw.size % dim].reshape(dim, -1)
    v = usable.mean(axis=1) - usable.mean()
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else np.full(dim, dim**-0.5)


def masked_values_to_vector(values: Sequence[int], scale_bits: int) -> FloatArray:
    """B's best reading of masked values ``v = q + 2^s + r``: the residue ``v mod 2^(s+1)``.

    If the mask were absent (or small) this would give back ``q + 2^s`` exactly; with Pura's
    ``κ = 40``-bit mask it is uniform, which is the point being measured.
    """
    modulus = 1 << (scale_bits + 1)
    residue = np.array([int(v) % modulus for v in values], dtype=np.float64)
    v = residue / (1 << scale_bits) - 1.0
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


#: A server view: victims → one fresh target vector each (rows), derived from that server's data.
#: Batched because B's view comes from one exact-distance exchange over many candidates.
ViewSource = Callable[[list[Victim]], FloatArray]


@dataclass(frozen=True)
class ServerView:
    """A named view and how many perfect-inverter attempts to spend on it.

    ``victims``: whom the bound attacks (default: the image attack's victims, cycled).
    ``against_all``: a derived vector counts as accepted when it is within τ of *any* of them
    (for views whose rows the auditor cannot attribute to one person, e.g. B's exact-stage
    values, which A shuffles)."""

    source: ViewSource
    attempts: int
    victims: list[Victim] | None = None
    against_all: bool = False


def rows_source(rows: FloatArray) -> ViewSource:
    """A view of recorded rows not attributable to victims: each call returns the next
    ``len(victims)`` rows (use with ``against_all``)."""
    cursor = [0]

    def source(victims: list[Victim]) -> FloatArray:
        begin = cursor[0]
        cursor[0] = begin + len(victims)
        picked: FloatArray = rows[np.arange(begin, begin + len(victims)) % len(rows)]
        return picked

    return source


def per_victim(derive: Callable[[Victim], FloatArray]) -> ViewSource:
    """Lift a one-victim derivation (e.g. from A's stored record) to a batched source."""

    def source(victims: list[Victim]) -> FloatArray:
        return np.stack([derive(v) for v in victims])

    return source


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def _accepted(embeddings: FloatArray, references: FloatArray, tau: float) -> npt.NDArray[np.bool_]:
    d = ((embeddings - references) ** 2).sum(axis=1)
    out: npt.NDArray[np.bool_] = -d >= tau
    return out


@dataclass(frozen=True)
class ImageAttack:
    """One image-space attack run over the victims."""

    name: str
    images: UInt8Array
    type1: npt.NDArray[np.bool_]
    type2: npt.NDArray[np.bool_]


def _image_attack(
    name: str,
    inverter: GradientInverter,
    targets: FloatArray,
    victims: list[Victim],
    start: FloatArray,
    tau: float,
) -> ImageAttack:
    images = inverter.invert(targets, start)
    emb = inverter.embed(images)
    return ImageAttack(
        name=name,
        images=images,
        type1=_accepted(emb, np.stack([v.template for v in victims]), tau),
        type2=_accepted(emb, np.stack([v.probe for v in victims]), tau),
    )


def _batches(victims: list[Victim], n: int, size: int) -> Iterator[list[Victim]]:
    """``n`` victims in total (cycling through the list), in batches of at most ``size``."""
    for begin in range(0, n, size):
        yield [victims[i % len(victims)] for i in range(begin, min(n, begin + size))]


def perfect_inverter_bound(
    source: ViewSource, victims: list[Victim], attempts: int, tau: float, batch: int = 100,
    *, against_all: bool = False,
) -> tuple[int, int]:
    """(type-II accepts, attempts) when the derived vector itself is presented as the victim
    (``against_all``: as whichever of ``victims`` it is closest to)."""
    hits = 0
    everyone = np.stack([v.probe for v in victims])
    for group in _batches(victims, attempts, batch):
        derived = source(group)
        if against_all:
            d = ((derived[:, None, :] - everyone[None, :, :]) ** 2).sum(axis=2).min(axis=1)
            hits += int((-d >= tau).sum())
        else:
            hits += int(_accepted(derived, np.stack([v.probe for v in group]), tau).sum())
    return hits, attempts


def run_inversion(
    inverter: GradientInverter,
    victims: list[Victim],
    public_chips: Sequence[UInt8Array],
    calibration: LabelledEmbeddings,
    views: dict[str, ServerView],
    out_dir: Path,
    tau: float | None = None,
) -> EvaluationResult:
    """Plaintext-leak inversion vs. the same attacker on each server view. ``tau``: the
    acceptance threshold as a similarity ``−‖x − y‖²`` (default: FMR 0.1% on ``calibration``).
    """
    started = time.perf_counter()
    if not victims:
        raise AuditError("inversion needs at least one victim")
    tau = system_threshold(calibration) if tau is None else tau
    start = average_face(public_chips)
    start_emb = inverter.embed(start.round().astype(np.uint8)[None])
    zero_effort = _accepted(
        np.repeat(start_emb, len(victims), 0), np.stack([v.probe for v in victims]), tau
    )
    leaked = np.stack([v.template for v in victims])
    attacks = [_image_attack("plaintext template leaked", inverter, leaked, victims, start, tau)]
    first_view = next(iter(views.items()), None)
    if first_view is not None:
        derived = first_view[1].source(victims)
        attacks.append(_image_attack(first_view[0], inverter, derived, victims, start, tau))
    bounds = {
        name: perfect_inverter_bound(view.source, view.victims or victims, view.attempts, tau,
                                     against_all=view.against_all)
        for name, view in views.items()
    }
    return _result(attacks, bounds, zero_effort, victims, start, tau, out_dir, started)


def _result(
    attacks: list[ImageAttack],
    bounds: dict[str, tuple[int, int]],
    zero_effort: npt.NDArray[np.bool_],
    victims: list[Victim],
    start: FloatArray,
    tau: float,
    out_dir: Path,
    started: float,
) -> EvaluationResult:
    rows: list[dict[str, object]] = [
        {
            "attacker input": a.name,
            "method": "gradient attack (images)",
            "attempts": len(victims),
            "SAR type I": float(a.type1.mean()),
            "SAR type II": float(a.type2.mean()),
            "type II upper95": upper_bound(int(a.type2.sum()), len(victims)),
        }
        for a in attacks
    ]
    rows += [
        {
            "attacker input": name,
            "method": "perfect-inverter bound",
            "attempts": n,
            "SAR type I": None,
            "SAR type II": hits / n,
            "type II upper95": upper_bound(hits, n),
        }
        for name, (hits, n) in bounds.items()
    ]
    plain = attacks[0]
    view_hits = sum(h for h, _ in bounds.values()) + sum(int(a.type2.sum()) for a in attacks[1:])
    min_attempts = min((n for _, n in bounds.values()), default=0)
    metrics: dict[str, object] = {
        "system_threshold_sq_distance": -tau,
        "victims": len(victims),
        "plaintext_sar_type1": float(plain.type1.mean()),
        "plaintext_sar_type2": float(plain.type2.mean()),
        "average_face_sar_type2": float(zero_effort.mean()),
        "server_view_accepts": view_hits,
        "server_view_attempts_per_view": min_attempts,
        "server_view_rule_of_three": rule_of_three(min_attempts) if min_attempts else None,
    }
    passed = view_hits == 0 and plain.type1.mean() > 0
    fig = _plot(attacks, victims, start)
    return EvaluationResult(
        key="inversion",
        title="Template inversion (irreversibility)",
        summary=(
            f"leaked plaintext template: SAR {plain.type1.mean():.0%} (type I), "
            f"{plain.type2.mean():.0%} (type II); from server data: {view_hits} accepts in "
            f"{sum(n for _, n in bounds.values())} attempts"
        ),
        metrics=metrics,
        passed=passed,
        figures=[save_figure(fig, out_dir, "inversion.png")],
        tables={"success attack rate at FMR 0.1%": rows},
        notes=[
            "White-box attack: the attacker has Pura's own face network and its gradients.",
            "Type I: compared with the leaked template; type II: with another image of the victim.",
            "Perfect-inverter bound: the derived target vector is presented directly, so no "
            "image-based attack on the same input can do better. PASS needs 0 accepts from every "
            "server view and a working plaintext attack; the bound each view supports is its "
            "rule-of-three figure 3/attempts (≥ 3,000 attempts for 0.1%).",
        ],
        seconds=time.perf_counter() - started,
    )


def _plot(attacks: list[ImageAttack], victims: list[Victim], start: FloatArray) -> Figure:
    cols = min(len(victims), 6)
    rows = 1 + len(attacks) + (1 if victims[0].chip is not None else 0)
    fig = Figure(figsize=(1.6 * cols + 0.4, 1.75 * rows))
    grid: list[tuple[str, list[UInt8Array], list[bool] | None]] = []
    if victims[0].chip is not None:
        grid.append(("enrolled image", [v.chip for v in victims if v.chip is not None], None))
    grid.append(("start: average face", [start.round().astype(np.uint8)] * cols, None))
    for a in attacks:
        grid.append((a.name, list(a.images), [bool(b) for b in a.type2]))
    for r, (title, images, ok) in enumerate(grid):
        for c in range(cols):
            ax = fig.add_subplot(rows, cols, r * cols + c + 1)
            ax.imshow(images[c])
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(title[:22], fontsize=7)
            if ok is not None:
                ax.set_title(
                    "accepted" if ok[c] else "rejected",
                    fontsize=7,
                    color="red" if ok[c] else "green",
                )
    fig.tight_layout()
    return fig


__all__ = [
    "GradientInverter",
    "InversionConfig",
    "ServerView",
    "Victim",
    "ViewSource",
    "average_face",
    "bytes_to_vector",
    "masked_values_to_vector",
    "per_victim",
    "perfect_inverter_bound",
    "rows_source",
    "run_inversion",
]
