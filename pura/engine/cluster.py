"""Gallery shards on a Ray cluster: actors hold CKKS head blocks and score them for A.

Why Ray: it is an existing, widely deployed engine whose actors keep state in memory between
calls (a shard's ciphertexts are loaded once, not shipped per query), whose object store
broadcasts the per-query ciphertext to every shard with one ``ray.put``, and which runs the same
code on one laptop (``ray.init()``), on a local multi-node cluster (``ray start`` on loopback) and
on Kubernetes (``deploy/k8s/30-ray-cluster.yaml``).

Division of work (docs/architecture.md, preselection step 1). A's protocol logic
(:mod:`pura.protocols.preselect`) needs ``S_b = Σ_i Q_i ⊙ G_{b,i}`` for every block ``b``; that
is 99 % of preselection's cost and embarrassingly parallel over blocks. A :class:`ShardedScorer`
spreads the blocks over ``n_shards`` :class:`ShardActor` actors (round robin by block id), sends
each query to all of them, and gathers the score ciphertexts back at A, which then masks,
permutes and talks to B exactly as in the single-process path. Gathering *ciphertexts* (not a
per-shard top-k) keeps B's view identical to the unsharded protocol: one masked, permuted list
over the whole gallery, so sharding leaks nothing new and the answer is the same by construction.

Security: actors receive the PUBLIC CKKS context only (the context's pickling drops any secret
key, and :meth:`ShardActor.__init__` refuses a secret one) and never a Paillier share. They do
NOT see only ciphertexts: :meth:`ShardedScorer.score_masked` sends each query's per-block
rotations and the affine mask ``(a, c)`` that hide the scores from B, so a worker that colludes
with B (or anyone reading Ray's traffic) can unmask B's view of the scores. Two consequences,
enforced in :func:`check_ray_transport`: the masks may leave A's host only over Ray's TLS
(``RAY_USE_TLS=1`` with ``RAY_TLS_SERVER_CERT``/``_KEY``/``RAY_TLS_CA_CERT`` on every node), and
the Ray cluster belongs to A's trust domain, never B's (issue 13, item 12).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pura.crypto.ckks import CKKSCiphertext, CKKSContext
from pura.errors import ConfigError, NotFoundError, ProtocolError
from pura.gallery.packing import HeadBlock
from pura.protocols.preselect import BlockKey, BlockScorer, query_rows, shard_of

#: Block id -> the block's ``head_dim`` serialized work-level ciphertexts.
BlockBytes = Mapping[int, Sequence[bytes]]


_LOOPBACK_PREFIXES = ("127.", "::1", "localhost")


def check_ray_transport(node_ips: Iterable[str], environ: Mapping[str, str]) -> None:
    """Refuse a Ray cluster with a node off this host unless Ray's TLS is on.

    Why: the shards receive per-query masks and rotations (module docstring); Ray's own
    transport is plaintext gRPC unless ``RAY_USE_TLS`` is set, so a multi-host cluster without
    it would publish them on the network. A loopback-only cluster never leaves the host."""
    remote = sorted({ip for ip in node_ips if not str(ip).startswith(_LOOPBACK_PREFIXES)})
    tls = environ.get("RAY_USE_TLS", "").strip().lower() in ("1", "true")
    if remote and not tls:
        raise ConfigError(
            f"Ray nodes {remote} are off this host but RAY_USE_TLS is not set: the shards "
            "receive per-query masks and rotations, which must not cross the network in "
            "plaintext (set RAY_USE_TLS=1 and the RAY_TLS_* files on every node)")


def _ray() -> Any:
    """Import Ray lazily (only cluster users pay its ~1 s import) and untyped (no stubs)."""
    return importlib.import_module("ray")


class ShardActor:
    """State of one shard: a public CKKS context and the parsed ciphertexts of its blocks.

    Plain class so it can be unit-tested without Ray; :class:`ShardedScorer` wraps it with
    ``ray.remote``. Blocks are keyed by ``(namespace, block id)``: one actor serves every
    collection of a server A, and block ids restart at 0 in each collection.
    """

    def __init__(self, public_context: bytes) -> None:
        # expect_secret=False raises if someone ships B's secret context to a worker.
        self._ctx = CKKSContext.from_bytes(public_context, expect_secret=False)
        self._blocks: dict[BlockKey, list[CKKSCiphertext]] = {}
        self._versions: dict[BlockKey, int] = {}

    def put_blocks(
        self, blocks: BlockBytes, namespace: str = "", versions: Mapping[int, int] | None = None
    ) -> int:
        """Parse (validating key and parameters) and keep the given blocks; returns block count.

        ``versions`` (block id -> version) is recorded so that :meth:`held` reports what the
        actor really holds, not what the driver believes it sent."""
        for block_id, cts in blocks.items():
            key = (namespace, int(block_id))
            self._blocks[key] = [self._ctx.ciphertext_from_bytes(b) for b in cts]
            self._versions[key] = -1 if versions is None else int(versions[block_id])
        return len(self._blocks)

    def drop_block(self, block_id: int, namespace: str = "") -> bool:
        """Forget one block (after a delete + refresh emptied it); True if it was here."""
        self._versions.pop((namespace, int(block_id)), None)
        return self._blocks.pop((namespace, int(block_id)), None) is not None

    def block_ids(self, namespace: str = "") -> list[int]:
        return sorted(b for ns, b in self._blocks if ns == namespace)

    def held(self, namespace: str = "") -> dict[int, int]:
        """``{block id: version}`` of the blocks of ``namespace`` in this actor's memory."""
        return {b: self._versions[(ns, b)] for ns, b in sorted(self._blocks) if ns == namespace}

    def node_ip(self) -> str:
        """The Ray node this actor runs on (to show shards really spread over nodes)."""
        return str(_ray().util.get_node_ip_address())

    def score_masked(
        self, query: Sequence[bytes], jobs: Sequence[tuple[int, int]], a: int, c: float,
        namespace: str = "",
    ) -> list[bytes]:
        """Preselection's per-block work for ``jobs`` = (block id, rotation): score, rotate,
        affine mask ``a·S + c`` — exactly what :class:`pura.protocols.preselect.ScoringPool`'s
        workers do, so A's protocol code runs unchanged on top of the shards."""
        out: list[bytes] = []
        if not jobs:
            return out
        q = query_rows(self._ctx, query, len(self._blocks[(namespace, jobs[0][0])]))
        for block_id, rotation in jobs:
            score = self._ctx.score_block(q, self._blocks[(namespace, block_id)])
            masked = self._ctx.affine_mask(self._ctx.rotate(score, rotation), a, c)
            out.append(self._ctx.ciphertext_to_bytes(masked))
        return out

    def score(self, query: Sequence[bytes], namespace: str = "") -> dict[int, bytes]:
        """``S_b`` for every block of this shard in ``namespace``, serialized (score level)."""
        mine = [cts for (ns, _), cts in self._blocks.items() if ns == namespace]
        if not mine:
            return {}
        q = query_rows(self._ctx, query, len(mine[0]))
        return {
            block_id: self._ctx.ciphertext_to_bytes(self._ctx.score_block(q, cts))
            for (ns, block_id), cts in sorted(self._blocks.items()) if ns == namespace
        }


def score_blocks_locally(
    ctx: CKKSContext,
    query: Sequence[CKKSCiphertext],
    blocks: Mapping[int, Sequence[CKKSCiphertext]],
) -> dict[int, CKKSCiphertext]:
    """The single-process reference: the same scores, computed in A's own process."""
    return {b: ctx.score_block(query, cts) for b, cts in sorted(blocks.items())}


@dataclass(frozen=True)
class ClusterInfo:
    """What the scorer runs on (for benchmark JSON and logs)."""

    address: str
    nodes: int
    cpus: float
    shards: int


class ShardedScorer:
    """Block scoring spread over Ray actors; A keeps the protocol, the actors do the products.

    ``address``: ``None`` starts (or reuses) a Ray runtime in this process; ``"auto"`` or
    ``"host:port"`` joins a running cluster; ``"ray://host:10001"`` uses Ray Client (a server A pod
    that is not itself a Ray node, as in the Kubernetes manifests). ``cpus_per_shard`` is the
    scheduling weight of one actor (1: one shard per core). ``shutdown_on_close``: :meth:`close`
    also disconnects this process from Ray if this scorer was the one that connected it.

    Blocks are keyed by ``(namespace, block id)``; :meth:`view` gives one collection's
    :class:`~pura.protocols.preselect.BlockScorer`. Methods are safe to call from several
    threads (one lock guards the bookkeeping; calls of different namespaces run concurrently).
    """

    def __init__(
        self,
        context: CKKSContext,
        n_shards: int,
        *,
        address: str | None = None,
        cpus_per_shard: float = 1.0,
        spread: bool = True,
        shutdown_on_close: bool = False,
    ) -> None:
        if n_shards < 1:
            raise ConfigError(f"n_shards must be at least 1, got {n_shards}")
        ray = _ray()
        self._ray = ray
        self._started_runtime = _init_ray(address)
        self._shutdown_on_close = shutdown_on_close
        self._address = address
        self._ctx = context
        public = context.public().to_bytes() if context.is_private else context.to_bytes()
        remote_cls = ray.remote(num_cpus=cpus_per_shard)(ShardActor)
        strategy = "SPREAD" if spread else "DEFAULT"

        def spawn() -> Any:
            """One shard actor (at construction, and to replace a dead one)."""
            return remote_cls.options(scheduling_strategy=strategy).remote(public)

        self._spawn: Callable[[], Any] = spawn
        self._actors: list[Any] = [spawn() for _ in range(n_shards)]
        self._owner: dict[BlockKey, int] = {}
        self._versions: dict[BlockKey, int] = {}
        self._lock = threading.RLock()

    @classmethod
    def connect(
        cls, context: CKKSContext, address: str, shards: int = 0, *,
        cpus_per_shard: float = 1.0, ready_timeout_s: float = 120.0,
    ) -> ShardedScorer:
        """What ``pura serve`` uses: join the cluster at ``address``, start ``shards`` actors
        (0: one per live Ray node that offers CPUs) and wait until every actor runs.

        Waiting here turns "the cluster cannot place the actors" (too few CPUs) into a start-up
        ConfigError instead of a first identification that never returns."""
        started = _init_ray(address)
        ray = _ray()
        alive = [n for n in ray.nodes() if n.get("Alive")]
        try:
            check_ray_transport([str(n.get("NodeManagerAddress", "")) for n in alive], os.environ)
        except ConfigError:
            if started:
                ray.shutdown()
            raise
        if shards == 0:
            shards = max(1, sum(1 for n in ray.nodes()
                                if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0))
        scorer = cls(context, shards, address=address, cpus_per_shard=cpus_per_shard,
                     shutdown_on_close=started)
        scorer._started_runtime = started
        try:
            scorer.wait_ready(ready_timeout_s)
        except ConfigError:
            scorer.close()
            raise
        return scorer

    def wait_ready(self, timeout_s: float) -> None:
        """Block until every shard actor answers; ConfigError after ``timeout_s``."""
        ray = self._ray
        try:
            ray.get([a.block_ids.remote() for a in self._actors], timeout=timeout_s)
        except ray.exceptions.GetTimeoutError as exc:
            cpus = ray.cluster_resources().get("CPU", 0.0)
            raise ConfigError(f"{self.n_shards} Ray shard actors did not start within "
                              f"{timeout_s} s (cluster offers {cpus} CPUs)") from exc

    @property
    def n_shards(self) -> int:
        return len(self._actors)

    def info(self) -> ClusterInfo:
        ray = self._ray
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = float(ray.cluster_resources().get("CPU", 0.0))
        address = str(ray.get_runtime_context().gcs_address)
        return ClusterInfo(address=address, nodes=len(nodes), cpus=cpus, shards=self.n_shards)

    def describe(self) -> str:
        """One line for logs; only calls Ray Client supports (no GCS address lookup)."""
        ray = self._ray
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        cpus = float(ray.cluster_resources().get("CPU", 0.0))
        return (f"Ray shards: {self.n_shards} actors on {nodes} nodes ({cpus:g} CPUs), "
                f"address {self._address or 'local runtime'}")

    def _answers(self, actor: Any, timeout_s: float) -> bool:
        try:
            self._ray.get(actor.node_ip.remote(), timeout=timeout_s)
        except Exception:  # a dead or unreachable actor, whatever Ray raises
            return False
        return True

    def alive(self, timeout_s: float = 5.0) -> tuple[int, int]:
        """(shard actors answering a ping within ``timeout_s``, shards), for status."""
        return sum(self._answers(a, timeout_s) for a in self._actors), len(self._actors)

    def replace_dead(self, timeout_s: float = 5.0) -> int:
        """Replace every shard actor that no longer answers, as the process pool replaces a
        dead worker; returns how many were replaced.

        The new actor starts empty: the driver forgets the versions the dead one held, so the
        next :meth:`score_masked` (or :meth:`sync`) re-ships those blocks from A's copies. The
        replacement receives the same public context and nothing else."""
        with self._lock:
            dead = [i for i, a in enumerate(self._actors) if not self._answers(a, timeout_s)]
            for i in dead:
                self._actors[i] = self._spawn()
                for key, shard in self._owner.items():
                    if shard == i:
                        self._versions.pop(key, None)
            return len(dead)

    def shard_of(self, block_id: int, namespace: str = "") -> int:
        """Round robin by block id: deterministic, so a restarted A rebuilds the same layout."""
        return shard_of(namespace, block_id, self.n_shards)

    def load(
        self, blocks: BlockBytes, namespace: str = "", versions: Mapping[int, int] | None = None
    ) -> None:
        """Send each block to its shard (replacing an older version of the same block)."""
        per_shard: dict[int, dict[int, Sequence[bytes]]] = {}
        with self._lock:
            for block_id, cts in blocks.items():
                shard = self.shard_of(block_id, namespace)
                per_shard.setdefault(shard, {})[block_id] = cts
                self._owner[(namespace, block_id)] = shard
            self._ray.get([self._actors[s].put_blocks.remote(b, namespace, versions)
                           for s, b in per_shard.items()])

    def drop(self, block_ids: Iterable[int], namespace: str = "") -> None:
        refs = []
        with self._lock:
            for block_id in block_ids:
                shard = self._owner.pop((namespace, block_id), None)
                self._versions.pop((namespace, block_id), None)
                if shard is None:
                    raise NotFoundError(f"block {block_id} is not loaded on any shard")
                refs.append(self._actors[shard].drop_block.remote(block_id, namespace))
            self._ray.get(refs)

    def sync(self, blocks: Sequence[HeadBlock], namespace: str = "") -> None:
        """Make the shards hold exactly ``blocks`` of ``namespace``, at their current versions."""
        with self._lock:
            self._ship_changed(blocks, namespace)
            keep = {b.block_id for b in blocks}
            gone = [b for ns, b in self._owner if ns == namespace and b not in keep]
            if gone:
                self.drop(gone, namespace)

    def _ship_changed(self, blocks: Sequence[HeadBlock], namespace: str) -> None:
        """Load the blocks whose version the shards do not hold yet (caller holds the lock)."""
        changed = [b for b in blocks if self._versions.get((namespace, b.block_id)) != b.version]
        if changed:
            self.load({b.block_id: list(b.ciphertexts) for b in changed}, namespace,
                      {b.block_id: b.version for b in changed})
            self._versions.update({(namespace, b.block_id): b.version for b in changed})

    def block_ids(self, namespace: str = "") -> list[int]:
        """Blocks of ``namespace`` this driver has sent (its bookkeeping)."""
        with self._lock:
            return sorted(b for ns, b in self._owner if ns == namespace)

    def held(self, namespace: str = "") -> dict[int, int]:
        """``{block id: version}`` the actors really hold for ``namespace`` (asks every actor)."""
        parts = self._ray.get([a.held.remote(namespace) for a in self._actors])
        return {b: v for part in parts for b, v in part.items()}

    def placement(self) -> list[str]:
        """Node address of every shard actor, in shard order."""
        return [str(ip) for ip in self._ray.get([a.node_ip.remote() for a in self._actors])]

    def score(
        self, query: CKKSCiphertext, namespace: str = ""
    ) -> dict[int, CKKSCiphertext]:
        """Score every loaded block against one query ciphertext; ``{block id: S_b}``.

        The query is put in the object store once and read by every shard (one transfer per
        node, not per actor); each shard expands it into rows itself (``m − 1`` rotations), so
        235 KB cross the network per query instead of ``m`` times that.
        """
        ref = self._ray.put([self._ctx.ciphertext_to_bytes(query)])
        parts = self._ray.get([actor.score.remote(ref, namespace) for actor in self._actors])
        merged: dict[int, CKKSCiphertext] = {}
        for part in parts:
            for block_id, raw in part.items():
                merged[block_id] = self._ctx.ciphertext_from_bytes(raw, score=True)
        return dict(sorted(merged.items()))

    def score_masked(
        self, query: Sequence[bytes], blocks: Sequence[HeadBlock], rotations: Sequence[int],
        a: int, c: float, namespace: str = "",
    ) -> list[bytes]:
        """Drop-in for ``ScoringPool.score``: ``PreselectServer(ctx, layout, pool=scorer.pool())``
        runs preselection with its blocks on the shards. A block is (re)sent to its shard only
        when its version changed (a refresh not yet synced), as in the process pool."""
        try:
            return self._score_masked(query, blocks, rotations, a, c, namespace)
        except self._ray.exceptions.RayActorError:
            # A shard died (before or during this query): replace it and score once more; the
            # retry re-ships its blocks. Scoring is deterministic, so the retry's bytes are
            # exactly those the dead actor would have returned.
            self.replace_dead()
        try:
            return self._score_masked(query, blocks, rotations, a, c, namespace)
        except self._ray.exceptions.RayActorError as exc:
            self.replace_dead()
            raise ProtocolError("preselection shard actors keep dying; replaced again, the "
                                "query failed") from exc

    def _score_masked(
        self, query: Sequence[bytes], blocks: Sequence[HeadBlock], rotations: Sequence[int],
        a: int, c: float, namespace: str,
    ) -> list[bytes]:
        with self._lock:
            self._ship_changed(blocks, namespace)
        plan: dict[int, list[tuple[int, int]]] = {}
        where: list[tuple[int, int]] = []
        for block, rotation in zip(blocks, rotations, strict=True):
            shard = self.shard_of(block.block_id, namespace)
            where.append((shard, len(plan.setdefault(shard, []))))
            plan[shard].append((block.block_id, rotation))
        ref = self._ray.put(list(query))
        shards = sorted(plan)
        replies = self._ray.get(
            [self._actors[s].score_masked.remote(ref, plan[s], a, c, namespace) for s in shards])
        by_shard = dict(zip(shards, replies, strict=True))
        return [by_shard[s][i] for s, i in where]

    def view(self, namespace: str) -> BlockScorer:
        """The scorer of one collection's blocks, as :class:`PreselectServer` wants it."""
        return _ShardView(self, namespace)

    def pool(self) -> BlockScorer:
        """This scorer with the ``score(query, blocks, rotations, a, c)`` signature that
        :class:`pura.protocols.preselect.PreselectServer` expects of its ``pool``."""
        return self.view("")

    def close(self) -> None:
        """Kill this scorer's actors; with ``shutdown_on_close``, also leave the Ray runtime
        this scorer connected (a runtime someone else started is left to its owner)."""
        with self._lock:
            for actor in self._actors:
                self._ray.kill(actor)
            self._actors = []
            self._owner = {}
            self._versions = {}
            if self._shutdown_on_close and self._started_runtime and self._ray.is_initialized():
                self._ray.shutdown()

    def __enter__(self) -> ShardedScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ShardedScorer(shards={len(self._actors)}, blocks={len(self._owner)})"


@dataclass(frozen=True)
class _ShardView:
    """Adapter: one namespace of a ``ShardedScorer`` seen as a preselection scoring pool."""

    scorer: ShardedScorer
    namespace: str

    def score(
        self, query: Sequence[bytes], blocks: Sequence[HeadBlock], rotations: Sequence[int],
        a: int, c: float,
    ) -> list[bytes]:
        return self.scorer.score_masked(query, blocks, rotations, a, c, self.namespace)

    def sync(self, blocks: Sequence[HeadBlock]) -> None:
        self.scorer.sync(blocks, self.namespace)

    def close(self) -> None:
        """The scorer's owner closes it; closing a view is a no-op."""


def _init_ray(address: str | None) -> bool:
    """Connect this process to Ray unless it already is; True if this call connected it.

    A process already connected (e.g. a test driver of :class:`LoopbackRayCluster`) is reused,
    after checking that a ``host:port`` address names the cluster it is connected to."""
    ray = _ray()
    if ray.is_initialized():
        current = str(ray.get_runtime_context().gcs_address)
        if address and ":" in address and "://" not in address and address != current:
            raise ConfigError(f"this process is already connected to Ray at {current}, "
                              f"not {address}")
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot connect to Ray at {address}: {exc}") from exc
    return True


_TOKEN_VAR = "RAY_AUTH_TOKEN"


@dataclass
class LoopbackRayCluster:
    """A real multi-node Ray cluster on this host's loopback range, for tests and benchmarks.

    Each node is a separate ``ray start --block`` process with its own raylet and object store,
    bound to its own loopback address (head ``127.X.Y.2``, workers ``127.X.Y.3``, ... with a random
    ``X.Y`` per cluster, so two clusters started at once on one host, e.g. two test runs, never
    share an address and its fixed-port services): Ray rewrites ``127.0.0.1``/``localhost`` into
    the host's routable address, other 127/8 addresses it keeps, so no packet leaves the
    machine. A fresh random token (Ray's token authentication) is
    generated per cluster, so no other local process can join or submit work.

    Teardown kills only what this object started: each node's process group, then any process
    still carrying this cluster's unique token in its environment (Ray workers that detached).
    """

    workers: int = 1
    cpus_per_node: int = 1
    start_timeout_s: float = 150.0
    head_ip: str = field(default_factory=lambda: _random_loopback_subnet() + "2")
    address: str = ""
    token: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    _tmp: Path | None = field(default=None, repr=False)

    def env(self) -> dict[str, str]:
        """Environment for every process of the cluster (nodes and drivers)."""
        # Raylet registration can take > 30 s (Ray's default limit) on two busy cores.
        return {**os.environ, "RAY_AUTH_MODE": "token", _TOKEN_VAR: self.token,
                "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_raylet_start_wait_time_s": str(int(self.start_timeout_s))}

    def _ray_cli(self) -> str:
        return str(Path(sys.executable).with_name("ray"))

    def _spawn(self, args: list[str], log_name: str, ip: str) -> None:
        if self._tmp is None:
            raise ConfigError("cluster not started")
        # Explicit per-node ports: nodes started together on one host otherwise race for the
        # same "free" port (raylet: "bind: Address already in use").
        ports = [f"--{name}={_free_port(ip)}" for name in (
            "node-manager-port", "object-manager-port", "metrics-export-port",
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port")]
        with (self._tmp / log_name).open("wb") as log:
            proc = subprocess.Popen(
                [self._ray_cli(), "start", "--block", "--disable-usage-stats",
                 f"--num-cpus={self.cpus_per_node}", *ports, *args],
                env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._procs.append(proc)

    def start(self) -> LoopbackRayCluster:
        """Start the head; returns once it accepts connections (workers start in connect)."""
        self._tmp = Path(tempfile.mkdtemp(prefix="pura-ray-"))
        port = _free_port(self.head_ip)
        self.address = f"{self.head_ip}:{port}"
        self._spawn(["--head", f"--port={port}", f"--node-ip-address={self.head_ip}",
                     "--include-dashboard=false", f"--temp-dir={self._tmp}",
                     f"--ray-client-server-port={_free_port(self.head_ip)}"], "head.log",
                    self.head_ip)
        _wait_for_port(self.head_ip, port, self.start_timeout_s, self._procs[0])
        return self

    def _spawn_worker(self, i: int) -> None:
        ip = f"{self.head_ip.rsplit('.', 1)[0]}.{3 + i}"
        self._spawn([f"--address={self.address}", f"--node-ip-address={ip}"],
                    f"worker-{i}.log", ip)

    def connect(self) -> None:
        """``ray.init`` this process as a driver, then start the workers and wait for each."""
        os.environ.update({k: v for k, v in self.env().items() if k.startswith("RAY_")})
        ray = _ray()
        _reset_ray_auth_cache()
        ray.init(address=self.address, _node_ip_address=self.head_ip, log_to_driver=False,
                 configure_logging=False)
        # Workers join one at a time: concurrent raylet start-ups on two busy cores time out.
        for i in range(self.workers):
            self._spawn_worker(i)
            deadline = time.monotonic() + self.start_timeout_s
            while len([n for n in ray.nodes() if n.get("Alive")]) < 2 + i:
                failed = [p for p in self._procs if p.poll() is not None]
                if time.monotonic() > deadline or failed:
                    raise ConfigError(f"Ray node {i + 1} did not join within "
                                      f"{self.start_timeout_s} s or exited (logs in {self._tmp})")
                time.sleep(0.3)

    def stop(self) -> None:
        """Disconnect the driver, stop every node we started, remove our temporary directory."""
        try:
            ray = _ray()
            if ray.is_initialized():
                ray.shutdown()
        finally:
            for proc in self._procs:
                _signal_group(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + 5.0
            for proc in self._procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(max(0.1, deadline - time.monotonic()))
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
            _kill_token_holders(self.token)
            for key in ("RAY_AUTH_MODE", _TOKEN_VAR):
                os.environ.pop(key, None)
            _reset_ray_auth_cache()
            self._procs = []

    def __enter__(self) -> LoopbackRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _reset_ray_auth_cache() -> None:
    """Make this process's Ray re-read the auth token (it caches the first one it saw).

    Uses Ray's own test hook; absent in other Ray versions, where there is nothing to reset.
    """
    try:
        raylet = importlib.import_module("ray._raylet")
        raylet.Config.initialize("")
        raylet.AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):
        return


def _random_loopback_subnet() -> str:
    """``127.X.Y.`` with random ``X.Y`` (never 127.0.0.*: other tools live there)."""
    return f"127.{secrets.randbelow(254) + 1}.{secrets.randbelow(254) + 1}."


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"ray head exited with status {proc.returncode}")
        try:
            socket.create_connection((host, port), timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.3)
    raise ConfigError(f"ray head did not listen on {host}:{port} within {timeout} s")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill_token_holders(token: str) -> None:
    """SIGKILL processes whose environment carries this cluster's token (ours and only ours)."""
    needle = f"{_TOKEN_VAR}={token}".encode()
    me = os.getpid()
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)


__all__ = [
    "BlockBytes",
    "ClusterInfo",
    "LoopbackRayCluster",
    "ShardActor",
    "ShardedScorer",
    "check_ray_transport",
    "score_blocks_locally",
]
