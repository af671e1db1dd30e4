"""A ``pura-audit views`` run, loaded for the evaluations that read a server's view.

``pura-audit views --out DIR`` leaves, under ``DIR/work``: the key set the servers ran with
(``keys/``), what each ``pura serve`` process recorded (``record/a``, ``record/b``, see
:mod:`pura.service.recording`), the copy of A's store taken when A stopped
(``record/a/data/gallery.db``), and the driver's log of what it sent and what it was answered
(``run.json``, ``config.json``). :class:`RecordedRun` loads all of it, with the run's LFW
faces (the same deterministic selection the driver enrolled and probed), and derives the
per-identification facts the evaluations need, *only* from those records:

* the answer the client received (the driver's log: the servers' output, nothing recomputed);
* B's view: the preselection requests B received (decrypted with B's own CKKS key, as B
  can), and the blinded-product requests B received (combined with B's own Paillier share, as
  B does in its first step);
* what A stored: the templates of A's store copy (subject, block, slot, ciphertext bytes) and
  the collection's threshold in the exact stage's integer units.

Ground truth that no party has: the auditor holds both Paillier shares of the evaluation key set
and opens the labels of the candidates B served (which stored template each one is), and
recomputes the exact stage's integer distances from the plaintext faces with the client's own
encoding. It is used to *score*, never as an attacker's input.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pura.crypto.encoding import PCARotation, l2_normalize, quantize
from pura.crypto.paillier import Ciphertext, KeyShare, PublicKey, combine, partial_decrypt_batch
from pura.crypto.params import PRESETS, ParameterSet
from pura.gallery.store import GalleryStore, TemplateRecord
from pura.keys import load_a_keys, load_b_keys, load_public_keys
from pura.protocols.candidates import CandidatesReply
from pura.protocols.enroll import TemplateLayout
from pura.protocols.identify import ExactConfig
from pura.protocols.messages import BlindedProductRequest
from pura.protocols.preselect import PreselectRequest
from pura.protocols.secure_distance import assemble_vectors, slot_counts
from pura.protocols.steps import Step
from pura.protocols.tickets import strip
from pura_client.audit.metrics import AuditError, FloatArray
from pura_client.audit.recordings import Event, Recording
from pura_client.audit.views import (
    COLLECTION,
    WOLF,
    Faces,
    Probe,
    Run,
    ViewsConfig,
    b_views,
    load_faces,
)

IntArray = npt.NDArray[np.int64]
CONFIG_FILE = "config.json"


def helper_view(
    payload: bytes, key: PublicKey, share_b: KeyShare, layout: TemplateLayout
) -> list[list[int]]:
    """B's decryption of one blinded-product request: ``v_j = q(y_j) + 2^s + r_j`` per
    candidate. Exactly B's first step (A's partial decryptions combined with share 2's, the
    slots unpacked, split per candidate), redone by the auditor on the recorded bytes."""
    request = BlindedProductRequest.from_bytes(key, strip(payload))
    mine = partial_decrypt_batch(share_b, request.masked)
    counts = slot_counts(layout, request.n_candidates)
    contents: list[int] = []
    for pa, pb, n in zip(request.partials, mine, counts, strict=True):
        contents += layout.packed.unpack_raw(combine(pa, pb), n)
    return assemble_vectors(layout, request.n_candidates, contents)


@dataclass(frozen=True)
class RecordedQuery:
    """One identification the real servers answered, with its measurements.

    ``answer``: the subject the client was told (None: no match). ``candidates``: the subjects
    of the candidates B served, in B's order (the auditor opened their labels).
    ``exact_units``: the smallest exact-stage distance ``D = ‖q(x) − q(y)‖²`` among them
    (integers, recomputed from the plaintext faces with the client's encoding) and
    ``exact_label`` its subject. ``consistent``: the answer is what that distance and the
    collection's threshold decide. ``b_view``: B's decrypted preselection scores, in B's
    order; ``b_total``: their number; ``mate_position``: the true mate's position among them
    (None for non-mated probes or a mate not in the searched blocks)."""

    probe: Probe
    answer: str | None
    candidates: tuple[str, ...]
    exact_units: int
    exact_label: str
    consistent: bool
    b_view: FloatArray
    b_total: int
    mate_position: int | None
    seconds: float

    @property
    def true_label(self) -> str | None:
        return self.probe.label if self.probe.mated else None


class RecordedRun:
    """Everything one ``pura-audit views`` run left in its output folder."""

    def __init__(self, out: Path, faces: Faces | None = None) -> None:
        self.out = out
        self.work = out / "work"
        if not (self.work / "run.json").exists():
            raise AuditError(f"no `pura-audit views` run in {out} (expected {out}/work/run.json)")
        self.config = read_config(out)
        self.run = Run.load(self.work / "run.json")
        self.a = Recording(self.work / "record" / "a")
        self.b = Recording(self.work / "record" / "b")
        self.faces = faces if faces is not None else load_faces(
            self.config.people, self.config.epochs * self.config.nonmated_per_epoch,
            self.config.seed)
        centroid = self.faces.public.mean(axis=0)
        self.wolf: FloatArray = centroid / np.linalg.norm(centroid)

    def __repr__(self) -> str:
        return f"RecordedRun({self.out}, probes={len(self.run.probes)})"

    # --- keys and the servers' settings ----------------------------------------------------

    @property
    def keys(self) -> Path:
        return self.work / "keys"

    @cached_property
    def params(self) -> ParameterSet:
        """The parameter set of the key set the servers ran with (read from the keys, not from
        the run's preset name: preset names have been re-pointed, parameter-set ids have not)."""
        return load_public_keys(self.keys / "public").parameters

    @property
    def profile(self) -> str:
        """The preset of :attr:`params` (a second deployment is made with the same)."""
        for name, preset in PRESETS.items():
            if preset.id == self.params.id:
                return name
        raise AuditError(f"no parameter preset has the id {self.params.id} of {self.keys}")

    @cached_property
    def shares(self) -> tuple[KeyShare, KeyShare]:
        """Both Paillier shares (auditor only: opens labels to score, never to attack)."""
        return load_a_keys(self.keys / "a").share, load_b_keys(self.keys / "b").share

    @property
    def key(self) -> PublicKey:
        return self.shares[1].public_key

    @cached_property
    def layout(self) -> TemplateLayout:
        enc = self.params.encoding
        return ExactConfig.for_key(self.key, enc.dim, enc.scale_bits).template

    @cached_property
    def pca(self) -> PCARotation:
        from pura.service.run import load_pca

        return load_pca(self.keys / "public", self.params.encoding.model_id)

    @cached_property
    def threshold_units(self) -> int:
        """The collection's decision threshold, as A stored it (exact-stage integer units)."""
        with GalleryStore(self.a.root / "data" / "gallery.db") as store:
            return int(store.get_collection(COLLECTION).threshold)

    @property
    def unit(self) -> float:
        """Integer units per squared distance of unit vectors (``4^s``)."""
        return float(1 << (2 * self.params.encoding.scale_bits))

    @property
    def tau(self) -> float:
        """The servers' threshold as a squared distance of unit vectors."""
        return self.threshold_units / self.unit

    # --- what A stored --------------------------------------------------------------------

    @cached_property
    def stored(self) -> list[TemplateRecord]:
        """The templates of A's store copy, in store order."""
        with GalleryStore(self.a.root / "data" / "gallery.db") as store:
            return store.all_templates(COLLECTION)

    @cached_property
    def subject_of(self) -> dict[int, str]:
        return {int(t.template_id, 16): t.subject_id for t in self.stored}

    @cached_property
    def position_of(self) -> dict[str, tuple[int, int]]:
        """Block and slot of each subject's (first) stored template."""
        out: dict[str, tuple[int, int]] = {}
        for t in self.stored:
            out.setdefault(t.subject_id, (t.block_no, t.slot))
        return out

    # --- plaintext (ground truth) ---------------------------------------------------------

    @cached_property
    def vector_of(self) -> dict[str, FloatArray]:
        out = {label: self.faces.enrolled[i] for i, label in enumerate(self.faces.enrolled_labels)}
        out[WOLF] = self.wolf
        return out

    def probe_vector(self, probe: Probe) -> FloatArray:
        v: FloatArray = self.faces.mated[probe.row] if probe.mated else self.faces.nonmated[
            probe.row]
        return v

    def gallery_at(self, epoch: int) -> tuple[FloatArray, list[str]]:
        """The enrolled faces when a probe of ``epoch`` was sent (the wolf included, if A
        admitted it)."""
        n = self.run.epoch_sizes[epoch]
        labels = list(self.faces.enrolled_labels[:n])
        vectors = [self.faces.enrolled[:n]]
        if WOLF in self.position_of:
            labels.append(WOLF)
            vectors.append(self.wolf[None, :])
        return np.vstack(vectors), labels

    def quantised(self, vector: FloatArray) -> IntArray:
        """The client's encoding of a face: L2-normalised, PCA-rotated, fixed point."""
        enc = self.params.encoding
        rotated = self.pca.apply(l2_normalize(vector, enc.dim))
        return np.asarray(quantize(rotated, enc.scale_bits), dtype=np.int64)

    # --- B's view, per identification ----------------------------------------------------

    def _b_exchanges(self, step: str) -> list[Event]:
        return [e for e in self.b.exchanges(step) if not e.get("error")]

    def masked_values(self) -> list[list[list[int]]]:
        """Per blinded-product request B answered: what B decrypted, one row per candidate."""
        share_b = self.shares[1]
        return [helper_view(self.b.blob(e, "request"), self.key, share_b, self.layout)
                for e in self._b_exchanges(Step.BLINDED_PRODUCT)]

    def _served(self, event: Event) -> list[str]:
        """The subjects of the candidates B served in one preselection reply (auditor)."""
        share_a, share_b = self.shares
        reply = CandidatesReply.from_bytes(self.b.blob(event, "reply"))
        out = []
        for raw in reply.labels:
            label = Ciphertext.from_bytes(self.key, raw)
            tid = combine(share_a.partial_decrypt(label), share_b.partial_decrypt(label))
            out.append(self.subject_of.get(tid, f"unknown-{tid:032x}"))
        return out

    @cached_property
    def queries(self) -> list[RecordedQuery]:
        """Every identification of the run, in the order the driver sent them."""
        probes = self.run.probes
        preselect = self._b_exchanges(Step.PRESELECT)
        views = b_views(self.b, self.keys / "b")
        if len(preselect) != len(probes) or len(views) != len(probes):
            raise AuditError(f"B answered {len(preselect)} preselections for {len(probes)} "
                             "probes (every gallery of the run must exceed top_k)")
        out = []
        for probe, event, (view, request) in zip(probes, preselect, views, strict=True):
            served = self._served(event)
            q = self.quantised(self.probe_vector(probe))
            dists = [int(((q - self.quantised(self.vector_of[s])) ** 2).sum())
                     if s in self.vector_of else 1 << 62 for s in served]
            best = int(np.argmin(dists))
            matched = dists[best] <= self.threshold_units
            values = np.concatenate(view)
            out.append(RecordedQuery(
                probe=probe, answer=probe.answer, candidates=tuple(served),
                exact_units=dists[best], exact_label=served[best],
                consistent=(probe.answer is not None) == matched
                and (not matched or probe.answer == served[best]),
                b_view=values, b_total=int(values.size),
                mate_position=self._mate_position(probe, request, len(view[0])),
                seconds=probe.seconds,
            ))
        return out

    def _mate_position(self, probe: Probe, request: PreselectRequest, slots: int) -> int | None:
        """Where the mate's slot sits in B's view: A's per-query block order and rotation
        (ground truth; the oblivious-candidates request also names them to B)."""
        if not probe.mated or probe.label not in self.position_of:
            return None
        block, slot = self.position_of[probe.label]
        order, rotations = self._order(request)
        if block not in order:
            return None
        view = order.index(block)
        return view * slots + (slot - rotations[view]) % slots

    def _order(self, request: PreselectRequest) -> tuple[list[int], list[int]]:
        return list(request.blocks), list(request.rotations)


def read_config(out: Path) -> ViewsConfig:
    """The run's sizes: ``work/config.json`` (written by ``run_views``), else the settings of
    ``views.json`` (runs from before the file existed)."""
    path = out / "work" / CONFIG_FILE
    if path.exists():
        raw: dict[str, Any] = json.loads(path.read_text())
        fields = {f.name for f in dataclasses.fields(ViewsConfig)}
        return ViewsConfig(**{k: v for k, v in raw.items() if k in fields})
    views = out / "views.json"
    if not views.exists():
        raise AuditError(f"{out}: neither work/{CONFIG_FILE} nor views.json says the run's sizes")
    s = json.loads(views.read_text())["settings"]
    epochs = len(s["epochs"])
    nonmated = int(s["probes"]) - int(s["mated"])
    return ViewsConfig(people=int(s["people"]), epochs=epochs,
                       mated_per_epoch=int(s["mated"]) // epochs,
                       nonmated_per_epoch=nonmated // epochs, profile=str(s["profile"]),
                       seed=int(s["seed"]))


def write_config(out: Path, config: ViewsConfig) -> None:
    (out / "work" / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=1))


__all__ = ["RecordedQuery", "RecordedRun", "helper_view", "read_config", "write_config"]
