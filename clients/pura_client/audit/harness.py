"""An in-process Pura deployment that records everything A and B exchange (evaluation only).

The parity and leakage audits need the *real* encrypted identification: real keys (threshold
Paillier + CKKS), enrolment through the B-assisted block refresh, CKKS preselection with A's mask
and permutation, then the exact stage (:meth:`ServerA.match`: blinded squared distances, secure
argmin, secure threshold). This harness wires those protocol modules together in one process and
puts a recorder on every A↔B message, so an auditor can inspect B's exact view.

What the harness knows that no single party does — both Paillier shares, the CKKS secret key and
A's permutation state — it uses only to *measure* (e.g. where the true match sits in B's view, or
the exact distances the encrypted pipeline computed). This is the auditor's evaluation-gallery
privilege described in security.md (T4: "any score view restricted to auditors on evaluation
galleries"); it never feeds back into the protocol.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pura.crypto.ckks import CKKSContext
from pura.crypto.encoding import PCARotation, l2_normalize, quantize
from pura.crypto.paillier import (
    KeyShare,
    PublicKey,
    RandomnessPool,
    combine,
    generate_keypair,
    partial_decrypt_batch,
)
from pura.crypto.params import ParameterSet
from pura.gallery.packing import BlockLayout, HeadBlock
from pura.pipeline.config import SearchConfig
from pura.protocols.enroll import TemplateLayout, encrypt_query, encrypt_template
from pura.protocols.identify import (
    STEP_BLINDED_PRODUCT,
    BytesChannel,
    ExactConfig,
    MatchResult,
    ServerA,
    ServerB,
    threshold_units,
)
from pura.protocols.messages import BlindedProductRequest, PaillierTemplate
from pura.protocols.preselect import (
    PreselectRequest,
    PreselectResponse,
    PreselectServer,
    PreselectState,
    answer_preselect,
)
from pura.protocols.refresh import (
    RefreshRequest,
    RefreshResponse,
    answer_refresh,
    finish_refresh,
    prepare_refresh,
)
from pura.protocols.secure_distance import assemble_vectors, slot_counts
from pura.protocols.steps import Step
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
class Recorder:
    """Append-only log of every message, in order."""

    messages: list[Message] = field(default_factory=list)

    def add(self, step: str, direction: str, payload: bytes) -> None:
        self.messages.append(Message(step, direction, payload))

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
    """Keys, an enrolled gallery, and both servers in one process."""

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
        self._enrol(enrolled)
        self.tau = threshold_units(threshold_sq_distance, params.encoding.scale_bits)
        self.server_b = ServerB(self._share_b, self.config)
        channel = BytesChannel.loopback(self.server_b)
        channel.call = self.recorder.wrap(channel.call)
        self.server_a = ServerA(self._share_a, self.config, channel, rng=self.rng)
        self.preselect = PreselectServer(self.ckks_a, self.layout, self.rng)

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
        """Client encryption of every template, slot assignment, one B-assisted refresh."""
        head_dim = self.params.encoding.head_dim
        self.layout = BlockLayout(self.ckks_a, head_dim, self._decoys)
        self.templates: list[PaillierTemplate] = []
        self._plain: list[npt.NDArray[np.int64]] = []
        heads: dict[int, bytes] = {}
        for tid, vec in enumerate(enrolled.vectors):
            values = self._quantised(vec)
            self._plain.append(np.asarray(values, dtype=np.int64))
            self.templates.append(
                encrypt_template(values, self.config.template, self.key, self.pool)
            )
            head = self.rotation.head(vec, head_dim)
            heads[tid] = self.ckks_a.ciphertext_to_bytes(self.ckks_a.encrypt_head(head))
            self.layout.assign(tid)
        for block in self.layout.dirty_blocks():
            pending = {t: heads[t] for t in block.pending.values()}
            self._refresh(block, pending)

    def _refresh(self, block: HeadBlock, pending: dict[int, bytes]) -> None:
        """The B-assisted refresh of one block, every message recorded."""
        request, state = prepare_refresh(self.ckks_a, block, pending, self._decoys, self.rng)
        wire = request.to_bytes()
        self.recorder.add(STEP_REFRESH, "A->B", wire)
        reply = answer_refresh(self.ckks_b, RefreshRequest.from_bytes(wire)).to_bytes()
        self.recorder.add(STEP_REFRESH, "B->A", reply)
        finish_refresh(self.ckks_a, block, state, RefreshResponse.from_bytes(reply))

    # -- one query ------------------------------------------------------------------------------

    def _preselect(self, head_cts: list[bytes]) -> tuple[list[int], PreselectState, FloatArray]:
        total = len(self.layout.searchable_blocks()) * self.ckks_a.slot_count
        request, state = self.preselect.request(head_cts, min(self.view_k, total))
        wire = request.to_bytes()
        self.recorder.add(STEP_PRESELECT, "A->B", wire)
        received = PreselectRequest.from_bytes(wire)
        response = answer_preselect(self.ckks_b, received)
        reply = response.to_bytes()
        self.recorder.add(STEP_PRESELECT, "B->A", reply)
        b_view = np.concatenate(
            [
                self.ckks_b.decrypt(self.ckks_b.ciphertext_from_bytes(raw, score=True))
                for raw in received.scores
            ]
        )
        ids = PreselectServer.resolve(state, PreselectResponse.from_bytes(reply))[: self.top_k]
        return ids, state, b_view

    def _b_position(self, state: PreselectState, template_id: int) -> int:
        """Index of the template's slot in B's permuted view (auditor: knows A's permutation)."""
        block_id, slot = self.layout.locate(template_id)
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
        return helper_view(payload, self.key, self._share_b, self.config.template)

    def _last_request(self, step: str) -> bytes:
        for message in reversed(self.recorder.messages):
            if message.step == step and message.direction == "A->B":
                return message.payload
        return b""

    def identify(self, probe: FloatArray, true_label: str | None) -> QueryOutcome:
        """Run one identification end to end and record every view."""
        started = time.perf_counter()
        head = self.rotation.head(probe, self.params.encoding.head_dim)
        head_cts = [self.ckks_a.ciphertext_to_bytes(c) for c in self.ckks_a.encrypt_broadcast(head)]
        ids, state, b_view = self._preselect(head_cts)
        query_vals = self._quantised(probe)
        query = encrypt_query(query_vals, self.config.template, self.key, self.pool)
        self.server_a.refill(len(ids))
        before = len(self.recorder.messages)
        decision = self.server_a.match(
            query, [(self.labels[i], self.templates[i]) for i in ids], self.tau
        )
        exact_best, exact_id = self._exact_best(query_vals, ids) if ids else (4.0, -1)
        unit = float(1 << (2 * self.params.encoding.scale_bits))
        expected = bool(ids) and exact_best * unit <= self.tau
        payload = self._last_request(STEP_BLINDED_PRODUCT)
        masked = self.b_masked_values(payload)[0] if len(self.recorder.messages) > before else []
        mate = self.labels.index(true_label) if true_label in self.labels else None
        return QueryOutcome(
            true_label=true_label,
            decision=decision,
            candidates=tuple(self.labels[i] for i in ids),
            exact_best=exact_best,
            exact_label=self.labels[exact_id] if ids else "",
            consistent=decision.matched == expected
            and (not expected or decision.label == self.labels[exact_id]),
            b_position=None if mate is None else self._b_position(state, mate),
            b_slots=len(state.block_order) * state.slot_count,
            b_values=b_view,
            b_masked_template_values=tuple(masked),
            seconds=time.perf_counter() - started,
        )


__all__ = [
    "STEP_PRESELECT",
    "STEP_REFRESH",
    "EncryptedIdentification",
    "Message",
    "QueryOutcome",
    "Recorder",
    "helper_view",
]
