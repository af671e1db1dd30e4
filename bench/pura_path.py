"""Pura end to end, in one process, stage by stage (both servers and the client).

The path is the product's protocol code, called the way :class:`pura.service.nodes.NodeA` calls
it, minus gRPC and SQLite (the load benchmark measures those against real servers):

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
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.baseline_paillier import ThresholdKeys
from pura.crypto.ckks import CKKSContext
from pura.crypto.encoding import PCARotation, quantize
from pura.crypto.paillier import RandomnessPool
from pura.crypto.params import ParameterSet
from pura.engine.local import SERIAL, LocalEngine
from pura.gallery.packing import BlockLayout, HeadBlock, encrypt_block
from pura.protocols.enroll import encrypt_query, encrypt_template
from pura.protocols.identify import BytesChannel, ExactConfig, ServerA, ServerB
from pura.protocols.messages import AdmittedTemplate, PaillierQuery
from pura.protocols.preselect import (
    PreselectRequest,
    PreselectResponse,
    PreselectServer,
    ScoringPool,
    answer_preselect,
)
from pura.protocols.secure_distance import PreparedTemplate

FloatArray = npt.NDArray[np.float64]

#: Same defaults as the service (pura.service.nodes): candidates to the exact stage, B's view.
TOP_K = 6
VIEW_K = 256


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
    ckks_public: CKKSContext = field(init=False)
    exact: ExactConfig = field(init=False)
    server_a: ServerA = field(init=False)
    server_b: ServerB = field(init=False)
    channel: BytesChannel = field(init=False)
    client_pool: RandomnessPool = field(init=False)

    def __post_init__(self) -> None:
        pk = self.keys.public_key
        self.ckks_public = self.ckks_secret.public()
        enc = self.params.encoding
        self.exact = ExactConfig.for_key(pk, enc.dim, enc.scale_bits)
        self.server_b = ServerB(self.keys.share_b, self.exact,
                                RandomnessPool(pk, rng=random.Random(self.rng.getrandbits(64))),
                                engine=self.engine)
        self.channel = BytesChannel.loopback(self.server_b)
        self.server_a = ServerA(self.keys.share_a, self.exact, self.channel,
                                engine=self.engine, rng=random.Random(self.rng.getrandbits(64)))
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
        norm, as the store keeps it) + the template's share of a CKKS block."""
        s = self.system
        pk = s.keys.public_key
        upload = encrypt_template([0] * s.params.encoding.dim, s.exact.template, pk,
                                  s.client_pool)
        stored = len(AdmittedTemplate(upload.packed, pk.encrypt(0, s.client_pool)).to_bytes())
        block = self.layout.blocks[0]
        ckks_per_slot = sum(len(c) for c in block.ciphertexts) / block.slot_count
        return {"paillier": float(stored), "paillier_upload": float(len(upload.to_bytes())),
                "ckks_head_share": ckks_per_slot, "total": stored + ckks_per_slot}


def encrypt_probe(system: PuraSystem, probe: FloatArray) -> tuple[list[bytes], PaillierQuery]:
    """Client: broadcast CKKS head + per-dimension Paillier query of one unit vector."""
    enc = system.params.encoding
    rotated = system.pca.apply(probe[None, :])[0]
    head = system.ckks_public.encrypt_broadcast(rotated[: enc.head_dim])
    head_bytes = [system.ckks_public.ciphertext_to_bytes(c) for c in head]
    ints = [int(v) for v in quantize(rotated[None, :], enc.scale_bits)[0]]
    query = encrypt_query(ints, system.exact.template, system.keys.public_key, system.client_pool)
    return head_bytes, query


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def identify(gallery: PuraGallery, probe: FloatArray, tau: int) -> StageTimes:
    """One identification through every stage; returns stage times and the gallery row (-1).

    As in ``NodeA.identify``, A starts the query's admission (two rounds, mostly B's work) on
    a thread and runs preselection meanwhile; with a multi-process engine B's decryptions run
    in worker processes, so the overlap is real even though A and B share this process.
    """
    s = gallery.system
    times = StageTimes()
    (head, query), times.client_encrypt = _timed(lambda: encrypt_probe(s, probe))
    times.query_bytes = sum(len(h) for h in head) + len(query.to_bytes())
    total_slots = gallery.n_blocks * s.ckks_public.slot_count
    rounds, sent, got = s.channel.stats.rounds, s.channel.stats.bytes_to_b, \
        s.channel.stats.bytes_from_b
    arrival = time.perf_counter()
    with ThreadPoolExecutor(1) as admit:
        checked = admit.submit(_timed, lambda: s.server_a.check_query(query))
        (request, state), times.preselect_a = _timed(
            lambda: gallery.preselect.request(head, min(VIEW_K, total_slots)))
        wire = request.to_bytes()
        response, times.preselect_b = _timed(
            lambda: answer_preselect(s.ckks_secret, PreselectRequest.from_bytes(wire)).to_bytes())
        chosen = PreselectServer.resolve(state, PreselectResponse.from_bytes(response))[:TOP_K]
        chosen = _pad(gallery, chosen)
        # The service prepares every stored template in the background (OfflineWork); here a
        # template is encrypted and prepared on first use, which is not query time.
        candidates, offline = _timed(lambda: [(str(t), gallery.template(t)) for t in chosen])
        query_checked, times.admit_query = checked.result()
    result, times.exact = _timed(lambda: s.server_a.match(query_checked, candidates, tau))
    times.server = time.perf_counter() - arrival - offline
    times.a_b_rounds = s.channel.stats.rounds - rounds + 1
    times.a_b_bytes = (s.channel.stats.bytes_to_b - sent + s.channel.stats.bytes_from_b - got
                       + len(wire) + len(response))
    times.answer = int(result.label) if result.matched and result.label is not None else -1
    s.server_a.refill(TOP_K)  # offline between queries, as the service does (both servers)
    s.server_b.refill(TOP_K)
    return times


def _pad(gallery: PuraGallery, chosen: list[int]) -> list[int]:
    """Fill up to ``TOP_K`` with random other templates, as the service does (``NodeA._pad``):
    a short exact stage would answer faster and tell an observer the probe resembled nobody."""
    if len(chosen) >= TOP_K:
        return chosen
    taken = set(chosen)
    others = [t for t in range(len(gallery.vectors)) if t not in taken]
    # seeded by the preselection result, so warm_candidates prepares the same extras offline
    rng = random.Random(",".join(map(str, chosen)))
    extra = rng.sample(others, min(len(others), TOP_K - len(chosen)))
    return [*chosen, *extra]


def warm_candidates(gallery: PuraGallery, probe: FloatArray) -> None:
    """Offline precomputation for the templates a probe's preselection selects (untimed)."""
    s = gallery.system
    head, _ = encrypt_probe(s, probe)
    total_slots = gallery.n_blocks * s.ckks_public.slot_count
    request, state = gallery.preselect.request(head, min(VIEW_K, total_slots))
    response = answer_preselect(s.ckks_secret, request)
    for t in _pad(gallery, PreselectServer.resolve(state, response)[:TOP_K]):
        gallery.template(t)
    s.server_a.refill(TOP_K)
    s.server_b.refill(TOP_K)
    s.client_pool.refill(s.params.encoding.dim + 1)
