"""Assemble and run server A or B from a :class:`~pura.config.ServerConfig`.

Start-up order matters for safety: A loads its keys (refusing if it can read B's secrets), opens
the store and the audit log, connects to B over mTLS and checks that B holds the *same* key and
parameter set before serving anything (while B is unreachable A listens, reports NOT_SERVING
on health and answers UNAVAILABLE, and keeps trying; a B with other keys is fatal),
starts the preselection scorer the configuration asks
for (in-process, a local process pool, or Ray shard actors), then reconciles and refreshes the
gallery blocks (crash recovery; the scorer receives the blocks here) and only then reports
SERVING on the health service.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pura.audit_log import AuditLog
from pura.config import ServerConfig
from pura.crypto.ckks import CKKSContext
from pura.crypto.encoding import PCARotation, load_shipped_pca
from pura.engine.local import LocalEngine
from pura.errors import ConfigError, PuraError
from pura.gallery.copies import CopyStore
from pura.gallery.store import GalleryStore
from pura.keys import FILE_NAMES, default_peer_key_dirs, load_a_keys, load_b_keys
from pura.pipeline.config import SearchConfig
from pura.protocols.preselect import ScoringBackend, ScoringPool
from pura.service import servicers
from pura.service.interceptors import Authenticator, QueryBudget, TokenTable
from pura.service.metrics import Metrics
from pura.service.nodes import NodeA, NodeB
from pura.service.peer import HelperClient, HelperIdentity, HelperServicer, register_helper
from pura.service.recording import ARecording, instrument_a
from pura.service.server import RunningServer, secure_channel, start_server

log = logging.getLogger("pura.serve")


def load_pca(key_dir: Path, model_id: str) -> PCARotation:
    """The PCA rotation next to the keys (written by ``pura keygen --pca`` / the demo), else
    the one shipped in ``pura/data``."""
    local = key_dir / FILE_NAMES["pca"]
    if local.exists():
        return PCARotation.load(local, model_id=model_id)
    return load_shipped_pca(model_id)


def _forbidden(config: ServerConfig) -> tuple[Path, ...]:
    """Key directories this server must not be able to read: the configured ones and, unless
    ``shared_host_keys`` (demo/tests), the other server's directory in keygen's layout."""
    if config.shared_host_keys:
        log.warning("shared_host_keys: A and B share this host and user; the check that A "
                    "cannot read B's keys is off (demo/tests only)")
        return config.forbidden_key_dirs
    return (*config.forbidden_key_dirs, *default_peer_key_dirs(config.key_dir, config.role))


def _tls(config: ServerConfig) -> tuple[Path, str] | None:
    return None if config.tls_dir is None else (config.tls_dir, config.certificate)


def _authenticator(config: ServerConfig) -> Authenticator:
    return Authenticator(TokenTable(config.tokens))


def start_b(config: ServerConfig) -> RunningServer:
    keys = load_b_keys(config.key_dir, forbidden=config.forbidden_key_dirs)
    engine = LocalEngine(config.engine_workers)
    copies = CopyStore(config.data_dir / "copies.db")
    node = NodeB(keys, copies, engine=engine, search=SearchConfig(top_k=config.top_k,
                                                          epoch_queries=config.epoch_queries))
    identity = HelperIdentity(keys.public.parameters.id, keys.public.key_id)
    metrics = _b_metrics(node)
    handlers = metrics.timed_steps(node.handlers())
    if config.record_dir is not None:  # auditor tool: see pura/service/recording.py
        from pura.service.recording import record_b

        handlers, _ = record_b(handlers, config.record_dir)
    servicer = HelperServicer(identity, handlers, max_request=config.limits.max_payload_bytes)
    return start_server(
        listen=config.listen, registrars=[register_helper(servicer)],
        service_names=["pura.v1.PuraHelper"], limits=config.limits,
        authenticator=_authenticator(config), tls=_tls(config), dev=config.dev,
        token_listen=config.token_listen, metrics=metrics, metrics_listen=config.metrics_listen,
    )


def _b_metrics(node: NodeB) -> Metrics:
    """B's levels and refusals, read at scrape time (nothing secret: sizes and counts)."""
    metrics = Metrics("b")
    metrics.level("randomness_pool", lambda: len(node.server_b.pool))
    metrics.counts("pura_b_quota_refusals", "Requests B's guard refused, by protocol step",
                   "step", lambda: node.guard.refusals)
    return metrics


def _a_metrics(node: NodeA, metrics: Metrics) -> Metrics:
    """A's levels, read at scrape time: pools, gallery size, templates awaiting a block."""
    metrics.level("randomness_pool", lambda: len(node.server_a.pool))
    metrics.level("mask_pool", lambda: len(node.server_a.masks))

    def gallery(field: str) -> float:
        return float(sum(getattr(node.store.stats(c), field)
                         for c in node.store.list_collections()))

    metrics.level("gallery_templates", lambda: gallery("templates"))
    metrics.level("gallery_subjects", lambda: gallery("subjects"))
    metrics.level("pending_templates", lambda: gallery("pending_templates"))
    return metrics


def _helper_client(config: ServerConfig) -> HelperClient:
    channel = secure_channel(config.peer, config.tls_dir, config.certificate, config.limits)
    return HelperClient(channel, timeout_s=config.limits.default_deadline_s,
                        max_reply=config.limits.max_payload_bytes)


def _b_reachable(client: HelperClient, identity: HelperIdentity, wait_s: float) -> bool:
    """True once B answers with ``identity`` (within ``wait_s``), False while B is unreachable;
    a B holding other keys raises :class:`KeyMismatchError` (never serve against it)."""
    end = time.monotonic() + wait_s
    while True:
        try:
            client.check_identity(identity)
            return True
        except ConfigError:
            if time.monotonic() >= end:
                return False
            time.sleep(0.5)


def build_scorer(config: ServerConfig, context: CKKSContext) -> ScoringBackend | None:
    """The preselection scorer ``config`` asks for; None = score in A's own process.

    Ray is imported only here, and only when ``ray_address`` is set. The scorer receives the
    PUBLIC CKKS context (``context.public()``): shard actors and pool workers can score
    ciphertexts but decrypt nothing, and ShardActor refuses a secret context outright."""
    public = context.public() if context.is_private else context
    if config.ray_address is not None:
        from pura.engine.cluster import ShardedScorer

        return ShardedScorer.connect(public, config.ray_address, config.ray_shards or 0)
    if config.scoring_workers > 1:
        return ScoringPool(public, workers=config.scoring_workers)
    return None


@dataclass
class ServerAHandle:
    """A running server A and its core (tests reach into the node)."""

    running: RunningServer
    node: NodeA
    #: Set by ``--record`` (an auditor tool): closed, with a copy of A's store, on stop.
    recording: ARecording | None = None
    #: Set by :meth:`stop`; ends the wait for B of an A started while B was down.
    stopped: threading.Event = field(default_factory=threading.Event)
    #: Why an A started without B gave up waiting (B holds other keys), else None.
    error: PuraError | None = None

    def stop(self) -> None:
        self.stopped.set()
        self.running.stop(None)
        self.node.offline.stop()
        if self.node.scorer is not None:
            self.node.scorer.close()
        if self.recording is not None:
            self.recording.close()
        self.node.store.close()


def start_a(config: ServerConfig, *, wait_for_b_s: float = 2.0) -> ServerAHandle:
    """Start server A. If B does not answer within ``wait_for_b_s``, A listens anyway (health
    NOT_SERVING, RPCs UNAVAILABLE) and a thread keeps trying; once B answers with the same keys
    A recovers its gallery and serves (issue 13: an operator would rather see A up and waiting
    than exiting after 30 s)."""
    keys = load_a_keys(config.key_dir, forbidden=_forbidden(config))
    params = keys.public.parameters
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = GalleryStore(config.data_dir / "gallery.db")
    audit = AuditLog(config.data_dir / "audit.jsonl")
    helper = _helper_client(config)
    identity = HelperIdentity(params.id, keys.public.key_id)
    ready = threading.Event()
    if _b_reachable(helper, identity, wait_for_b_s):
        ready.set()
    else:
        log.warning("server B at %s is unreachable: serving NOT_SERVING until it answers",
                    config.peer)
    pca = load_pca(config.key_dir, params.encoding.model_id)
    scorer = build_scorer(config, keys.public.ckks)
    metrics = Metrics("a")
    node = NodeA(keys, store, audit, metrics.timed_call(helper.call), pca,
                 search=SearchConfig.for_model(params.encoding.model_id, top_k=config.top_k,
                                               epoch_queries=config.epoch_queries),
                 engine=LocalEngine(config.engine_workers), scorer=scorer)
    log.info("preselection scoring: %s", node.scorer_description())
    recording = None
    if config.record_dir is not None:  # auditor tool: see pura/service/recording.py
        log.warning("RECORDING every A<->B payload and A's preselection secrets to %s "
                    "(auditor tool, evaluation galleries only)", config.record_dir)
        recording = instrument_a(node, config.record_dir, config.data_dir)
    try:
        running = _serve_a(config, node, ready, _a_metrics(node, metrics))
    except BaseException:
        node.offline.stop()
        if scorer is not None:
            scorer.close()
        raise
    handle = ServerAHandle(running, node, recording)
    if not ready.is_set():
        threading.Thread(target=_wait_for_b, args=(handle, helper, identity, ready),
                         name="pura-wait-for-b", daemon=True).start()
    return handle


def _wait_for_b(
    handle: ServerAHandle, helper: HelperClient, identity: HelperIdentity, ready: threading.Event
) -> None:
    """Started without B: retry until B answers, then recover and open the gate."""
    while not handle.stopped.is_set():
        try:
            if not _b_reachable(helper, identity, 0.0):
                handle.stopped.wait(1.0)
                continue
            _recover(handle.node)
        except PuraError as exc:  # B with other keys, or recovery failed: never serve
            log.error("server A cannot serve: %s", exc)
            handle.error = exc
            handle.stopped.set()
            return
        ready.set()
        handle.running.set_serving(True)
        log.info("server B answered: serving")
        return


def _recover(node: NodeA) -> None:
    refreshed = node.recover()
    if refreshed:
        log.info("recovery refreshed %d blocks", refreshed)


def _serve_a(
    config: ServerConfig, node: NodeA, ready: threading.Event, metrics: Metrics
) -> RunningServer:
    """Recover the gallery (the scorer receives its blocks here) if B is there, then open the
    RPC port; without B the port opens gated (UNAVAILABLE) and recovery waits for B.

    Budgets live in the store (issue 13, item 9): a restart does not reset them."""
    if ready.is_set():
        _recover(node)
    limits = config.limits
    budget = QueryBudget(per_principal=limits.query_budget, window_s=limits.budget_window_s,
                         failed_per_target=limits.failed_per_target, ledger=node.store)
    client = servicers.PuraServicer(node, limits, budget)
    admin = servicers.AdminServicer(node)
    return start_server(
        listen=config.listen, registrars=servicers.registrars(client, admin), ready=ready,
        service_names=servicers.SERVICE_NAMES, limits=limits,
        authenticator=_authenticator(config), tls=_tls(config), dev=config.dev,
        token_listen=config.token_listen, metrics=metrics, metrics_listen=config.metrics_listen,
    )


def serve_forever(config: ServerConfig, *, ready_file: Path | None = None) -> None:
    """Run until SIGTERM/SIGINT. ``ready_file`` receives the bound port once serving.

    Everything the server creates is private to its user (umask 0077): the stores, their WAL
    and shared-memory files, the audit log (issue 13, item 10)."""
    os.umask(0o077)
    if config.role == "a":
        handle = start_a(config)
        running, closer = handle.running, handle.stop
        stopping = handle.stopped
    else:
        running = start_b(config)
        closer = lambda: running.stop(None)  # noqa: E731
        stopping = threading.Event()
    if ready_file is not None:
        tmp = ready_file.with_suffix(".tmp")
        tmp.write_text(str(running.port))
        tmp.replace(ready_file)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    log.info("server %s listening on port %d", config.role.upper(), running.port)
    stopping.wait()
    closer()
    if config.role == "a" and handle.error is not None:
        raise handle.error


__all__ = ["ServerAHandle", "build_scorer", "load_pca", "serve_forever", "start_a", "start_b"]
