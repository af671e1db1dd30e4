"""Wiring of the inversion evaluation to real LFW chips, the torch model and a deployment's keys.

Kept apart from :mod:`inversion` (the attack itself) because it touches the image pipeline
(dlib detection + alignment for the chips) and key generation; only the CLI and tests call it.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np

from pura.errors import PuraError
from pura_client.audit.data import AuditData
from pura_client.audit.inversion import (
    GradientInverter,
    InversionConfig,
    ServerView,
    UInt8Array,
    Victim,
    bytes_to_vector,
    masked_values_to_vector,
    per_victim,
    run_inversion,
)
from pura_client.audit.metrics import FloatArray
from pura_client.audit.protect import DeploymentKeys
from pura_client.audit.report import EvaluationResult

if TYPE_CHECKING:
    from pura_client.audit.cli import AuditContext

#: Public people whose chips are averaged into the attacker's starting face.
AVERAGE_FACE_PEOPLE = 40
#: A's records are cheap to produce: enough attempts for the rule of three at 0.1%.
A_VIEW_ATTEMPTS = 3000


class ChipSource:
    """Aligned 150×150 chips of LFW images (dlib HOG + 5 landmarks, dlib's chip extraction)."""

    def __init__(self) -> None:
        from pura_client.datasets.lfw import LFWDataset
        from pura_client.embedding.reference import DlibReferenceEmbedder

        self.dataset = LFWDataset.open()
        self.embedder = DlibReferenceEmbedder()

    def __repr__(self) -> str:
        return "ChipSource()"

    def chip(self, name: str, index: int = 1) -> UInt8Array | None:
        """Chip of image ``index`` of ``name``; None when no face is found."""
        from pura_client.embedding.image import load_rgb

        rgb = load_rgb(self.dataset.image_path(name, index))
        box = self.embedder.locator.detect(rgb).largest
        return None if box is None else self.embedder.chip(rgb, box)


def victims_of(data: AuditData, chips: ChipSource, n: int) -> list[Victim]:
    """The first ``n`` enrolled people with a mated probe; template = enrolled image (#1)."""
    out: list[Victim] = []
    for i, label in enumerate(data.enrolled.labels):
        if label not in data.mated_probes.labels:
            continue
        j = data.mated_probes.labels.index(label)
        probe = data.mated_probes.vectors[j]
        out.append(Victim(label, data.enrolled.vectors[i], probe, chips.chip(label)))
        if len(out) == n:
            break
    return out


def server_views(
    keys: DeploymentKeys, public: FloatArray, b_attempts: int
) -> dict[str, ServerView]:
    """A's two stored records and B's exact-stage view, each turned into a target vector."""

    def b_view(victims: list[Victim]) -> FloatArray:
        """One real exchange per distinct victim: its fresh records are all the candidates
        (A shuffles candidates, so one template per exchange keeps B's rows attributable)."""
        query = public[random.Random(len(victims)).randrange(len(public))]
        scale = keys.params.encoding.scale_bits
        groups: dict[str, list[int]] = {}
        for i, v in enumerate(victims):
            groups.setdefault(v.label, []).append(i)
        rows = np.zeros((len(victims), victims[0].template.size))
        for idx in groups.values():
            masked = keys.helper_view(query, victims[idx[0]].template, len(idx))
            for i, values in zip(idx, masked, strict=True):
                rows[i] = masked_values_to_vector(values, scale)
        return rows

    views = {
        "A: stored Paillier template": ServerView(
            per_victim(lambda v: bytes_to_vector(keys.paillier_record(v.template))),
            A_VIEW_ATTEMPTS,
        ),
        "A: stored CKKS head": ServerView(
            per_victim(lambda v: bytes_to_vector(keys.ckks_record(v.template))), A_VIEW_ATTEMPTS
        ),
    }
    if b_attempts > 0:
        views["B: masked values in the exact stage"] = ServerView(b_view, b_attempts)
    return views


def run(ctx: AuditContext, victims: int, steps: int, b_attempts: int) -> EvaluationResult:
    """Inversion on ``victims`` enrolled people with the torch port of dlib's ResNet."""
    from pura_client.embedding.resnet import load_dlib_resnet

    chips = ChipSource()
    targets = victims_of(ctx.data, chips, victims)
    public_names = ctx.data.public.identities()[:AVERAGE_FACE_PEOPLE]
    public_chips = [c for c in (chips.chip(n) for n in public_names) if c is not None]
    if not targets or not public_chips:
        raise PuraError("inversion needs victims and public chips with detectable faces")
    keys = DeploymentKeys.generate(ctx.params, ctx.rotation, random.Random(ctx.seed))
    views = server_views(keys, ctx.data.public.vectors, b_attempts)
    inverter = GradientInverter(load_dlib_resnet(), InversionConfig(victims=victims, steps=steps))
    return run_inversion(inverter, targets, public_chips, ctx.data.public, views, ctx.out)


__all__ = ["ChipSource", "run", "server_views", "victims_of"]
