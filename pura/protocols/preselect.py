"""CKKS preselection (identification step 1): k candidate templates out of the whole gallery.

A (:class:`PreselectServer`) expands the client's one query ciphertext into ``m`` rows (``m − 1``
rotations, :func:`query_rows`) and scores every searchable block with them
(``S_b = Σ_i Q_i ⊙ G_{b,i}``, one relinearisation + one rescale per block), then per query draws

* an affine mask ``a·S + c`` (integer ``a > 0`` at scale 1, real offset ``c``), one for all
  blocks so that B's ranking is the true ranking;
* a permutation: a random order of the blocks and a random cyclic rotation of every block.

B (:func:`answer_preselect`) decrypts, ranks, and returns the top-k *positions in its view*;
A (:meth:`PreselectServer.resolve`) maps them back to template ids, dropping decoy slots.

What B learns (see docs/security.md): per query a list of masked scores in a permuted order.
The mask hides the score scale and level; order and ratios of score differences remain (they
must: B ranks). The cyclic rotation keeps the *cyclic neighbourhood* of slots inside a block,
so B could align two queries' views of the same block (e.g. via decoy score patterns) and link
queries that hit the same slot; it never learns which subject a slot holds. The decrypted CKKS
values never leave B: only k positions do (Li–Micciancio key-recovery needs decryptions).
"""

from __future__ import annotations

import contextlib
import random
import secrets
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

import pura.errors as errors
from pura.crypto.ckks import CKKSCiphertext, CKKSContext, check_head_dim
from pura.errors import (
    ConfigError,
    DimensionError,
    HelperRefusedError,
    InvalidCiphertextError,
    ProtocolError,
    PuraError,
)
from pura.gallery.packing import BlockLayout, HeadBlock, TemplateId

from . import _wire

_REQ_MAGIC = b"PURA-PSQ"
_RESP_MAGIC = b"PURA-PSP"
_ID_BYTES = 16


@dataclass(frozen=True)
class PreselectRequest:
    """A → B: masked, permuted block scores (score-level ciphertexts) and k.

    For oblivious candidates (:mod:`pura.protocols.candidates`) A also names the gallery
    (``namespace``), the block behind each view block and its rotation: B maps its ranking to
    the copies it holds. ``top_k`` is the exact stage's size."""

    request_id: bytes
    key_id: bytes
    k: int
    scores: tuple[bytes, ...]
    namespace: str = ""
    blocks: tuple[int, ...] = ()
    rotations: tuple[int, ...] = ()
    top_k: int = 0

    def __repr__(self) -> str:
        rid = self.request_id.hex()[:8]
        return f"PreselectRequest(id={rid}, k={self.k}, blocks={len(self.scores)})"

    def to_bytes(self) -> bytes:
        header = {"id": self.request_id.hex(), "key": self.key_id.hex(), "k": self.k,
                  "ns": self.namespace, "blocks": list(self.blocks),
                  "rot": list(self.rotations), "top_k": self.top_k}
        return _wire.pack(_REQ_MAGIC, header, list(self.scores))

    @classmethod
    def from_bytes(cls, data: bytes) -> PreselectRequest:
        header, blobs = _wire.unpack(_REQ_MAGIC, data)
        return cls(
            request_id=_wire.hex_field(header, "id"),
            key_id=_wire.hex_field(header, "key"),
            k=_wire.field(header, "k", int),
            scores=tuple(blobs),
            namespace=str(header.get("ns", "")),
            blocks=tuple(_wire.int_list(header, "blocks")) if "blocks" in header else (),
            rotations=tuple(_wire.int_list(header, "rot")) if "rot" in header else (),
            top_k=int(header.get("top_k", 0)) if isinstance(header.get("top_k", 0), int) else 0,
        )


@dataclass(frozen=True)
class PreselectResponse:
    """B → A: the top-k positions in B's view (view index · slots + slot), best first."""

    request_id: bytes
    positions: tuple[int, ...]

    def __repr__(self) -> str:
        return f"PreselectResponse(id={self.request_id.hex()[:8]}, k={len(self.positions)})"

    def to_bytes(self) -> bytes:
        header = {"id": self.request_id.hex(), "positions": list(self.positions)}
        return _wire.pack(_RESP_MAGIC, header, [])

    @classmethod
    def from_bytes(cls, data: bytes) -> PreselectResponse:
        header, blobs = _wire.unpack(_RESP_MAGIC, data)
        if blobs:
            raise ProtocolError("preselect response carries unexpected blobs")
        return cls(_wire.hex_field(header, "id"), tuple(_wire.int_list(header, "positions")))


@dataclass(frozen=True)
class PreselectState:
    """A's secret per-query state: the permutation and a snapshot of the slot tables."""

    request_id: bytes
    block_order: tuple[int, ...]  # view index -> block id
    rotations: tuple[int, ...]  # view index -> left rotation applied
    slot_tables: tuple[dict[int, TemplateId], ...]  # view index -> live slots at scoring time
    slot_count: int

    def __repr__(self) -> str:
        return f"PreselectState(id={self.request_id.hex()[:8]}, blocks={len(self.block_order)})"


def parse_query(ctx: CKKSContext, query: Sequence[bytes], head_dim: int) -> CKKSCiphertext:
    """Validate the client's query head: ONE work-level ciphertext (``encrypt_query``).

    Cheap (no rotation): used wherever a query is only checked. A list of ``head_dim``
    ciphertexts is the broadcast format of clients before the diagonal layout; it is refused
    by name so that such a client knows to upgrade."""
    check_head_dim(head_dim, ctx.slot_count)
    if len(query) != 1:
        hint = (" (the broadcast format of older clients: upgrade the client)"
                if len(query) == head_dim else "")
        raise DimensionError(
            f"query head has {len(query)} ciphertexts, expected 1 periodic ciphertext{hint}")
    parsed = ctx.ciphertext_from_bytes(query[0])
    if parsed.level != "work":
        raise InvalidCiphertextError("query must be one work-level ciphertext (encrypt_query)")
    return parsed


def query_rows(ctx: CKKSContext, query: Sequence[bytes], head_dim: int) -> list[CKKSCiphertext]:
    """The ``head_dim`` rows a block is scored with: :func:`parse_query` then
    :meth:`~CKKSContext.expand_query` (``head_dim − 1`` rotations, once per query and process)."""
    return ctx.expand_query(parse_query(ctx, query, head_dim), head_dim)


def _score_one(
    ctx: CKKSContext, q: Sequence[CKKSCiphertext], block: Sequence[CKKSCiphertext],
    rotation: int, a: int, c: float,
) -> bytes:
    score = ctx.score_block(q, block)
    return ctx.ciphertext_to_bytes(ctx.affine_mask(ctx.rotate(score, rotation), a, c))


#: A block as a scorer keeps it: (namespace, block id). Block ids restart at 0 in every
#: collection, so a scorer shared by several collections keys blocks by collection name too.
BlockKey = tuple[str, int]


def shard_of(namespace: str, block_id: int, shards: int) -> int:
    """Deterministic placement of a block over ``shards`` workers (round robin by id).

    The namespace offsets the round robin so that the first blocks of several collections do
    not all land on worker 0; the empty namespace keeps ``block_id mod shards``.
    """
    return (block_id + zlib.crc32(namespace.encode())) % shards


class BlockScorer(Protocol):
    """What :class:`PreselectServer` needs from a parallel scorer of its blocks.

    Implemented by :class:`ScoringPool` (local processes) and by the views of
    :class:`pura.engine.cluster.ShardedScorer` (Ray actors). A scorer sees blocks and queries as
    ciphertexts under the PUBLIC context only, and returns exactly the bytes
    :func:`_score_one` would (CKKS evaluation is deterministic), so the protocol's bytes and
    B's view do not depend on where the products ran.
    """

    def score(
        self, query: Sequence[bytes], blocks: Sequence[HeadBlock], rotations: Sequence[int],
        a: int, c: float,
    ) -> list[bytes]:
        """Masked, rotated score ciphertexts of ``blocks``, in the same order."""
        ...

    def sync(self, blocks: Sequence[HeadBlock]) -> None:
        """Hold exactly ``blocks`` (current versions): ship changed ones, drop the others.

        Called after every block refresh so that shipping happens off the query path and a
        deleted subject's block content does not linger on a worker."""
        ...

    def close(self) -> None:
        """Release the workers this object owns (a view of a shared scorer owns none)."""
        ...


class ScoringBackend(Protocol):
    """A scorer shared by several collections: one :class:`BlockScorer` view per namespace."""

    def view(self, namespace: str) -> BlockScorer:
        """The scorer for one collection's blocks."""
        ...

    def describe(self) -> str:
        """One line for logs and status: what runs the block products."""
        ...

    def alive(self) -> tuple[int, int]:
        """(workers or actors answering now, how many there should be), for status."""
        ...

    def close(self) -> None:
        ...


def _worker_main(conn: Connection, ctx_bytes: bytes) -> None:
    """A scoring worker: holds its shard of parsed blocks across queries (spawned process)."""
    ctx = CKKSContext.from_bytes(ctx_bytes, expect_secret=False)
    blocks: dict[BlockKey, list[CKKSCiphertext]] = {}
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            return
        try:
            if msg[0] == "sync":
                _, updates, drops = msg
                _apply(ctx, blocks, updates, drops)
                conn.send(("ok", sorted(blocks)))
                continue
            _, query, jobs, a, c, updates = msg
            _apply(ctx, blocks, updates, [])
            q = query_rows(ctx, query, len(blocks[jobs[0][0]])) if jobs else []
            conn.send(("ok", [_score_one(ctx, q, blocks[key], rot, a, c) for key, rot in jobs]))
        except PuraError as exc:
            conn.send(("err", type(exc).__name__, str(exc)))


def _apply(
    ctx: CKKSContext, blocks: dict[BlockKey, list[CKKSCiphertext]],
    updates: Sequence[tuple[BlockKey, Sequence[bytes]]], drops: Sequence[BlockKey],
) -> None:
    for key, raw in updates:
        blocks[key] = [ctx.ciphertext_from_bytes(b) for b in raw]
    for key in drops:
        blocks.pop(key, None)


class ScoringPool:
    """Process-parallel block scoring with a persistent shard of parsed blocks per worker.

    TenSEAL/SEAL holds the GIL, so parallelism needs processes. Shipping a block (``m`` × 235 KB)
    to a stateless worker for every query would cost more than scoring it, so block ``b`` lives
    in worker ``b mod workers`` and is re-sent only when its version changes (a refresh), either
    by :meth:`sync` right after the refresh or, failing that, with the next query. Per query each
    worker receives the query ciphertexts and its (block, rotation) jobs. Workers get the
    *public* context only. The pool itself is the scorer of namespace ``""``; :meth:`view` gives
    other namespaces (collections) their own block ids over the same processes. One lock
    serialises calls: the workers' pipes carry one conversation at a time.
    """

    def __init__(self, ctx: CKKSContext, workers: int = 2) -> None:
        if workers < 1:
            raise ConfigError(f"workers must be ≥ 1, got {workers}")
        self.workers = workers
        self._ctx_bytes = ctx.public().to_bytes()
        self._procs: list[tuple[BaseProcess, Connection]] = []
        self._known: list[dict[BlockKey, int]] = [{} for _ in range(workers)]
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ScoringPool(workers={self.workers}, started={bool(self._procs)})"

    def describe(self) -> str:
        return f"local scoring pool, {self.workers} worker processes"

    def alive(self) -> tuple[int, int]:
        """Live worker processes (a dead one is replaced before the next query, see
        :meth:`_start`); before the first query none is started yet."""
        return sum(proc.is_alive() for proc, _ in self._procs), self.workers

    def view(self, namespace: str) -> BlockScorer:
        """This pool as the scorer of one collection's blocks (closing the view is a no-op)."""
        return _PoolView(self, namespace)

    def _start(self) -> None:
        """Start missing workers, and replace dead ones (their blocks are re-sent: a crashed
        worker fails the query it was scoring, not every later one)."""
        if not self._procs:
            self._procs = [self._spawn() for _ in range(self.workers)]
        for w, (proc, conn) in enumerate(self._procs):
            if not proc.is_alive():
                conn.close()
                self._procs[w] = self._spawn()
                self._known[w].clear()

    def _spawn(self) -> tuple[BaseProcess, Connection]:
        mp = get_context("spawn")  # not fork: the parent may run gRPC/Ray threads
        parent, child = mp.Pipe()
        proc = mp.Process(target=_worker_main, args=(child, self._ctx_bytes), daemon=True)
        proc.start()
        child.close()  # only the worker holds its end: a dead worker reads as EOF, no hang
        return proc, parent

    def score(
        self, query: Sequence[bytes], blocks: Sequence[HeadBlock], rotations: Sequence[int],
        a: int, c: float,
    ) -> list[bytes]:
        """Masked, rotated score ciphertexts of ``blocks`` (same order), computed in parallel."""
        return self.score_in("", query, blocks, rotations, a, c)

    def score_in(
        self, namespace: str, query: Sequence[bytes], blocks: Sequence[HeadBlock],
        rotations: Sequence[int], a: int, c: float,
    ) -> list[bytes]:
        """:meth:`score` for the blocks of ``namespace``."""
        with self._lock:
            self._start()
            plan: list[list[tuple[BlockKey, int]]] = [[] for _ in range(self.workers)]
            updates = self._updates(namespace, blocks)
            where: list[tuple[int, int]] = []
            for block, rotation in zip(blocks, rotations, strict=True):
                w = shard_of(namespace, block.block_id, self.workers)
                where.append((w, len(plan[w])))
                plan[w].append(((namespace, block.block_id), rotation))
            busy = [w for w in range(self.workers) if plan[w]]
            results = self._exchange(
                {w: ("score", list(query), plan[w], a, c, updates[w]) for w in busy})
            return [results[w][i] for w, i in where]

    def _updates(
        self, namespace: str, blocks: Sequence[HeadBlock]
    ) -> list[list[tuple[BlockKey, list[bytes]]]]:
        """Per worker: the blocks whose version it does not hold yet (marked as held)."""
        updates: list[list[tuple[BlockKey, list[bytes]]]] = [[] for _ in range(self.workers)]
        for block in blocks:
            w = shard_of(namespace, block.block_id, self.workers)
            key = (namespace, block.block_id)
            if self._known[w].get(key) != block.version:
                updates[w].append((key, list(block.ciphertexts)))
                self._known[w][key] = block.version
        return updates

    def sync(self, blocks: Sequence[HeadBlock]) -> None:
        self.sync_in("", blocks)

    def sync_in(self, namespace: str, blocks: Sequence[HeadBlock]) -> None:
        """:meth:`BlockScorer.sync` for the blocks of ``namespace``."""
        with self._lock:
            updates = self._updates(namespace, blocks)
            keep = {(namespace, b.block_id) for b in blocks}
            drops: list[list[BlockKey]] = [
                [k for k in known if k[0] == namespace and k not in keep] for known in self._known
            ]
            busy = [w for w in range(self.workers) if updates[w] or drops[w]]
            if busy:
                self._start()
            for w in busy:
                for key in drops[w]:
                    del self._known[w][key]
            self._exchange({w: ("sync", updates[w], drops[w]) for w in busy})

    def held(self, namespace: str = "") -> dict[int, int]:
        """``{block id: version}`` the workers hold for ``namespace`` (as sent to them)."""
        with self._lock:
            return {k[1]: v for known in self._known for k, v in known.items()
                    if k[0] == namespace}

    def _exchange(self, messages: dict[int, tuple[Any, ...]]) -> dict[int, list[Any]]:
        """Send each worker its message and read every reply that is owed; the first error is
        raised only after all owed replies are read, so no stale reply stays in a pipe to
        answer the next request."""
        results: dict[int, list[Any]] = {}
        failure: PuraError | None = None
        sent = []
        for w, message in messages.items():
            try:
                self._procs[w][1].send(message)
                sent.append(w)
            except OSError as exc:  # the worker's end is closed: it died
                self._known[w].clear()
                failure = failure or ProtocolError(
                    f"scoring worker {w} is gone: {type(exc).__name__}")
        for w in sent:
            try:
                results[w] = self._receive(w)
            except PuraError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return results

    def _receive(self, w: int) -> list[Any]:
        try:
            reply: Any = self._procs[w][1].recv()
        except (EOFError, OSError) as exc:
            self._known[w].clear()
            raise ProtocolError(f"scoring worker {w} is gone: {type(exc).__name__}") from exc
        if reply[0] == "ok":
            out: list[Any] = reply[1]
            return out
        self._known[w].clear()  # worker state is uncertain after an error: resend next time
        cls = getattr(errors, reply[1], ProtocolError)
        raise cls(reply[2])

    def close(self) -> None:
        with self._lock:
            for proc, conn in self._procs:
                with contextlib.suppress(OSError, EOFError):
                    conn.send(("stop",))
                proc.join(timeout=5)
            self._procs = []
            self._known = [{} for _ in range(self.workers)]

    def __enter__(self) -> ScoringPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class _PoolView:
    """One namespace (collection) of a shared :class:`ScoringPool`."""

    pool: ScoringPool
    namespace: str

    def score(
        self, query: Sequence[bytes], blocks: Sequence[HeadBlock], rotations: Sequence[int],
        a: int, c: float,
    ) -> list[bytes]:
        return self.pool.score_in(self.namespace, query, blocks, rotations, a, c)

    def sync(self, blocks: Sequence[HeadBlock]) -> None:
        self.pool.sync_in(self.namespace, blocks)

    def close(self) -> None:
        """The pool's owner closes the processes; a view owns nothing."""


class PreselectServer:
    """A's side of preselection over one :class:`BlockLayout`.

    Keeps parsed block ciphertexts in memory keyed by (block id, version): parsing costs about
    as much as scoring, so it is done once per refresh, not once per query.
    """

    def __init__(
        self,
        ctx: CKKSContext,
        layout: BlockLayout,
        rng: random.Random | None = None,
        pool: BlockScorer | None = None,
    ) -> None:
        self.ctx = ctx
        self.layout = layout
        self.pool = pool
        self._rng = rng if rng is not None else random.SystemRandom()
        self._cache: dict[int, tuple[int, list[CKKSCiphertext]]] = {}

    def __repr__(self) -> str:
        return f"PreselectServer({self.layout!r})"

    def _block_cts(self, block: HeadBlock) -> list[CKKSCiphertext]:
        cached = self._cache.get(block.block_id)
        if cached is not None and cached[0] == block.version:
            return cached[1]
        cts = [self.ctx.ciphertext_from_bytes(raw) for raw in block.ciphertexts]
        self._cache[block.block_id] = (block.version, cts)
        return cts

    def sync_pool(self) -> None:
        """Bring the pool's copy of the blocks up to date with the layout (after a refresh).

        Only searchable blocks are held remotely: a block whose last template was deleted is
        dropped from the workers, so they hold exactly what a query would score."""
        if self.pool is not None:
            self.pool.sync(self.layout.searchable_blocks())

    def draw_mask(self) -> tuple[int, float]:
        """Per-query ``(a, c)``: ``a`` uniform in ``[2^(bits−1), 2^bits)``, ``c`` uniform."""
        a_bits, c_bits = self.ctx.mask_bounds()
        a = self._rng.randrange(1 << (a_bits - 1), 1 << a_bits)
        c = self._rng.uniform(-(2.0 ** (c_bits - 1)), 2.0 ** (c_bits - 1))
        return a, c

    def request(
        self, query: Sequence[bytes], k: int
    ) -> tuple[PreselectRequest, PreselectState]:
        """Score, mask and permute all searchable blocks for one query."""
        blocks = self.layout.searchable_blocks()
        if not blocks:
            raise ProtocolError("the gallery has no enrolled templates to preselect from")
        slots = self.ctx.slot_count
        if not 1 <= k <= len(blocks) * slots:
            raise ProtocolError(f"k must be in 1..{len(blocks) * slots}, got {k}")
        parsed = parse_query(self.ctx, query, self.layout.head_dim)  # refuse before any work
        order = list(range(len(blocks)))
        self._rng.shuffle(order)
        rotations = [self._rng.randrange(slots) for _ in order]
        a, c = self.draw_mask()
        if self.pool is not None and len(blocks) > 1:  # one block: shipping costs > gain
            scores = self.pool.score(query, [blocks[i] for i in order], rotations, a, c)
        else:
            q = self.ctx.expand_query(parsed, self.layout.head_dim)  # parsed once
            scores = [
                _score_one(self.ctx, q, self._block_cts(blocks[idx]), rotations[view], a, c)
                for view, idx in enumerate(order)
            ]
        request_id = self._rng.randbytes(_ID_BYTES)
        state = PreselectState(
            request_id,
            tuple(blocks[i].block_id for i in order),
            tuple(rotations),
            tuple(dict(blocks[i].live) for i in order),
            slots,
        )
        request = PreselectRequest(request_id, self.ctx.key_id, k, tuple(scores),
                                   blocks=state.block_order, rotations=state.rotations)
        return request, state

    @staticmethod
    def resolve(state: PreselectState, response: PreselectResponse) -> list[TemplateId]:
        """Un-permute B's positions to template ids (best first), dropping decoy slots."""
        if response.request_id != state.request_id:
            raise ProtocolError("preselect response answers another request")
        out: list[TemplateId] = []
        total = len(state.block_order) * state.slot_count
        for pos in response.positions:
            if not 0 <= pos < total:
                raise ProtocolError(f"position {pos} outside B's view of {total} slots")
            view, slot = divmod(pos, state.slot_count)
            original = (slot + state.rotations[view]) % state.slot_count
            template = state.slot_tables[view].get(original)
            if template is not None and template not in out:
                out.append(template)
        return out


#: Standard deviation of the Gaussian noise B adds to every decrypted masked score before it
#: ranks them (noise flooding), in B's units (the masked value ``a·S + c``). From measurements
#: (docs/security.md, "Noise flooding at B"; ``python -m bench.ckks_noise``): the largest CKKS
#: decryption error on real LFW heads was 0.164 (std 0.0028) in these units, so σ = 128 is
#: 2^9.6 times the largest and 2^15.5 times the typical error; in score units σ/a ≤ 2^-9. LFW
#: decisions stay identical to plaintext up to σ = 256 and first change at σ = 512: a 4× margin.
FLOOD_SIGMA = 128.0


def flood(
    values: npt.NDArray[np.float64], sigma: float, rng: random.Random
) -> npt.NDArray[np.float64]:
    """``values`` plus independent ``N(0, sigma²)`` noise (B, before ranking).

    Why: B ranks exact CKKS decryptions, and which position wins depends, for near ties, on the
    decryption noise, which depends on the secret key. Orderings derived from decryptions are
    what the IND-CPA-D key-recovery attacks on CKKS (Li–Micciancio 2021, and the one-bit
    variants of 2024) feed on. Noise far above the decryption error makes everything derived
    from B's decryptions a function of the flooding noise instead (the standard remedy,
    Li–Micciancio–Schultz–Sorrell 2022). The normals come from a generator seeded with 128
    bits of ``rng`` per query (OS CSPRNG in production, a seeded ``random.Random`` in tests).
    """
    if sigma <= 0:
        return values
    gen = np.random.default_rng(rng.getrandbits(128))
    out: npt.NDArray[np.float64] = values + gen.normal(0.0, sigma, size=values.shape)
    return out


def decrypt_view(
    ctx: CKKSContext, req: PreselectRequest, *, sigma: float = FLOOD_SIGMA,
    rng: random.Random | None = None,
) -> npt.NDArray[np.float64]:
    """B: its view of one query, every masked score ciphertext decrypted and flooded with
    ``N(0, sigma²)`` noise (:func:`flood`), in view order. Nothing un-flooded is returned:
    every ranking B makes starts here."""
    if req.key_id != ctx.key_id:
        raise ProtocolError("preselect request is for another CKKS key")
    if not req.scores or not 1 <= req.k <= len(req.scores) * ctx.slot_count:
        raise ProtocolError(f"bad preselect request: k={req.k}, {len(req.scores)} blocks")
    values: npt.NDArray[np.float64] = np.concatenate(
        [ctx.decrypt(ctx.ciphertext_from_bytes(raw, score=True)) for raw in req.scores]
    )
    return flood(values, sigma, rng if rng is not None else secrets.SystemRandom())


def answer_preselect(
    ctx: CKKSContext, req: PreselectRequest, *, view_k: int | None = None,
    sigma: float = 0.0, rng: random.Random | None = None,
) -> PreselectResponse:
    """B's ranking as a list of positions, best first: the studies' and tools' path.

    The service does not use it: there B serves candidate copies (:mod:`pura.protocols.candidates`),
    ranks through :func:`decrypt_view` with flooding always on (:data:`FLOOD_SIGMA`) and sends
    the chosen copies shuffled, so no ordering derived from its decryptions leaves B. Studies
    that compare B's ranking with a plaintext model call this without noise (``sigma = 0``,
    the default here) or with the product's (``sigma = FLOOD_SIGMA``). ``view_k``: B's own
    configuration; a request for another ``k`` is refused (``None``: the request's ``k``).
    """
    if view_k is not None and req.k != min(view_k, len(req.scores) * ctx.slot_count):
        raise HelperRefusedError(f"preselection k={req.k}; B ranks view_k={view_k}")
    values = decrypt_view(ctx, req, sigma=sigma, rng=rng)
    top = np.argpartition(-values, req.k - 1)[: req.k]
    best = top[np.argsort(-values[top], kind="stable")]
    return PreselectResponse(req.request_id, tuple(int(p) for p in best))


def preselect(
    server: PreselectServer, ctx_b: CKKSContext, query: Sequence[bytes], k: int
) -> tuple[list[TemplateId], int]:
    """Both parties in one process through the byte encodings; returns (candidates, bytes)."""
    request, state = server.request(query, k)
    wire_req = request.to_bytes()
    response = answer_preselect(ctx_b, PreselectRequest.from_bytes(wire_req))
    wire_resp = response.to_bytes()
    return server.resolve(state, PreselectResponse.from_bytes(wire_resp)), len(wire_req) + len(
        wire_resp
    )


__all__ = [
    "FLOOD_SIGMA",
    "BlockKey",
    "BlockScorer",
    "PreselectRequest",
    "PreselectResponse",
    "PreselectServer",
    "PreselectState",
    "ScoringBackend",
    "ScoringPool",
    "answer_preselect",
    "decrypt_view",
    "flood",
    "parse_query",
    "preselect",
    "query_rows",
    "shard_of",
]
