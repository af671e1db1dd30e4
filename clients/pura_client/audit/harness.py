"""An in-process Pura deployment that records everything A and B exchange (evaluation only).

The parity and leakage audits need the *real* encrypted identification: real keys (threshold
Paillier + CKKS), enrolment with the servers' admission and the B-assisted block refresh, CKKS
preselection with B serving candidate copies, then the exact stage. This harness runs the
product's pipeline objects (:mod:`pura.pipeline`, the same ones ``NodeA`` runs) in one process
and records every A↔B message through the pipeline's channel, so an auditor can inspect B's
exact view. It wires; it re-implements no protocol step.

What the harness knows that no single party does — both Paillier shares, the CKKS secret key and
A's permutation state — it uses only to *measure* (e.g. where the true match sits in B's view, or
the exact distances the encrypted pipeline computed). This is the auditor's evaluation-gallery
privilege described in security.md (T4: "any score view restricted to auditors on evaluation
galleries"); it never feeds back into the protocol.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pura.crypto.ckks import CKKSContext
from pura.crypto.encoding import PCARotation, l2_normalize, quantize
from pura.crypto.paillier import (
    Ciphertext,
    KeyShare,
    PublicKey,
    RandomnessPool,
    combine,
    generate_keypair,
    partial_decrypt_batch,
)
from pura.crypto.params import ParameterSet
from pura.gallery.copies import CopyStore
from pura.gallery.packing import BlockLayout
from pura.pipeline import Enroller, Exchange, GalleryIndex, HelperChannel, Identifier
from pura.pipeline import Recorder as PipelineRecorder
from pura.pipeline.config import SearchConfig
from pura.pipeline.helper import CandidateServer, helper_steps, loopback
from pura.protocols.candidates import CandidatesReply, CopyPut, make_copy
from pura.protocols.enroll import TemplateLayout, encrypt_query, encrypt_template
from pura.protocols.identify import (
    STEP_BLINDED_PRODUCT,
    Candidate,
    ExactConfig,
    MatchResult,
    ServerA,
    ServerB,
    threshold_units,
)
from pura.protocols.messages import AdmittedTemplate, BlindedProductRequest
from pura.protocols.preselect import PreselectRequest, PreselectServer, PreselectState
from pura.protocols.secure_distance import assemble_vectors, slot_counts
from pura.protocols.steps import Step
from pura.protocols.tickets import strip
from pura_client.audit.data import LabelledEmbeddings
from pura_client.audit.metrics import FloatArray

STEP_PRESELECT = Step.PRESELECT
STEP_REFRESH = Step.REFRESH
#: The server's own search defaults (one place: pura.pipeline.config).
SEARCH = SearchConfig()


@dataclass(frozen=True)
class Message:
    """One recorded A↔B message."""

    step: str
    direction: str  # "A->B" or "B->A"
    payload: bytes


@dataclass
class Recorder(PipelineRecorder):
    """Append-only log of every message, in order (the pipeline's channel records into it)."""

    messages: list[Message] = field(default_factory=list)

    def add(self, step: str, direction: str, payload: bytes) -> None:
        self.messages.append(Message(step, direction, payload))

    def record(self, exchange: Exchange) -> None:
        self.add(exchange.step, "A->B", exchange.request)
        self.add(exchange.step, "B->A", exchange.reply)

    def wrap(self, call: Callable[[str, bytes], bytes]) -> Callable[[str, bytes], bytes]:
        """A transport that logs request and reply of every exact-stage step."""

        def recorded(step: str, payload: bytes) -> bytes:
            self.add(step, "A->B", payload)
            reply = call(step, payload)
            self.add(step, "B->A", reply)
            return reply

        return recorded


def helper_view(
    payload: bytes, key: PublicKey, share_b: KeyShare, layout: TemplateLayout
) -> list[list[int]]:
    """B's decryption of a recorded blinded-product request: ``v_j = q(y_j) + 2^s + r_j``.

    Exactly B's first step (combine A's partial decryptions with share 2's, unpack the slots,
    split per candidate), redone by the auditor on the recorded bytes.
    """
    request = BlindedProductRequest.from_bytes(key, payload)
    mine = partial_decrypt_batch(share_b, request.masked)
    counts = slot_counts(layout, request.n_candidates)
    contents: list[int] = []
    for pa, pb, n in zip(request.partials, mine, counts, strict=True):
        contents += layout.packed.unpack_raw(combine(pa, pb), n)
    return assemble_vectors(layout, request.n_candidates, contents)


@dataclass(frozen=True)
class QueryOutcome:
    """One identification, as seen by the client, by B, and by the auditor.

    ``decision``: what the client is told. ``candidates``: preselected labels. ``exact_best`` /
    ``exact_label``: the smallest squared distance the encrypted exact stage computed among the
    candidates (decrypted by the auditor) and its label. ``b_position``: where the true mate's
    slot sits in B's permuted view (None for non-mated probes); ``b_slots``: size of B's view.
    ``b_values``: B's decrypted, masked preselection scores in its own order.
    """

    true_label: str | None
    decision: MatchResult
    candidates: tuple[str, ...]
    exact_best: float
    exact_label: str
    consistent: bool
    b_position: int | None
    b_slots: int
    b_values: FloatArray
    b_masked_template_values: tuple[int, ...]
    seconds: float


class EncryptedIdentification:
    """Keys, an enrolled gallery, and both servers in one process, run by the product's own
    pipeline objects (:mod:`pura.pipeline`): :class:`~pura.pipeline.Enroller` admits the
    templates and refreshes the blocks with B, B keeps its candidate copies
    (:class:`~pura.pipeline.helper.CandidateServer`), and :class:`~pura.pipeline.Identifier`
    runs every query (admission, preselection served by B, exact stage, label opening).
    Every A↔B call goes through one :class:`~pura.pipeline.HelperChannel` whose recorder is
    :attr:`recorder`; nothing here re-implements a protocol step.

    The auditor's privileges (both key shares, the CKKS secret, A's preselection state) are
    used after the fact, on the recorded bytes, to measure."""

    NAMESPACE = "audit"

    def __init__(
        self,
        params: ParameterSet,
        enrolled: LabelledEmbeddings,
        rotation: PCARotation,
        threshold_sq_distance: float,
        top_k: int = SEARCH.top_k,
        view_k: int = SEARCH.view_k,
        rng: random.Random | None = None,
    ) -> None:
        self.params = params
        self.rotation = rotation
        self.top_k = top_k
        self.view_k = max(view_k, top_k)
        self.rng = rng if rng is not None else random.SystemRandom()
        self.recorder = Recorder()
        self.labels = enrolled.labels
        self._setup_keys()
        self.search = SearchConfig(top_k=top_k, view_k=self.view_k)
        self.server_b = ServerB(self._share_b, self.config)
        self._copy_dir = tempfile.TemporaryDirectory(prefix="pura-audit-copies-")
        self.copies = CopyStore(Path(self._copy_dir.name) / "copies.db")
        candidates = CandidateServer(self.server_b, self.ckks_b, self.copies, self.search,
                                     random.Random(self.rng.getrandbits(64)))
        self.channel = HelperChannel(loopback(helper_steps(self.server_b, self.ckks_b,
                                                           candidates)), self.recorder)
        self.server_a = ServerA(self._share_a, self.config, self.channel.paillier(self.key),
                                rng=self.rng)
        self.enroller = Enroller(self.server_a, self.ckks_a, self.channel, self._decoys, self.rng)
        self.identifier = Identifier(self.server_a, self.ckks_a, params.encoding.head_dim,
                                     self.channel, self.search, self.rng)
        self._enrol(enrolled)
        self.tau = threshold_units(threshold_sq_distance, params.encoding.scale_bits)

    def __repr__(self) -> str:
        return f"EncryptedIdentification(templates={len(self.labels)}, top_k={self.top_k})"

    def _setup_keys(self) -> None:
        key, self._share_a, self._share_b = generate_keypair(self.params.paillier, self.rng)
        self.key = key
        self.config = ExactConfig.for_key(
            key, self.params.encoding.dim, self.params.encoding.scale_bits
        )
        self.pool = RandomnessPool(key, rng=self.rng)
        self.ckks_b = CKKSContext.generate(self.params.ckks)
        self.ckks_a = self.ckks_b.public()

    def _decoys(self, n: int) -> FloatArray:
        return self.rotation.sample_decoy_heads(n, self.params.encoding.head_dim, self.rng)

    def _quantised(self, vector: FloatArray) -> list[int]:
        rotated = self.rotation.apply(l2_normalize(vector, self.params.encoding.dim))
        return [int(v) for v in quantize(rotated, self.params.encoding.scale_bits)]

    def _enrol(self, enrolled: LabelledEmbeddings) -> None:
        """Client encryption, the servers' admission (with B), slot assignment, B's copies,
        then the B-assisted block refresh: the server's enrolment, through the pipeline."""
        head_dim = self.params.encoding.head_dim
        layout = BlockLayout(self.ckks_a, head_dim, self._decoys)
        self.gallery = GalleryIndex(layout, PreselectServer(self.ckks_a, layout, self.rng))
        self._plain: list[npt.NDArray[np.int64]] = []
        uploads, heads = [], {}
        for tid, vec in enumerate(enrolled.vectors):
            values = self._quantised(vec)
            self._plain.append(np.asarray(values, dtype=np.int64))
            uploads.append(encrypt_template(values, self.config.template, self.key, self.pool))
            head = self.rotation.head(vec, head_dim)
            heads[tid] = self.ckks_a.ciphertext_to_bytes(self.ckks_a.encrypt_head(head))
        admitted = self.enroller.admit(uploads)
        self.templates: list[AdmittedTemplate] = []
        copies = []
        for tid, verdict in enumerate(admitted):
            if not isinstance(verdict, AdmittedTemplate):
                raise verdict
            self.templates.append(verdict)
            position = layout.assign(tid)
            copies.append(make_copy(verdict, tid, position, str(tid), self.pool))
        self.channel(Step.COPY_PUT, CopyPut(self.NAMESPACE, tuple(copies)).to_bytes())
        for block in layout.dirty_blocks():
            self.enroller.refresh(block, {t: heads[t] for t in block.pending.values()})

    # -- one query ------------------------------------------------------------------------------

    def _b_position(self, state: PreselectState, template_id: int) -> int:
        """Index of the template's slot in B's permuted view (auditor: knows A's permutation)."""
        block_id, slot = self.gallery.layout.locate(template_id)
        view = state.block_order.index(block_id)
        return view * state.slot_count + (slot - state.rotations[view]) % state.slot_count

    def _exact_best(self, query_vals: list[int], candidates: list[int]) -> tuple[float, int]:
        """The smallest exact-stage distance among the candidates, ``D / 4^s``, and its id.

        The exact stage computes ``D = ‖q(x) − q(y)‖²`` on integers without error (the protocol
        tests check it against plaintext), so the auditor recomputes it from the quantised
        vectors; :meth:`identify` cross-checks it with the decision the protocol returned.
        """
        q = np.asarray(query_vals, dtype=np.int64)
        values = [int(((q - self._plain[c]) ** 2).sum()) for c in candidates]
        best = int(np.argmin(values))
        return values[best] / float(1 << (2 * self.params.encoding.scale_bits)), candidates[best]

    @property
    def quantised_templates(self) -> list[npt.NDArray[np.int64]]:
        """The enrolled ``q(y)`` (auditor's canaries for the leakage scan)."""
        return list(self._plain)

    def b_masked_values(self, payload: bytes) -> list[list[int]]:
        """What B decrypts from one recorded blinded-product request (see :func:`helper_view`)."""
        return helper_view(strip(payload), self.key, self._share_b, self.config.template)

    def _recorded(self, step: str, direction: str, since: int) -> list[bytes]:
        return [m.payload for m in self.recorder.messages[since:]
                if m.step == step and m.direction == direction]

    def _served_ids(self, since: int) -> list[int]:
        """The template ids behind the candidates B served for this query (the auditor opens
        the recorded labels with both shares; A itself never learns them on a non-match)."""
        replies = self._recorded(Step.PRESELECT, "B->A", since)
        if not replies:  # a gallery of at most top_k: every template is a candidate
            return list(range(len(self.labels)))
        reply = CandidatesReply.from_bytes(replies[-1])
        out = []
        for raw in reply.labels:
            label = Ciphertext.from_bytes(self.key, raw)
            out.append(combine(self._share_a.partial_decrypt(label),
                               self._share_b.partial_decrypt(label)))
        return out

    def _b_view(self, since: int) -> FloatArray:
        """B's decrypted masked preselection scores, from the recorded request."""
        requests = self._recorded(Step.PRESELECT, "A->B", since)
        if not requests:
            return np.zeros(0)
        received = PreselectRequest.from_bytes(strip(requests[-1]))
        return np.concatenate([
            self.ckks_b.decrypt(self.ckks_b.ciphertext_from_bytes(raw, score=True))
            for raw in received.scores
        ])

    def identify(self, probe: FloatArray, true_label: str | None) -> QueryOutcome:
        """Run one identification through the pipeline and measure every view."""
        started = time.perf_counter()
        head = self.rotation.head(probe, self.params.encoding.head_dim)
        head_cts = [self.ckks_a.ciphertext_to_bytes(self.ckks_a.encrypt_query(head))]
        query_vals = self._quantised(probe)
        query = encrypt_query(query_vals, self.config.template, self.key, self.pool)
        since = len(self.recorder.messages)
        states: list[PreselectState] = []
        draw = self.gallery.preselect.request

        def request(  # the auditor keeps A's secret state (ground truth)
            query: Sequence[bytes], k: int
        ) -> tuple[PreselectRequest, PreselectState]:
            made = draw(query, k)
            states.append(made[1])
            return made

        self.gallery.preselect.request = request  # type: ignore[method-assign]
        try:
            decision = self.identifier.identify(self.gallery, query, head_cts, self.tau,
                                                _Source(self))
        finally:
            self.gallery.preselect.request = draw  # type: ignore[method-assign]
        ids = self._served_ids(since)
        exact_best, exact_id = self._exact_best(query_vals, ids) if ids else (4.0, -1)
        unit = float(1 << (2 * self.params.encoding.scale_bits))
        expected = bool(ids) and exact_best * unit <= self.tau
        products = self._recorded(STEP_BLINDED_PRODUCT, "A->B", since)
        masked = self.b_masked_values(products[-1])[0] if products else []
        mate = self.labels.index(true_label) if true_label in self.labels else None
        state = states[-1] if states else None
        return QueryOutcome(
            true_label=true_label,
            decision=decision,
            candidates=tuple(self.labels[i] for i in ids),
            exact_best=exact_best,
            exact_label=self.labels[exact_id] if ids else "",
            consistent=decision.matched == expected
            and (not expected or decision.label == self.labels[exact_id]),
            b_position=None if mate is None or state is None else self._b_position(state, mate),
            b_slots=0 if state is None else len(state.block_order) * state.slot_count,
            b_values=self._b_view(since),
            b_masked_template_values=tuple(masked),
            seconds=time.perf_counter() - started,
        )


@dataclass(frozen=True)
class _Source:
    """The harness's :class:`~pura.pipeline.TemplateSource`: its admitted templates, and
    subjects by template id (what a jointly opened label names)."""

    system: EncryptedIdentification

    @property
    def namespace(self) -> str:
        return self.system.NAMESPACE

    def candidates(self, template_ids: Sequence[int]) -> list[tuple[str, Candidate]]:
        s = self.system
        return [(s.labels[t], s.templates[t]) for t in template_ids]

    def subject_of(self, template_id: int) -> str:
        return self.system.labels[template_id]


__all__ = [
    "STEP_PRESELECT",
    "STEP_REFRESH",
    "EncryptedIdentification",
    "Message",
    "QueryOutcome",
    "Recorder",
    "helper_view",
]
