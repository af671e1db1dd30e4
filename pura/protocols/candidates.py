"""Oblivious candidates: B serves the exact stage's candidates as fresh ciphertexts.

Why (issue 11): when B answered preselection with *positions*, A mapped them through its own
slot table, so for every query, match or not, A held a ranked list of the enrolled subjects the
probe resembles (77 % top-1 on LFW non-mates). Now A never learns which stored templates are
candidates:

* **Enrolment.** A forwards each admitted template to B, *re-randomised* (so B's copy is not
  byte-equal to anything A keeps), with the template's label ``h`` (its 128-bit random id)
  encrypted under the joint key. B can decrypt neither: both are threshold-Paillier ciphertexts.
  B stores the copy at the block/slot position the template occupies in the CKKS blocks.
* **Query.** A scores the blocks as before and tells B how it permuted them (B must map its
  ranking to its copies, so the per-query rotation no longer hides slot identity from B; see
  "What B learns"). B ranks, keeps the best ``top_k`` positions that hold a copy among its
  ``view_k`` best, pads with random other copies up to ``top_k`` (the stage always has the same
  size), re-randomises every ciphertext and returns them in a random order. A runs the exact
  stage on ciphertexts it has never seen and cannot link to its store: every ciphertext it
  receives is a fresh encryption (IND-CPA of Paillier under the DCR assumption).
* **Decision.** On a match the exact stage opens the winner's index in B's (random) order; A asks
  B for its partial decryption of that candidate's label, once per query, and combines it with
  its own: A learns the matched template and nothing about the others. On no match nothing is
  opened.

What B learns: the anonymous positions of each query's candidates (not who they are). Within one
gallery epoch B can link queries that share candidates; it could already align queries' views by
cross-correlation (issue 12 measures both). A semi-honest A opens a label only on a match; B
enforces one opening per query, so a deviating A can learn at most one candidate per query.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pura.crypto.ckks import CKKSContext
from pura.crypto.paillier import (
    Ciphertext,
    KeyShare,
    PartialDecryption,
    PublicKey,
    RandomnessPool,
    combine,
)
from pura.errors import ProtocolError
from pura.gallery.copies import Copy, Position
from pura.protocols import _wire
from pura.protocols.messages import AdmittedTemplate
from pura.protocols.preselect import PreselectRequest, decrypt_view

_PUT = b"PURA-CPU"
_ERASE = b"PURA-CER"
_SYNC = b"PURA-CSY"
_SYNC_REPLY = b"PURA-CSR"
_ACK = b"PURA-ACK"
_SERVE = b"PURA-CND"
_OPEN = b"PURA-COP"
_OPEN_REPLY = b"PURA-COR"


def _positions(header: dict[str, object], name: str) -> list[Position]:
    flat = _wire.int_list(header, name)  # type: ignore[arg-type]
    if len(flat) % 2:
        raise ProtocolError(f"field {name!r} must hold (block, slot) pairs")
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def _flat(positions: Sequence[Position]) -> list[int]:
    return [v for p in positions for v in p]


@dataclass(frozen=True)
class CopyPut:
    """A → B at enrolment: copies of newly stored templates."""

    namespace: str
    copies: tuple[Copy, ...]

    def to_bytes(self) -> bytes:
        header = {"ns": self.namespace, "pos": _flat([c.position for c in self.copies]),
                  "tags": [c.tag for c in self.copies]}
        blobs = [b for c in self.copies for b in (c.template, c.label)]
        return _wire.pack(_PUT, header, blobs)

    @classmethod
    def from_bytes(cls, data: bytes) -> CopyPut:
        header, blobs = _wire.unpack(_PUT, data)
        positions = _positions(header, "pos")
        tags = _wire.field(header, "tags", list)
        if len(tags) != len(positions) or len(blobs) != 2 * len(positions):
            raise ProtocolError("copy message: positions, tags and ciphertexts disagree")
        if not all(isinstance(t, str) and 0 < len(t) <= 64 for t in tags):
            raise ProtocolError("copy tags must be short strings")
        copies = tuple(Copy(b, s, t, blobs[2 * i], blobs[2 * i + 1])
                       for i, ((b, s), t) in enumerate(zip(positions, tags, strict=True)))
        return cls(_wire.field(header, "ns", str), copies)


@dataclass(frozen=True)
class CopyErase:
    """A → B at deletion: erase these positions' copies."""

    namespace: str
    positions: tuple[Position, ...]

    def to_bytes(self) -> bytes:
        return _wire.pack(_ERASE, {"ns": self.namespace, "pos": _flat(self.positions)}, [])

    @classmethod
    def from_bytes(cls, data: bytes) -> CopyErase:
        header, _ = _wire.unpack(_ERASE, data)
        return cls(_wire.field(header, "ns", str), tuple(_positions(header, "pos")))


@dataclass(frozen=True)
class CopySync:
    """A → B at start-up: every position A holds a template at, with its tag. B drops copies A
    does not list (a deletion or a rolled-back enrolment) and reports the ones it lacks."""

    namespace: str
    entries: tuple[tuple[Position, str], ...]

    def to_bytes(self) -> bytes:
        header = {"ns": self.namespace, "pos": _flat([p for p, _ in self.entries]),
                  "tags": [t for _, t in self.entries]}
        return _wire.pack(_SYNC, header, [])

    @classmethod
    def from_bytes(cls, data: bytes) -> CopySync:
        header, _ = _wire.unpack(_SYNC, data)
        positions = _positions(header, "pos")
        tags = _wire.field(header, "tags", list)
        if len(tags) != len(positions):
            raise ProtocolError("sync message: positions and tags disagree")
        return cls(_wire.field(header, "ns", str),
                   tuple((p, str(t)) for p, t in zip(positions, tags, strict=True)))


@dataclass(frozen=True)
class CopySyncReply:
    """B → A: positions whose copy B lacks (A sends them again) and how many B dropped."""

    missing: tuple[Position, ...]
    dropped: int

    def to_bytes(self) -> bytes:
        return _wire.pack(_SYNC_REPLY, {"pos": _flat(self.missing), "dropped": self.dropped}, [])

    @classmethod
    def from_bytes(cls, data: bytes) -> CopySyncReply:
        header, _ = _wire.unpack(_SYNC_REPLY, data)
        return cls(tuple(_positions(header, "pos")), _wire.field(header, "dropped", int))


@dataclass(frozen=True)
class Ack:
    """B → A: how many items a copy message changed (B's store committed them)."""

    count: int

    def to_bytes(self) -> bytes:
        return _wire.pack(_ACK, {"n": self.count}, [])

    @classmethod
    def from_bytes(cls, data: bytes) -> Ack:
        header, _ = _wire.unpack(_ACK, data)
        return cls(_wire.field(header, "n", int))


@dataclass(frozen=True)
class CandidatesReply:
    """B → A: ``top_k`` re-randomised candidate templates and labels, in a random order."""

    request_id: bytes
    templates: tuple[bytes, ...]
    labels: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        return _wire.pack(_SERVE, {"id": self.request_id.hex(), "k": len(self.templates)},
                          [*self.templates, *self.labels])

    @classmethod
    def from_bytes(cls, data: bytes) -> CandidatesReply:
        header, blobs = _wire.unpack(_SERVE, data)
        k = _wire.field(header, "k", int)
        if k < 0 or len(blobs) != 2 * k:
            raise ProtocolError("candidate reply: templates and labels disagree")
        try:
            rid = bytes.fromhex(_wire.field(header, "id", str))
        except ValueError as exc:
            raise ProtocolError("candidate reply id is not hex") from exc
        return cls(rid, tuple(blobs[:k]), tuple(blobs[k:]))


@dataclass(frozen=True)
class LabelOpenRequest:
    """A → B after a match: open the label of candidate ``index`` (B's order) of a query."""

    request_id: bytes
    index: int

    def to_bytes(self) -> bytes:
        return _wire.pack(_OPEN, {"id": self.request_id.hex(), "i": self.index}, [])

    @classmethod
    def from_bytes(cls, data: bytes) -> LabelOpenRequest:
        header, _ = _wire.unpack(_OPEN, data)
        try:
            rid = bytes.fromhex(_wire.field(header, "id", str))
        except ValueError as exc:
            raise ProtocolError("label request id is not hex") from exc
        return cls(rid, _wire.field(header, "i", int))


@dataclass(frozen=True)
class LabelOpenReply:
    """B → A: B's partial decryption of that label (A combines it with its own)."""

    label: bytes
    partial: bytes

    def to_bytes(self) -> bytes:
        return _wire.pack(_OPEN_REPLY, {}, [self.label, self.partial])

    @classmethod
    def from_bytes(cls, data: bytes) -> LabelOpenReply:
        _, blobs = _wire.unpack(_OPEN_REPLY, data)
        if len(blobs) != 2:
            raise ProtocolError("label reply needs the label and one partial decryption")
        return cls(blobs[0], blobs[1])


# --- A's side ----------------------------------------------------------------------------


def make_copy(
    template: AdmittedTemplate, label: int, position: Position, tag: str, pool: RandomnessPool
) -> Copy:
    """A, at enrolment: B's copy of ``template``, every ciphertext re-randomised (B's copy is
    unlinkable to A's stored bytes), with ``[label]`` under the joint key."""
    fresh = AdmittedTemplate(tuple(c.rerandomize(pool) for c in template.packed),
                             template.norm.rerandomize(pool))
    key = template.norm.key
    return Copy(position[0], position[1], tag, fresh.to_bytes(),
                key.encrypt(label, pool).to_bytes())


def parse_candidates(
    key: PublicKey, reply: CandidatesReply, request_id: bytes, top_k: int
) -> list[AdmittedTemplate]:
    """A: the served candidates, checked to answer this request with the agreed size."""
    if reply.request_id != request_id:
        raise ProtocolError("candidate reply answers another request")
    if len(reply.templates) != top_k or len(reply.labels) != top_k:
        raise ProtocolError(f"B served {len(reply.templates)} candidates and "
                            f"{len(reply.labels)} labels, expected {top_k} of each")
    return [AdmittedTemplate.from_bytes(key, t) for t in reply.templates]


def finish_label(
    share_a: KeyShare, reply: LabelOpenReply, served: bytes,
    mine: PartialDecryption | None = None,
) -> int:
    """A: combine B's partial decryption of the winner's label with A's own.

    ``served``: the label as B served it to this query; B's reply must be for exactly that
    ciphertext (B cannot answer for another label). ``mine``: A's partial decryption of it,
    computed while B worked (:meth:`pura.pipeline.Identifier`'s opening overlaps the two)."""
    key = share_a.public_key
    if reply.label != served:
        raise ProtocolError("B opened a label other than the one it served for the winner")
    theirs = PartialDecryption.from_raw(key, 3 - share_a.index, reply.partial)
    if mine is None:
        mine = share_a.partial_decrypt(Ciphertext.from_bytes(key, served))
    return combine(mine, theirs)


# --- B's side ----------------------------------------------------------------------------


def check_copy(key: PublicKey, copy: Copy) -> None:
    """B, before storing: the template and label parse as ciphertexts under the joint key
    (a malformed copy is refused here, not when a query would serve it)."""
    AdmittedTemplate.from_bytes(key, copy.template)
    Ciphertext.from_bytes(key, copy.label)


def rank_positions(ctx: CKKSContext, request: PreselectRequest, view_k: int) -> list[Position]:
    """B: its ``view_k`` best ``(block, slot)`` positions, best first (B's own ``view_k``)."""
    if len(request.blocks) != len(request.scores) or len(request.rotations) != len(request.scores):
        raise ProtocolError("candidate request must say how each view block was permuted")
    values = decrypt_view(ctx, request)
    slots = ctx.slot_count
    k = min(view_k, len(values))
    top = np.argpartition(-values, k - 1)[:k]
    best = top[np.argsort(-values[top], kind="stable")]
    out: list[Position] = []
    for pos in best:
        view, slot = divmod(int(pos), slots)
        out.append((request.blocks[view], (slot + request.rotations[view]) % slots))
    return out


def choose(
    ranked: Sequence[Position], held: Mapping[Position, object], top_k: int, rng: random.Random
) -> list[Position]:
    """B: the best ``top_k`` ranked positions that hold a copy, padded with random other copies
    so that every query's exact stage has the same size (timing, threat T16)."""
    chosen: list[Position] = []
    for p in ranked:
        if p in held and p not in chosen:
            chosen.append(p)
            if len(chosen) == top_k:
                return chosen
    taken = set(chosen)
    others = sorted(p for p in held if p not in taken)
    return [*chosen, *rng.sample(others, min(len(others), top_k - len(chosen)))]


def serve(
    request_id: bytes,
    copies: Sequence[Copy],
    key: PublicKey,
    pool: RandomnessPool,
    rng: random.Random,
) -> tuple[CandidatesReply, list[bytes]]:
    """B: the copies re-randomised and shuffled; also the labels as sent (kept for one
    :class:`LabelOpenRequest`)."""
    order = list(copies)
    rng.shuffle(order)
    templates, labels = [], []
    for c in order:
        t = AdmittedTemplate.from_bytes(key, c.template)
        fresh = AdmittedTemplate(tuple(x.rerandomize(pool) for x in t.packed),
                                 t.norm.rerandomize(pool))
        templates.append(fresh.to_bytes())
        labels.append(Ciphertext.from_bytes(key, c.label).rerandomize(pool).to_bytes())
    return CandidatesReply(request_id, tuple(templates), tuple(labels)), labels


def open_label(share_b: KeyShare, label: bytes) -> LabelOpenReply:
    """B: its partial decryption of one label it served (never of anything else)."""
    ct = Ciphertext.from_bytes(share_b.public_key, label)
    return LabelOpenReply(label, share_b.partial_decrypt(ct).raw_bytes())


__all__ = [
    "Ack",
    "CandidatesReply",
    "Copy",
    "CopyErase",
    "CopyPut",
    "CopySync",
    "CopySyncReply",
    "LabelOpenReply",
    "LabelOpenRequest",
    "Position",
    "check_copy",
    "choose",
    "finish_label",
    "make_copy",
    "open_label",
    "parse_candidates",
    "rank_positions",
    "serve",
]
