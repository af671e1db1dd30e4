"""Pura end to end, in one process, stage by stage (both servers and the client).

The path is the product's own pipeline (:class:`pura.pipeline.Identifier`, the object
:class:`pura.service.nodes.NodeA` runs), minus gRPC and SQLite (the load benchmark measures those
against real servers):

1. **client encrypt**: CKKS broadcast head (``head_dim`` ciphertexts) + Paillier per-dimension
   query (``dim + 1`` ciphertexts; the client's randomness pool is filled offline);
2. **preselection at A**: score every block (lazy relinearisation, ``ScoringPool`` over the
   machine's cores), affine mask, permutation;
3. **preselection at B**: decrypt, rank, return ``view_k`` positions; A un-permutes to template
   ids and keeps ``top_k``;
4. **query admission** (``ServerA.check_query``: the servers' norm and unit-vector check, two
   rounds with B), on a thread *concurrently with* stages 2–3, as ``NodeA.identify`` runs it;
5. **exact stage**: blinded packed distances, secure argmin tournament and secure threshold
   comparison on the ``top_k`` candidates (``ServerA.match`` with B over a loopback channel that
   still serialises every message).

What is *not* on the timed path, as in the service: enrolment (the CKKS blocks are built
directly in the dimension-major layout a block refresh produces; Paillier templates are
encrypted on first use and A's offline per-template precomputation, ``ServerA.prepare``, runs
before timing, like the service's background worker), and the randomness pool refills.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.baseline_paillier import ThresholdKeys
from pura.crypto.ckks import CKKSContext
from pura.crypto.encoding import PCARotation, quantize
from pura.crypto.paillier import RandomnessPool
from pura.crypto.params import ParameterSet
from pura.crypto.seal import SealPrivateKey
from pura.engine.local import SERIAL, LocalEngine
from pura.errors import ProtocolError
from pura.gallery.copies import Copy, Position
from pura.gallery.packing import BlockLayout, HeadBlock, encrypt_block
from pura.pipeline import GalleryIndex, HelperChannel, Identifier, MemoryRecorder, SearchConfig
from pura.pipeline.helper import CandidateServer, helper_steps, loopback
from pura.protocols.candidates import make_copy
from pura.protocols.enroll import encrypt_query, encrypt_template
from pura.protocols.identify import Candidate, ExactConfig, ServerA, ServerB
from pura.protocols.messages import AdmittedTemplate, PaillierQuery, SealedQuery
from pura.protocols.preselect import PreselectServer, ScoringPool
from pura.protocols.sealed_query import seal_query
from pura.protocols.secure_distance import PreparedTemplate
from pura.protocols.steps import Step

FloatArray = npt.NDArray[np.float64]

#: The service's own defaults (one place: pura.pipeline.config).
SEARCH = SearchConfig()


@dataclass
class StageTimes:
    """Seconds per stage for one query, plus bytes and the answer.

    ``admit_query`` runs concurrently with ``preselect_a`` + ``preselect_b`` (as in
    ``NodeA.identify``), so the stages do not add up: ``server`` is the measured wall time from
    the query's arrival at A to the answer, and ``total = client_encrypt + server``.
    """

    client_encrypt: float = 0.0
    preselect_a: float = 0.0
    preselect_b: float = 0.0
    admit_query: float = 0.0
    exact: float = 0.0
    server: float = 0.0
    answer: int = -1
    query_bytes: int = 0
    a_b_bytes: int = 0
    a_b_rounds: int = 0
    #: CPU seconds of A and B together from arrival to answer (this process's threads and the
    #: engine's worker processes; the lazily made offline state subtracted). Unlike wall time
    #: it does not grow with other jobs on a shared machine.
    cpu_server: float = 0.0
    #: CPU seconds of the exact stage alone (the same accounting).
    cpu_exact: float = 0.0

    @property
    def total(self) -> float:
        return self.client_encrypt + self.server


@dataclass
class PuraSystem:
    """Keys and parties of one run (A with share 1 + public CKKS, B with share 2 + secret)."""

    params: ParameterSet
    keys: ThresholdKeys
    ckks_secret: CKKSContext
    pca: PCARotation
    rng: random.Random
    engine: LocalEngine = SERIAL
    #: B's sealing key (as in a key set made by ``pura keygen``); probes are sealed to it
    #: unless ``sealed_queries`` is off (the packed-ciphertext query, for comparisons).
    seal: SealPrivateKey = field(default_factory=SealPrivateKey.generate, repr=False)
    sealed_queries: bool = True
    ckks_public: CKKSContext = field(init=False)
    exact: ExactConfig = field(init=False)
    server_a: ServerA = field(init=False)
    server_b: ServerB = field(init=False)
    wire: HelperChannel = field(init=False)
    identifier: Identifier = field(init=False)
    client_pool: RandomnessPool = field(init=False)
    copies: _LazyCopies = field(init=False)
    candidate_server: CandidateServer = field(init=False)

    def __post_init__(self) -> None:
        pk = self.keys.public_key
        self.ckks_public = self.ckks_secret.public()
        enc = self.params.encoding
        self.exact = ExactConfig.for_key(pk, enc.dim, enc.scale_bits)
        self.server_b = ServerB(self.keys.share_b, self.exact,
                                RandomnessPool(pk, rng=random.Random(self.rng.getrandbits(64))),
                                engine=self.engine, seal=self.seal)
        # B serves candidates from its copies of the current gallery (set by PuraGallery).
        self.copies = _LazyCopies()
        self.candidate_server = CandidateServer(self.server_b, self.ckks_secret, self.copies,
                                                SEARCH, random.Random(self.rng.getrandbits(64)))
        # One wire for every A→B step, as in the service (byte counts are complete).
        self.wire = HelperChannel(loopback(helper_steps(self.server_b, self.ckks_secret,
                                                        self.candidate_server)))
        a_rng = random.Random(self.rng.getrandbits(64))
        self.server_a = ServerA(self.keys.share_a, self.exact, self.wire.paillier(pk),
                                engine=self.engine, rng=a_rng)
        self.identifier = Identifier(self.server_a, self.ckks_public, enc.head_dim, self.wire,
                                     SEARCH, a_rng)
        self.client_pool = RandomnessPool(pk, rng=random.Random(self.rng.getrandbits(64)))


class PuraGallery:
    """One gallery of ``N`` unit vectors as A holds it, plus the plaintext for checking."""

    def __init__(
        self, system: PuraSystem, vectors: FloatArray, *, scoring_workers: int = 2
    ) -> None:
        self.system = system
        self.vectors = vectors
        enc = system.params.encoding
        self.rotated = system.pca.apply(vectors)
        self.quantised = quantize(self.rotated, enc.scale_bits)
        ctx = system.ckks_public
        slots = ctx.slot_count
        decoy_rng = random.Random(system.rng.getrandbits(64))
        blocks = []
        for b in range(math.ceil(len(vectors) / slots)):
            heads = self.rotated[b * slots:(b + 1) * slots, :enc.head_dim]
            live = {s: b * slots + s for s in range(len(heads))}
            if len(heads) < slots:  # unused slots hold decoys, never zeros (packing.py)
                pad = system.pca.sample_decoy_heads(slots - len(heads), enc.head_dim, decoy_rng)
                heads = np.vstack([heads, pad])
            block = encrypt_block(ctx, b, heads)
            blocks.append(HeadBlock(b, slots, enc.head_dim, block.ciphertexts, live=live))
        self.layout = BlockLayout(
            ctx, enc.head_dim,
            lambda n: system.pca.sample_decoy_heads(n, enc.head_dim, decoy_rng), blocks,
        )
        self.pool = ScoringPool(ctx, workers=scoring_workers) if len(blocks) > 1 else None
        self.preselect = PreselectServer(ctx, self.layout,
                                         rng=random.Random(system.rng.getrandbits(64)),
                                         pool=self.pool)
        self.index = GalleryIndex(self.layout, self.preselect)
        #: (block, slot) -> gallery row, for B's copies.
        self.position_ids: dict[Position, int] = {
            (b.block_id, slot): tid for b in blocks for slot, tid in b.live.items()}
        system.copies.attach(self)
        self._prepared: dict[int, PreparedTemplate] = {}
        self.n_blocks = len(blocks)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def template(self, tid: int) -> PreparedTemplate:
        """Encrypt (client side) and precompute (A, offline) a stored template on first use."""
        if tid not in self._prepared:
            s = self.system
            ints = [int(v) for v in self.quantised[tid]]
            t = encrypt_template(ints, s.exact.template, s.keys.public_key, s.client_pool)
            self._prepared[tid] = s.server_a.prepare([t])[0]
        return self._prepared[tid]

    def bytes_per_template(self) -> dict[str, float]:
        """Storage at A: the admitted Paillier template (packed ciphertexts + the servers'
        norm, as the store keeps it) + the template's share of a CKKS block; at B
        (``b_copy``): its copy of the admitted template with the encrypted label and tag."""
        s = self.system
        pk = s.keys.public_key
        upload = encrypt_template([0] * s.params.encoding.dim, s.exact.template, pk,
                                  s.client_pool)
        stored = len(AdmittedTemplate(upload.packed, pk.encrypt(0, s.client_pool)).to_bytes())
        block = self.layout.blocks[0]
        ckks_per_slot = sum(len(c) for c in block.ciphertexts) / block.slot_count
        # B's candidate copy (issue 11): the re-randomised admitted template, [label], tag.
        label = pk.encrypt(0, s.client_pool).to_bytes()
        b_copy = float(stored + len(label) + 32)
        return {"paillier": float(stored), "paillier_upload": float(len(upload.to_bytes())),
                "ckks_head_share": ckks_per_slot, "total": stored + ckks_per_slot,
                "b_copy": b_copy}


def encrypt_probe(
    system: PuraSystem, probe: FloatArray
) -> tuple[list[bytes], PaillierQuery | SealedQuery]:
    """Client: one periodic CKKS query ciphertext + the exact stage's query of one unit vector
    (sealed to B, or packed ciphertexts with ``system.sealed_queries`` off)."""
    enc = system.params.encoding
    rotated = system.pca.apply(probe[None, :])[0]
    head = system.ckks_public.encrypt_query(rotated[: enc.head_dim])
    head_bytes = [system.ckks_public.ciphertext_to_bytes(head)]
    ints = [int(v) for v in quantize(rotated[None, :], enc.scale_bits)[0]]
    pk, layout = system.keys.public_key, system.exact.template
    if system.sealed_queries:
        return head_bytes, seal_query(ints, layout, pk, system.seal.public, system.client_pool.rng)
    return head_bytes, encrypt_query(ints, layout, pk, system.client_pool)


def cpu_seconds(engine: LocalEngine) -> float:
    """User + system CPU seconds of this process (every thread) and of ``engine``'s live
    worker processes (read from ``/proc``; 0 for them where it is not available)."""
    own = os.times()
    total = own.user + own.system
    pool = getattr(engine, "_pool", None)
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in getattr(pool, "_processes", None) or {}:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


class _LazyCopies:
    """B's copies of the bench gallery, made on first use (the service's B receives one per
    enrolment, which is not query time). Making one encrypts and admits the template (with B,
    through the wire), so its seconds and bytes are tallied here and subtracted as offline."""

    NAMESPACE = "bench"

    def __init__(self) -> None:
        self.gallery: PuraGallery | None = None
        self._made: dict[Position, Copy] = {}
        self.offline = 0.0
        self.offline_cpu = 0.0
        self.offline_bytes = 0
        self.offline_rounds = 0

    def attach(self, gallery: PuraGallery) -> None:
        self.gallery, self._made = gallery, {}

    def copies(self, namespace: str) -> Mapping[Position, Copy]:
        return _CopyView(self)

    def make(self, position: Position) -> Copy:
        copy = self._made.get(position)
        if copy is None:
            gallery = self.gallery
            assert gallery is not None
            s = gallery.system
            started, before = time.perf_counter(), s.wire.totals()
            cpu = cpu_seconds(s.engine)
            tid = gallery.position_ids[position]
            copy = make_copy(gallery.template(tid).template, tid, position, str(tid),
                             s.client_pool)
            after = s.wire.totals()
            self.offline += time.perf_counter() - started
            self.offline_cpu += cpu_seconds(s.engine) - cpu
            self.offline_bytes += (after.bytes_to_b - before.bytes_to_b
                                   + after.bytes_from_b - before.bytes_from_b)
            self.offline_rounds += after.rounds - before.rounds
            self._made[position] = copy
        return copy

    def put(self, namespace: str, copies: Sequence[Copy]) -> int:
        raise ProtocolError("the bench gallery is built directly, not enrolled")

    def erase(self, namespace: str, positions: Sequence[Position]) -> int:
        raise ProtocolError("the bench gallery is built directly, not enrolled")

    def sync(
        self, namespace: str, entries: Sequence[tuple[Position, str]]
    ) -> tuple[list[Position], int]:
        raise ProtocolError("the bench gallery is built directly, not enrolled")


class _CopyView(Mapping[Position, Copy]):
    """Every live position of the bench gallery; a copy is made when B reads it."""

    def __init__(self, owner: _LazyCopies) -> None:
        self._owner = owner
        assert owner.gallery is not None
        self._ids = owner.gallery.position_ids

    def __getitem__(self, position: Position) -> Copy:
        if position not in self._ids:
            raise KeyError(position)
        return self._owner.make(position)

    def __contains__(self, position: object) -> bool:
        return position in self._ids

    def __iter__(self) -> Iterator[Position]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


@dataclass
class _PreparedSource:
    """The bench's stand-in for A's store: templates encrypted and prepared on first use (the
    service prepares every stored template in the background, so this time is not query time
    and is subtracted)."""

    gallery: PuraGallery
    offline: float = 0.0
    offline_cpu: float = 0.0

    def candidates(self, template_ids: Sequence[int]) -> list[tuple[str, Candidate]]:
        started, cpu = time.perf_counter(), cpu_seconds(self.gallery.system.engine)
        out: list[tuple[str, Candidate]] = [
            (str(t), self.gallery.template(t)) for t in template_ids
        ]
        self.offline += time.perf_counter() - started
        self.offline_cpu += cpu_seconds(self.gallery.system.engine) - cpu
        return out

    @property
    def namespace(self) -> str:
        return _LazyCopies.NAMESPACE

    def subject_of(self, template_id: int) -> str:
        return str(template_id)


def identify(gallery: PuraGallery, probe: FloatArray, tau: int) -> StageTimes:
    """One identification through the product's pipeline (:class:`pura.pipeline.Identifier`,
    as ``NodeA.identify`` runs it); returns stage times and the gallery row (-1).

    A starts the query's admission (two rounds, mostly B's work) on a thread and runs
    preselection meanwhile; with a multi-process engine B's decryptions run in worker
    processes, so the overlap is real even though A and B share this process.
    """
    s = gallery.system
    times = StageTimes()
    (head, query), times.client_encrypt = _timed(lambda: encrypt_probe(s, probe))
    times.query_bytes = sum(len(h) for h in head) + len(query.to_bytes())
    before = s.wire.totals()
    made, made_bytes, made_rounds = (s.copies.offline, s.copies.offline_bytes,
                                     s.copies.offline_rounds)
    made_cpu = s.copies.offline_cpu
    recorder = MemoryRecorder()
    s.wire.recorder = recorder
    source = _PreparedSource(gallery)
    exact_cpu = _ExactCpu(s)
    arrival, arrival_cpu = time.perf_counter(), cpu_seconds(s.engine)
    try:
        with exact_cpu:
            result = s.identifier.identify(gallery.index, query, head, tau, source)
    finally:
        s.wire.recorder = None
    copies_offline = s.copies.offline - made
    times.server = time.perf_counter() - arrival - source.offline - copies_offline
    times.cpu_server = (cpu_seconds(s.engine) - arrival_cpu - source.offline_cpu
                        - (s.copies.offline_cpu - made_cpu))
    times.cpu_exact = exact_cpu.seconds
    stages = s.identifier.last_stages
    b_wall = sum(e.seconds for e in recorder.exchanges if e.step == Step.PRESELECT)
    times.preselect_b = b_wall - copies_offline
    times.preselect_a = stages["preselect"] - b_wall
    times.admit_query = stages["admit_query"]
    times.exact = stages["exact"] + stages.get("open", 0.0)
    after = s.wire.totals()
    times.a_b_rounds = after.rounds - before.rounds - (s.copies.offline_rounds - made_rounds)
    times.a_b_bytes = (after.bytes_to_b - before.bytes_to_b
                       + after.bytes_from_b - before.bytes_from_b
                       - (s.copies.offline_bytes - made_bytes))
    times.answer = int(result.label) if result.matched and result.label is not None else -1
    s.server_a.refill(SEARCH.top_k)  # offline between queries, as the service does
    s.server_b.refill(SEARCH.top_k)
    return times


class _ExactCpu:
    """CPU seconds spent in the exact stage (``ServerA.match`` and the winner's label opening;
    their rounds with B run in this process through the loopback wire), measured by wrapping
    the two bound methods for the duration of one identification."""

    def __init__(self, system: PuraSystem) -> None:
        self.system = system
        self.seconds = 0.0
        self._wrapped = [(system.server_a, "match"), (system.identifier, "_open")]

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = cpu_seconds(self.system.engine)
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += cpu_seconds(self.system.engine) - started

        return timed

    def __enter__(self) -> _ExactCpu:
        for owner, name in self._wrapped:
            setattr(owner, name, self._wrap(getattr(owner, name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name in self._wrapped:
            delattr(owner, name)


def warm_candidates(gallery: PuraGallery, probe: FloatArray) -> None:
    """Offline precomputation for the templates a probe's preselection selects (untimed).

    B's padding draws fresh random extras per query, so copies may still be made at query
    time; that work is counted as offline (:class:`_LazyCopies`)."""
    s = gallery.system
    head, _ = encrypt_probe(s, probe)
    s.identifier.candidates(gallery.index, head, _PreparedSource(gallery))
    s.server_a.refill(SEARCH.top_k)
    s.server_b.refill(SEARCH.top_k)
    s.client_pool.refill(s.params.encoding.dim + 1)
