"""Wiring of the inversion evaluation to real LFW chips, the torch model and the recordings.

Kept apart from :mod:`inversion` (the attack itself) because it touches the image pipeline
(dlib detection + alignment for the chips) and a ``pura-audit views`` run's recordings (what A
stored, what B decrypted); only the CLI and tests call it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pura.errors import PuraError
from pura_client.audit.data import LabelledEmbeddings
from pura_client.audit.inversion import (
    GradientInverter,
    InversionConfig,
    ServerView,
    UInt8Array,
    Victim,
    bytes_to_vector,
    masked_values_to_vector,
    per_victim,
    rows_source,
    run_inversion,
)
from pura_client.audit.recorded import RecordedRun
from pura_client.audit.report import EvaluationResult

#: Public people whose chips are averaged into the attacker's starting face.
AVERAGE_FACE_PEOPLE = 40


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


def recorded_victims(rec: RecordedRun, chips: ChipSource | None, n: int | None) -> list[Victim]:
    """Enrolled people of a recorded run: template = the enrolled image (#1) as the servers
    stored it, probe = their second image; chips (for display and the image attack) for the
    first ``n`` only (``chips`` None: none)."""
    out: list[Victim] = []
    labels = rec.faces.enrolled_labels
    for i, label in enumerate(labels if n is None else labels[:n]):
        chip = chips.chip(label) if chips is not None else None
        out.append(Victim(label, rec.faces.enrolled[i], rec.faces.mated[i], chip))
    return out


def server_views(rec: RecordedRun) -> dict[str, ServerView]:
    """What the real servers held and saw, each turned into target vectors:

    * A's stored Paillier template of every enrolled person (A's store copy), one attempt per
      person, judged against that person's second image;
    * every row B decrypted from the blinded-product requests it received (one per candidate
      of every identification of the run), judged against *every* enrolled person's second
      image (A shuffles the candidates, so a row cannot be attributed to one person).
    """
    scale = rec.params.encoding.scale_bits
    stored = {t.subject_id: t.paillier for t in reversed(rec.stored)}
    everyone = [v for v in recorded_victims(rec, None, None) if v.label in stored]
    views = {
        "A: stored Paillier template": ServerView(
            per_victim(lambda v: bytes_to_vector(stored[v.label])), len(everyone), everyone
        ),
    }
    rows = [masked_values_to_vector(r, scale) for req in rec.masked_values() for r in req]
    if rows:
        views["B: masked values in the exact stage"] = ServerView(
            rows_source(np.stack(rows)), len(rows), everyone, against_all=True
        )
    return views


def run(rec: RecordedRun, out: Path, victims: int, steps: int) -> EvaluationResult:
    """Inversion on ``victims`` people the real servers enrolled, with the torch port of dlib's
    ResNet; the server views come from the recordings (:func:`server_views`)."""
    from pura_client.embedding.resnet import load_dlib_resnet

    chips = ChipSource()
    targets = [v for v in recorded_victims(rec, chips, victims) if v.chip is not None]
    public_names = _public_names(rec)[:AVERAGE_FACE_PEOPLE]
    public_chips = [c for c in (chips.chip(n) for n in public_names) if c is not None]
    if not targets or not public_chips:
        raise PuraError("inversion needs victims and public chips with detectable faces")
    calibration = LabelledEmbeddings(rec.faces.public,
                                     tuple(f"public-{i}" for i in range(len(rec.faces.public))))
    inverter = GradientInverter(load_dlib_resnet(), InversionConfig(victims=victims, steps=steps))
    result = run_inversion(inverter, targets, public_chips, calibration, server_views(rec), out,
                           tau=-rec.tau)
    result.notes.append(
        f"Server views read from the recordings of real `pura serve` processes ({rec.out}): "
        "A's stored templates from A's store copy, B's exact-stage values from the "
        "blinded-product requests B recorded (each row judged against every enrolled person). "
        "τ is the collection threshold A stored. The image attack on a leaked plaintext "
        "template is the face model's part and runs in-process."
    )
    return result


def _public_names(rec: RecordedRun) -> list[str]:
    """LFW people neither enrolled nor probes in the recorded run (the attacker's own data)."""
    from pura_client.datasets.lfw import LFWDataset

    taken = set(rec.faces.enrolled_labels) | set(rec.faces.nonmated_labels)
    counts = LFWDataset.open().people()
    return sorted(n for n, c in counts.items() if c >= 2 and n not in taken)


__all__ = ["ChipSource", "recorded_victims", "run", "server_views"]
