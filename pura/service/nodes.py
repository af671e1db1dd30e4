"""The application cores of server A and server B: protocols + store + audit, no gRPC.

Server A (:class:`NodeA`) owns the durable gallery and drives every protocol; server B
(:class:`NodeB`) only answers helper steps. The gRPC servicers are thin adapters over these
classes, so the same cores run in one process for tests and across machines.

Durability and consistency (issue 4, threats T23/T24):

* The **template rows** in :class:`~pura.gallery.store.GalleryStore` are the source of truth.
  An enrolment is acknowledged once its row (Paillier template + pending CKKS head) is committed.
* The **packed head blocks** are derived state. A block refresh (A with B) writes pending heads
  and erases deleted slots; the refreshed block and the "placed" flags of its templates are
  committed in one transaction. On start, :meth:`NodeA.recover` reconciles blocks with rows
  (pending rows -> pending slots; live slots without a row -> clearing) and refreshes, so a crash
  at any instant loses no acknowledged template and leaves no half-written one.
* **Deletion** removes the rows, refreshes the affected blocks with the slots erased (a fresh
  decoy replaces the head), then checkpoints the WAL with TRUNCATE (``secure_delete`` zeroes
  freed pages), so no copy of the template remains on disk.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import dataclasses
import functools
import logging
import random
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import numpy as np
import numpy.typing as npt

from pura.audit_log import AuditLog
from pura.crypto.ckks import CKKSContext
from pura.crypto.encoding import PCARotation
from pura.crypto.paillier import RandomnessPool
from pura.crypto.params import ParameterSet, model_mismatch_message
from pura.engine.local import SERIAL, LocalEngine
from pura.errors import (
    DimensionError,
    EmbeddingRangeError,
    KeyMismatchError,
    NotFoundError,
    ParameterError,
    PeerUnavailableError,
    ProtocolError,
    PuraError,
    StoreError,
)
from pura.gallery.copies import CopyStore
from pura.gallery.packing import BlockLayout, HeadBlock, copy_tag, encrypt_block
from pura.gallery.store import (
    Collection,
    EnrollResult,
    GalleryStore,
    NewTemplate,
    check_subject_id,
)
from pura.keys import AKeys, BKeys
from pura.pipeline import Enroller, GalleryIndex, HelperCall, HelperChannel, Identifier, Recorder
from pura.pipeline.config import SearchConfig
from pura.pipeline.helper import CandidateServer, helper_steps
from pura.pipeline.helper import loopback as helper_loopback
from pura.pipeline.identify import still_wanted
from pura.protocols import candidates as cand
from pura.protocols.enroll import check_template
from pura.protocols.helper_guard import HelperGuard, Quotas, RequestLog
from pura.protocols.identify import Candidate, ExactConfig, ServerA, ServerB
from pura.protocols.messages import (
    AdmittedTemplate,
    PaillierQuery,
    PaillierTemplate,
    SealedQuery,
    SealedTemplate,
    query_upload_from_bytes,
    template_upload_from_bytes,
)
from pura.protocols.norms import decoy_template
from pura.protocols.population import mean_bound
from pura.protocols.preselect import (
    PreselectServer,
    ScoringBackend,
    parse_query,
)
from pura.protocols.sealed import check_sealed_shape
from pura.protocols.sealed_query import check_query_shape
from pura.protocols.steps import Step
from pura.service.chunks import pack_blobs, unpack_blobs

log = logging.getLogger("pura.node")

STEP_REFRESH = Step.REFRESH
STEP_PRESELECT = Step.PRESELECT


def _tid(hex_id: str) -> int:
    """Packing uses integer template ids; the store's are 128-bit random hex."""
    return int(hex_id, 16)


def _hex(template_id: int) -> str:
    return format(template_id, "032x")


@dataclass(frozen=True)
class TemplateUpload:
    """One enrolment as received from a client (ciphertext bytes only)."""

    subject_id: str
    request_id: str
    model_id: str
    dim: int
    paillier: bytes
    ckks_head: bytes

    def __repr__(self) -> str:
        return f"TemplateUpload(subject_id={self.subject_id!r}, request_id={self.request_id!r})"


@dataclass(frozen=True)
class QueryUpload:
    """One probe as received from a client."""

    model_id: str
    dim: int
    paillier: bytes
    ckks_head: bytes


@dataclass(frozen=True)
class EnrollOutcome:
    """Per-item result of :meth:`NodeA.enroll`; ``error`` set when the item was rejected."""

    request_id: str
    template_id: str
    already_enrolled: bool
    error: PuraError | None = None

    @classmethod
    def of(cls, result: EnrollResult) -> EnrollOutcome:
        return cls(result.request_id, result.template_id, result.already_enrolled)

    @property
    def label(self) -> str:
        if self.error is not None:
            return f"rejected: {type(self.error).__name__}"
        return "already-enrolled" if self.already_enrolled else "ok"


@dataclass(frozen=True)
class Receipt:
    """Deletion receipt."""

    collection: str
    subject_id: str
    templates_removed: int
    blocks_refreshed: int
    deleted_at: str
    audit_entry_hash: str


class _IdleWorker(abc.ABC):
    """A daemon thread doing small units of precomputation only while no request is in flight.

    Why one mechanism for both servers: gmpy2 holds the GIL, so background exponentiations
    would compete with a query's. The worker checks :meth:`online` between units (each a few
    milliseconds at most) and goes back to sleep as soon as a request starts; requests wake
    it again when they end. Subclasses say what a unit is (:meth:`_one_unit`).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._busy = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
            self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @contextlib.contextmanager
    def online(self) -> Iterator[None]:
        """Mark a request in flight: no new unit starts until it (and every other) ends."""
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
            self._wake.set()

    @abc.abstractmethod
    def _one_unit(self) -> bool:
        """Do one unit of offline work; False when there is nothing left (or a request runs)."""

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=5.0)
            self._wake.clear()
            try:
                while not self._stop.is_set() and self._one_unit():
                    pass
            except PuraError:
                log.exception("%s: offline precomputation failed; computing online instead",
                              self._name)


class OfflineWork(_IdleWorker):
    """A's offline precomputation (an :class:`_IdleWorker`): its pools of encryption randomness
    and masks, computed between queries so that they cost the query nothing.

    A no longer prepares partial decryptions of its stored templates: identification runs on
    the copies B serves, which A has never seen (issue 11), so those would never be used; 1:1
    verification and galleries of at most ``top_k`` compute them online.
    """

    def __init__(self, server_a: ServerA, top_k: int) -> None:
        super().__init__("pura-offline")
        self._server_a = server_a
        self._top_k = top_k

    def _one_unit(self) -> bool:
        """Do one unit of offline work; False when there is nothing left."""
        for candidates in range(1, self._top_k + 1):  # small steps, yielding in between
            with self._lock:
                if self._busy:
                    return False
            self._server_a.refill(candidates)  # no-op when the pools are full enough
        return False


class NodeA:
    """Server A's core."""

    def __init__(
        self,
        keys: AKeys,
        store: GalleryStore,
        audit: AuditLog,
        helper: HelperCall,
        pca: PCARotation,
        *,
        search: SearchConfig | None = None,
        recorder: Recorder | None = None,
        engine: LocalEngine = SERIAL,
        rng: random.Random | None = None,
        scorer: ScoringBackend | None = None,
    ) -> None:
        self.keys = keys
        self.params: ParameterSet = keys.public.parameters
        self.ctx: CKKSContext = keys.public.ckks
        self.store = store
        self.audit = audit
        # The default threshold is the model's: a squared distance means nothing across networks.
        self.search = (search if search is not None
                       else SearchConfig.for_model(self.params.encoding.model_id))
        #: Every A→B call, CKKS and Paillier steps alike, goes through this one channel.
        self.helper = HelperChannel(helper, recorder, ticketed=True)  # NodeB guards every step
        self.pca = pca
        self.rng = rng if rng is not None else secrets.SystemRandom()
        exact = ExactConfig.for_key(
            keys.public.paillier, self.params.encoding.dim, self.params.encoding.scale_bits
        )
        # Wolf check of templates at admission (issue 13, item 14): the public population mean
        # of the parameter set's model, rotated like the templates; no mean, no start.
        wolf = mean_bound(self.params.encoding.model_id, pca, self.params.encoding.scale_bits)
        self.exact = dataclasses.replace(exact, norms=exact.norms.with_mean(wolf))
        self.server_a = ServerA(keys.share, self.exact, self.helper.paillier(keys.public.paillier),
                                engine=engine, rng=self.rng)
        self._galleries: dict[str, GalleryIndex] = {}
        self._galleries_lock = threading.Lock()
        #: Template ids dropped because their head could not be placed (enroll reports them).
        self.dropped: set[str] = set()
        self.identifications = 0
        #: Collections whose copies at B may lag A's rows (a forward failed): synced before
        #: their next query.
        self._copies_dirty: set[str] = set()
        #: Collections whose gallery changed since their last re-layout (issue 12): re-laid
        #: out before their next identification.
        self._layout_stale: set[str] = set()
        #: Pending templates whose CKKS heads B derived (sealed uploads): placed without a
        #: range check. In memory only: after a restart their refresh checks them (they pass).
        self._derived: set[int] = set()
        #: Identifications per collection since its last re-layout (``epoch_queries``).
        self._epoch_count: dict[str, int] = {}
        self.offline = OfflineWork(self.server_a, self.search.top_k)
        self.identifier = Identifier(self.server_a, self.ctx, self.params.encoding.head_dim,
                                     self.helper, self.search, self.rng, self.offline.online)
        self.enroller = Enroller(self.server_a, self.ctx, self.helper, self._decoys, self.rng,
                                 self.offline.online)
        #: Where preselection's block products run (None: in this process). Shared by every
        #: collection; each gets its own namespace of blocks in it.
        self.scorer = scorer

    def __repr__(self) -> str:
        return f"NodeA(key_id={self.keys.public.key_id})"

    def scorer_description(self) -> str:
        """One line for logs and status: which scorer runs preselection's block products."""
        return "in-process" if self.scorer is None else self.scorer.describe()

    def scorer_status(self) -> tuple[str, int, int]:
        """(kind, alive, expected) of the preselection scorer: "in-process" (A itself),
        "pool" (worker processes) or "ray" (shard actors), for the Stats RPC and ``pura status``."""
        if self.scorer is None:
            return "in-process", 1, 1
        kind = "ray" if "Ray" in self.scorer.describe() else "pool"
        alive, expected = self.scorer.alive()
        return kind, alive, expected

    # --- collections -----------------------------------------------------------------------

    def create_collection(
        self, name: str, *, threshold: int = 0, block_size: int = 0
    ) -> Collection:
        """A new collection. ``block_size``: templates per CKKS block (default: every slot).

        Why smaller blocks can be wanted: preselection parallelises over blocks, so a gallery
        that fits in one block gains nothing from a scoring pool or Ray shards; fewer templates
        per block spread it over several, at the price of more score ciphertexts per query
        (B's view has a fixed number of positions per block, most of them decoys)."""
        if not 0 <= block_size <= self.ctx.slot_count:
            raise ParameterError(f"block_size must be in 1..{self.ctx.slot_count}, "
                                 f"got {block_size}")
        tau = threshold or self.search.tau_units(self.params.encoding.scale_bits)
        return self.store.create_collection(
            name,
            parameter_set_id=self.params.id,
            key_id=self.keys.public.key_id,
            model_id=self.params.encoding.model_id,
            threshold=tau,
            block_size=block_size or self.ctx.slot_count,
        )

    def collection(self, name: str, *, parameter_set_id: str = "", key_id: str = "") -> Collection:
        """The collection, after checking the caller's parameter set and key (if given)."""
        coll = self.store.get_collection(name)
        if parameter_set_id and parameter_set_id != coll.parameter_set_id:
            raise ParameterError(
                f"collection {name!r} uses parameter set {coll.parameter_set_id}, "
                f"request was made under {parameter_set_id}"
            )
        if key_id and key_id != coll.key_id:
            raise KeyMismatchError(
                f"collection {name!r} uses key {coll.key_id}, request was made under {key_id}"
            )
        if coll.key_id != self.keys.public.key_id:
            raise KeyMismatchError(f"collection {name!r} belongs to key {coll.key_id}")
        return coll

    def _gallery(self, name: str) -> GalleryIndex:
        with self._galleries_lock:
            gallery = self._galleries.get(name)
            if gallery is None:
                layout = BlockLayout(self.ctx, self.params.encoding.head_dim, self._decoys)
                pool = None if self.scorer is None else self.scorer.view(name)
                gallery = GalleryIndex(layout, PreselectServer(self.ctx, layout, self.rng, pool))
                self._galleries[name] = gallery
                self._load(name, gallery)
                gallery.sync_scorer()
            return gallery

    # --- block persistence and reconciliation ----------------------------------------------

    def _load(self, name: str, gallery: GalleryIndex) -> None:
        for stored in self.store.blocks(name):
            meta, *cts = unpack_blobs(stored.data, what="stored block")
            block = HeadBlock.from_record(meta, cts)
            if block.version != stored.version:
                raise StoreError(f"block {stored.block_no} metadata/version mismatch")
            gallery.blocks[block.block_id] = block
        self._reconcile(name, gallery)

    def _decoys(self, n: int) -> npt.NDArray[np.float64]:
        return self.pca.sample_decoy_heads(n, self.params.encoding.head_dim, self.rng)

    def _reconcile(self, name: str, gallery: GalleryIndex) -> None:
        """Make the in-memory blocks agree with the rows (the truth) after a load or crash."""
        rows = self.store.slot_table(name)
        expected_live = {(b, s): _tid(t) for (b, s), (t, placed) in rows.items() if placed}
        for (b, s), (t, placed) in rows.items():
            block = gallery.blocks.get(b)
            if block is None:
                block = encrypt_block(self.ctx, b, self._decoys(self.ctx.slot_count))
                gallery.blocks[b] = block
            if placed and block.live.get(s) != _tid(t):
                raise StoreError(f"template placed in block {b} slot {s} but absent from it")
            if not placed and block.pending.get(s) != _tid(t):
                if s in block.live:
                    block.release(s)
                block.pending[s] = _tid(t)
        for block in gallery.blocks.values():
            for slot in list(block.live):
                if expected_live.get((block.block_id, slot)) != block.live[slot]:
                    block.release(slot)
            for slot in list(block.pending):
                row = rows.get((block.block_id, slot))
                if row is None or _tid(row[0]) != block.pending[slot]:
                    del block.pending[slot]

    def _reserve(self, gallery: GalleryIndex, results: Sequence[EnrollResult]) -> None:
        """Mark newly stored templates pending in their blocks (what :meth:`_reconcile` would
        conclude, without re-reading every row on each enrolment)."""
        for r in results:
            block = gallery.blocks.get(r.block_no)
            if block is None:
                block = encrypt_block(self.ctx, r.block_no, self._decoys(self.ctx.slot_count))
                gallery.blocks[r.block_no] = block
            if r.slot in block.live:  # a slot freed by a deletion whose refresh is pending
                block.release(r.slot)
            block.pending[r.slot] = _tid(r.template_id)

    def _refresh_dirty(self, name: str, gallery: GalleryIndex) -> int:
        """Refresh every block that has pending writes or slots to erase; returns the count."""
        done = 0
        with gallery.lock:
            try:
                for block_id in sorted(gallery.blocks):
                    block = gallery.blocks[block_id]
                    if block.needs_refresh:
                        self._refresh_one(name, block)
                        done += 1
            finally:  # blocks refreshed before a failure are published to the scorer too
                gallery.sync_scorer()
        return done

    def _refresh_one(self, name: str, block: HeadBlock) -> None:
        pending = {
            _tid(t.template_id): t
            for t in self.store.pending_templates(name)
            if t.block_no == block.block_id
        }
        heads = {tid: rec.head for tid, rec in pending.items() if rec.head is not None}
        unchecked = frozenset(t for t in heads if t in self._derived)
        try:
            written = self.enroller.refresh(block, heads, unchecked)
        except PeerUnavailableError:
            raise
        except PuraError as exc:
            # One enrolment's head must not stop every later refresh, identification and
            # restart (issue 13, item 1): find the heads that fail on their own, drop their
            # rows, and refresh the rest.
            log.warning("refresh of block %d failed (%s); isolating bad heads",
                        block.block_id, exc)
            for tid in self._bad_heads(block, sorted(heads.items()), unchecked):
                self._drop_pending(name, block, tid)
                heads.pop(tid)
            written = self.enroller.refresh(block, heads, unchecked)
        self._derived.difference_update(written)
        placed = [pending[t].template_id for t in written if t in pending]
        record = pack_blobs([block.metadata_bytes(), *block.ciphertexts])
        self.store.put_block(name, block.block_id, record, placed, version=block.version)

    def _bad_heads(
        self, block: HeadBlock, items: list[tuple[int, bytes]],
        unchecked: frozenset[int] = frozenset(),
    ) -> list[int]:
        """Template ids among ``items`` whose head makes a refresh fail, found by bisection
        on copies of ``block`` (the block itself is not touched). B being down is no head's
        fault and propagates."""
        if not items:
            return []
        probe = copy.deepcopy(block)
        wanted = {t for t, _ in items}
        probe.pending = {s: t for s, t in block.pending.items() if t in wanted}
        probe.clearing = set()
        try:
            self.enroller.refresh(probe, dict(items), unchecked)
            return []
        except PeerUnavailableError:
            raise
        except PuraError:
            if len(items) == 1:
                return [items[0][0]]
        half = len(items) // 2
        return (self._bad_heads(block, items[:half], unchecked)
                + self._bad_heads(block, items[half:], unchecked))

    def _drop_pending(self, name: str, block: HeadBlock, tid: int) -> None:
        """Remove a pending template whose head cannot be placed: its row, its slot
        reservation and B's copy; say so in the audit log (the enroller may have been told
        "enrolled" if the refresh ran after the acknowledgement)."""
        slot = next(s for s, t in block.pending.items() if t == tid)
        del block.pending[slot]
        self._derived.discard(tid)
        record = self.store.drop_pending_template(name, _hex(tid))
        self.dropped.add(_hex(tid))
        try:
            self._erase_copies(name, [(block.block_id, slot)])
        except ProtocolError as exc:  # B reconciles its copies with the rows at start-up
            log.warning("copy of dropped template not erased yet: %s", exc)
        self.audit.append(principal="server-a", action="enroll-dropped",
                          outcome="rejected: CKKS head out of range", collection=name,
                          target=record.subject_id if record is not None else "",
                          detail=_hex(tid))
        log.error("dropped template %s of collection %r: its CKKS head cannot be placed",
                  _hex(tid), name)

    def recover(self) -> int:
        """At start: reconcile and refresh every collection, reconcile B's copies with the
        rows, and start the offline worker; returns blocks refreshed."""
        total = 0
        for name in self.store.list_collections():
            try:
                total += self._refresh_dirty(name, self._gallery(name))
                self.sync_copies(name)
            except PeerUnavailableError:
                raise
            except PuraError as exc:  # one collection must not keep A from serving the others
                log.error("collection %r not recovered (retried on its next request): %s",
                          name, exc)
        self.offline.start()
        return total

    # --- enrolment -------------------------------------------------------------------------

    def _admit(self, coll: Collection, item: TemplateUpload) -> NewTemplate:
        """Shape checks before anything is stored (the values are encrypted)."""
        check_subject_id(item.subject_id)
        if not item.request_id or len(item.request_id) > 128:
            raise ProtocolError("request_id must be 1..128 characters")
        if item.model_id != coll.model_id:
            raise ParameterError(model_mismatch_message(coll.name, coll.model_id, item.model_id,
                                                        "enrolment"))
        if item.dim != self.params.encoding.dim:
            raise DimensionError(f"template of dimension {item.dim}, collection wants "
                                 f"{self.params.encoding.dim}")
        key = self.keys.public.paillier
        template = template_upload_from_bytes(key, item.paillier)
        if isinstance(template, SealedTemplate):
            check_sealed_shape(template, self.exact.template, key)
            if item.ckks_head:
                raise ProtocolError("a sealed upload carries no CKKS head: B derives it from "
                                    "the sealed vector")
        else:
            check_template(template, self.exact.template, key)
            self.ctx.head_from_bytes(item.ckks_head)
        return NewTemplate(item.subject_id, item.request_id, item.model_id, coll.parameter_set_id,
                           coll.key_id, item.paillier, item.ckks_head)

    def _admit_norms(
        self,
        admitted: list[NewTemplate],
        items: Sequence[TemplateUpload],
        outcomes: list[EnrollOutcome | None],
        derived: list[str],
    ) -> list[NewTemplate]:
        """Server-side norm admission (with B) before anything is stored.

        Why: the squared norm used in every later distance must be computed by the servers, and a
        template that is not the encoding of a unit vector (a "wolf" crafted to match everyone),
        or a unit vector closer to the public population mean than any real face (a wolf that
        matches many strangers; A's wolf check, :class:`~pura.protocols.norms.MeanBound`), must
        be refused at enrolment with a clear error, not stored and silently skipped later.
        What is stored is the :class:`AdmittedTemplate` (packed template + server-computed norm)
        and, for sealed uploads, the CKKS head B derived from the admitted vector.
        Updates ``outcomes`` in place for refused items, appends the request ids of items with
        derived heads to ``derived``, and returns the templates to store.
        """
        if not admitted:
            return admitted
        key = self.keys.public.paillier
        uploads = [template_upload_from_bytes(key, t.paillier) for t in admitted]
        verdicts = self._admit_isolating(uploads)
        heads = self._derived_heads(uploads, verdicts)
        pending = iter(zip(admitted, uploads, verdicts, heads, strict=True))
        kept: list[NewTemplate] = []
        for i, outcome in enumerate(outcomes):
            if outcome is not None:
                continue
            template, upload, verdict, head = next(pending)
            if not isinstance(verdict, AdmittedTemplate):
                outcomes[i] = EnrollOutcome(items[i].request_id, "", False, verdict)
            elif isinstance(upload, SealedTemplate):
                if head is None:
                    outcomes[i] = EnrollOutcome(items[i].request_id, "", False, ProtocolError(
                        "B could not derive the template's CKKS head from its sealed vector"))
                    continue
                kept.append(dataclasses.replace(template, paillier=verdict.to_bytes(),
                                                head=head))
                derived.append(template.request_id)
            else:
                kept.append(dataclasses.replace(template, paillier=verdict.to_bytes()))
        return kept

    def _derived_heads(
        self, uploads: Sequence[PaillierTemplate | SealedTemplate],
        verdicts: Sequence[AdmittedTemplate | PuraError],
    ) -> list[bytes | None]:
        """Per upload, the CKKS head B derived (admitted sealed uploads; ``None`` otherwise)."""
        wanted = [i for i, (u, v) in enumerate(zip(uploads, verdicts, strict=True))
                  if isinstance(u, SealedTemplate) and isinstance(v, AdmittedTemplate)]
        out: list[bytes | None] = [None] * len(uploads)
        if wanted:
            with self.offline.online():
                made = self.enroller.derive_heads(
                    [cast(SealedTemplate, uploads[i]) for i in wanted],
                    self.params.encoding.head_dim)
            for i, head in zip(wanted, made, strict=True):
                out[i] = head
        return out

    def _admit_isolating(
        self, uploads: Sequence[PaillierTemplate | SealedTemplate]
    ) -> list[AdmittedTemplate | PuraError]:
        """:meth:`Enroller.admit` for the batch; when the batch as a whole fails, halve it
        until the failing items stand alone, so one bad upload is one rejected item.

        Why: an upload can be well-formed enough to pass A's shape checks and still make a
        helper step fail for everything it travels with (a Paillier ``c = 2`` decrypts to
        slots B cannot unpack). Bisection costs ``O(bad · log n)`` extra rounds, only when an
        item is bad. B being down is not an item's fault: that error ends the batch.
        """
        try:
            return list(self.enroller.admit(uploads))
        except PeerUnavailableError:
            raise
        except PuraError as exc:
            if len(uploads) == 1:
                return [EmbeddingRangeError(f"template refused at admission: {exc}")]
        half = len(uploads) // 2
        return [*self._admit_isolating(uploads[:half]), *self._admit_isolating(uploads[half:])]

    def _check_request_ids(
        self, collection: str, admitted: list[NewTemplate], items: Sequence[TemplateUpload],
        outcomes: list[EnrollOutcome | None],
    ) -> list[NewTemplate]:
        """Reject, per item, request ids already naming another enrolment (issue 13, item 5);
        the store would refuse them too, but for the whole batch."""
        verdicts = iter(self.store.check_request_ids(collection, admitted))
        pending = iter(admitted)
        kept: list[NewTemplate] = []
        for i, outcome in enumerate(outcomes):
            if outcome is not None:
                continue
            template, error = next(pending), next(verdicts)
            if error is None:
                kept.append(template)
            else:
                outcomes[i] = EnrollOutcome(items[i].request_id, "", False, error)
        return kept

    def enroll(
        self, collection: str, items: Sequence[TemplateUpload], principal: str, *,
        parameter_set_id: str = "", key_id: str = "",
    ) -> list[EnrollOutcome]:
        """Validate each item, commit the valid ones in ONE transaction, refresh their blocks.

        Returns one :class:`EnrollOutcome` per item, in order; an invalid item is rejected
        with its error and does not stop the others (BulkEnroll's per-item status).
        """
        coll = self.collection(collection, parameter_set_id=parameter_set_id, key_id=key_id)
        outcomes: list[EnrollOutcome | None] = []
        admitted: list[NewTemplate] = []
        for item in items:
            try:
                admitted.append(self._admit(coll, item))
                outcomes.append(None)
            except PuraError as exc:
                outcomes.append(EnrollOutcome(item.request_id, "", False, exc))
        admitted = self._check_request_ids(collection, admitted, items, outcomes)
        derived: list[str] = []
        admitted = self._admit_norms(admitted, items, outcomes, derived)
        gallery = self._gallery(collection)
        with self.offline.online(), gallery.lock:
            results = self.store.add_templates(collection, admitted) if admitted else []
            stored = iter(results)
            final = [o if o is not None else EnrollOutcome.of(next(stored)) for o in outcomes]
            fresh = [r for r in results if not r.already_enrolled]
            made_by_b = set(derived)
            self._derived.update(_tid(r.template_id) for r, a in zip(results, admitted, strict=True)
                                 if not r.already_enrolled and a.request_id in made_by_b)
            self._reserve(gallery, fresh)
            if fresh:
                self._layout_stale.add(collection)
            self._forward_copies(collection, [
                (r.block_no, r.slot, r.template_id, a.paillier)
                for r, a in zip(results, admitted, strict=True) if not r.already_enrolled
            ])
            for outcome, item in zip(final, items, strict=True):
                self.audit.append(principal=principal, action="enroll", outcome=outcome.label,
                                  collection=collection, target=item.subject_id,
                                  detail=outcome.template_id)
            try:
                self._refresh_dirty(collection, gallery)
            except (ProtocolError, StoreError) as exc:
                # Committed templates stay pending; the next enrolment or restart refreshes them.
                log.warning("block refresh deferred: %s", exc)
        return [_unless_dropped(o, self.dropped) for o in final]

    # --- B's candidate copies (issue 11) ----------------------------------------------------

    def namespace(self, collection: str) -> str:
        """Where B files this collection's copies: this store's instance and the collection."""
        return f"{self.store.instance_id}/{collection}"

    def _forward_copies(
        self, collection: str, items: Sequence[tuple[int, int, str, bytes]]
    ) -> None:
        """Send B a re-randomised copy of each newly stored template (block, slot, id,
        admitted bytes), with its label under the joint key, before the enrolment is
        acknowledged. If B cannot store them, the rows stay and :meth:`sync_copies` sends the
        copies again at the next start (B reports what it lacks)."""
        if not items:
            return
        key = self.keys.public.paillier
        pool = self.server_a.pool
        blocks = self._gallery(collection).blocks
        copies = tuple(
            cand.make_copy(AdmittedTemplate.from_bytes(key, blob), _tid(tid), (b, s_),
                           _copy_tag(blocks, b, tid), pool)
            for b, s_, tid, blob in items
        )
        request = cand.CopyPut(self.namespace(collection), copies)
        try:
            self.helper(Step.COPY_PUT, request.to_bytes())
        except ProtocolError as exc:
            self._copies_dirty.add(collection)
            log.warning("candidate copies deferred to the next sync with B: %s", exc)

    def sync_copies(self, collection: str) -> int:
        """Reconcile B's copies with A's rows (start-up): B drops copies of positions A does not
        hold, A re-sends the ones B lacks. Returns how many were re-sent."""
        records = self.store.all_templates(collection)
        blocks = self._gallery(collection).blocks
        entries = tuple(((r.block_no, r.slot), _copy_tag(blocks, r.block_no, r.template_id))
                        for r in records)
        request = cand.CopySync(self.namespace(collection), entries)
        reply = cand.CopySyncReply.from_bytes(self.helper(Step.COPY_SYNC,
                                                                request.to_bytes()))
        missing = set(reply.missing)
        resend = [(r.block_no, r.slot, r.template_id, r.paillier) for r in records
                  if (r.block_no, r.slot) in missing]
        for start in range(0, len(resend), 64):
            self._forward_copies(collection, resend[start:start + 64])
        if resend or reply.dropped:
            log.info("copies at B for %s: %d re-sent, %d dropped", collection, len(resend),
                     reply.dropped)
        return len(resend)

    def _erase_copies(self, collection: str, positions: Sequence[tuple[int, int]]) -> int:
        request = cand.CopyErase(self.namespace(collection), tuple(positions))
        return cand.Ack.from_bytes(self.helper(Step.COPY_ERASE, request.to_bytes())).count

    # --- per-epoch secret re-layout (issue 12) ---------------------------------------------

    def relayout(self, collection: str) -> int:
        """Start a new layout epoch: every block's slots secretly permuted (with B, one round
        per block, :mod:`pura.protocols.relayout`), A's rows moved in the same transaction
        as each block, and B's copies replaced by fresh re-randomised copies under new tags at
        the new positions. Returns the blocks re-laid out.

        Why after every gallery change: B must map its ranking to slots, so within one layout
        it aligns every query's view; a new secret layout per gallery version means views of
        different versions do not align (``b_slot_alignment``). Identification calls this
        before its first preselection after a change (:meth:`identify`), so no query runs
        on a layout older than the gallery it searches."""
        gallery = self._gallery(collection)
        done = 0
        with gallery.lock:
            self._refresh_dirty(collection, gallery)
            try:
                for block_id in sorted(gallery.blocks):
                    block = gallery.blocks[block_id]
                    if block.needs_refresh or block.seeded:
                        continue  # a refresh that failed again; the next change retries
                    self._relayout_one(collection, block)
                    done += 1
            finally:
                gallery.sync_scorer()
            try:
                self.sync_copies(collection)  # B drops last epoch's copies, A re-sends them
            except ProtocolError as exc:
                self._copies_dirty.add(collection)
                log.warning("copies at B re-sent at the next query: %s", exc)
            self._layout_stale.discard(collection)
            self._epoch_count[collection] = 0
        return done

    def _new_epoch_if_due(self, collection: str) -> None:
        """Before an identification: re-lay out if the gallery changed (or the epoch's query
        count is used up), once even when queries race, and count this query in the epoch.

        A failed re-layout does not take the collection down: the query runs on the current
        layout (B's own epoch bound, when set, still refuses it once the epoch is used up) and
        the next identification tries again. B being unreachable fails the query as usual."""
        gallery = self._gallery(collection)
        with gallery.lock:
            if self._epoch_over(collection):
                try:
                    self.relayout(collection)
                except PeerUnavailableError:
                    raise
                except PuraError as exc:
                    log.error("re-layout of %r failed (%s); this query runs on the current "
                              "layout", collection, exc)
            self._epoch_count[collection] = self._epoch_count.get(collection, 0) + 1

    def _epoch_over(self, collection: str) -> bool:
        """Must the next identification of ``collection`` run on a fresh layout?"""
        bound = self.search.epoch_queries
        return collection in self._layout_stale or (
            bound > 0 and self._epoch_count.get(collection, bound) >= bound)

    def _relayout_one(self, collection: str, block: HeadBlock) -> None:
        live = set(block.live)
        try:
            source = self.enroller.relayout(block, self.namespace(collection))
            moves = {int(old): new for new, old in enumerate(source.tolist()) if int(old) in live}
            record = pack_blobs([block.metadata_bytes(), *block.ciphertexts])
            self.store.put_block(collection, block.block_id, record, [], version=block.version,
                                 moves=moves)
        except BaseException:
            # The block in memory may be ahead of the store: reload it from the store (truth).
            with self._galleries_lock:
                self._galleries.pop(collection, None)
            raise

    # --- matching --------------------------------------------------------------------------

    def _parse_query(self, coll: Collection, query: QueryUpload) -> PaillierQuery | SealedQuery:
        if query.model_id != coll.model_id:
            raise ParameterError(model_mismatch_message(coll.name, coll.model_id, query.model_id))
        if query.dim != self.params.encoding.dim:
            raise DimensionError(f"query of dimension {query.dim}, collection wants "
                                 f"{self.params.encoding.dim}")
        key = self.keys.public.paillier
        parsed = query_upload_from_bytes(key, query.paillier)
        if isinstance(parsed, SealedQuery):
            if self.keys.public.seal is None:
                raise ParameterError("this key set has no sealing key: send the query as "
                                     "ciphertexts (a client made for newer keys)")
            check_query_shape(parsed, key)
        else:
            check_template(parsed, self.exact.template, key)
        return parsed

    def candidates(self, collection: str) -> _StoreSource:
        """A's stored templates of ``collection`` for the pipeline (prepared ones preferred)."""
        return _StoreSource(self, collection)

    def identify(
        self, collection: str, query: QueryUpload, principal: str, *,
        parameter_set_id: str = "", key_id: str = "", alive: Callable[[], bool] | None = None,
    ) -> str | None:
        """1:N. Returns the matched subject id or None ("no match" is a result). ``alive``:
        the call's liveness, checked between stages (:func:`~pura.pipeline.identify.
        still_wanted`)."""
        coll = self.collection(collection, parameter_set_id=parameter_set_id, key_id=key_id)
        parsed = self._parse_query(coll, query)
        head = unpack_blobs(query.ckks_head, what="query head",
                            max_items=self.params.encoding.head_dim)
        self._refresh_dirty(collection, self._gallery(collection))
        self._new_epoch_if_due(collection)
        gallery = self._gallery(collection)
        if collection in self._copies_dirty:
            with gallery.lock:
                self.sync_copies(collection)
                self._copies_dirty.discard(collection)
        still_wanted(alive, "preselection")
        result = self.identifier.identify(gallery, parsed, head, coll.threshold,
                                          self.candidates(collection), alive)
        self.identifications += 1
        self.audit.append(principal=principal, action="identify", collection=collection,
                          outcome="match" if result.matched else "no-match",
                          target=result.label or "")
        return result.label if result.matched else None

    def verify(
        self, collection: str, subject_id: str, query: QueryUpload, principal: str, *,
        parameter_set_id: str = "", key_id: str = "", alive: Callable[[], bool] | None = None,
    ) -> bool:
        """1:1 against the subject's templates.

        An unknown subject is answered exactly like a non-match ("no match", same reply, same
        audit entry) after the same work: the same store lookup, then the exact stage against
        A's decoy template (:func:`~pura.protocols.norms.decoy_template`: a stored template's
        shape and cost, parsed from bytes like one, and at a distance above every threshold).
        Why: NOT_FOUND, or a faster "no match", would let an identifier test who is enrolled
        without a face (issue 13, item 13). A subject with several templates still costs one
        exact-stage candidate per template (docs/security.md)."""
        coll = self.collection(collection, parameter_set_id=parameter_set_id, key_id=key_id)
        parsed = self._parse_query(coll, query)
        # Verify does not use the head, but a query is one object: garbage in half of it is a
        # malformed query, refused like in Identify (issue 13, item 8).
        parse_query(self.ctx, unpack_blobs(query.ckks_head, what="query head",
                                           max_items=self.params.encoding.head_dim),
                    self.params.encoding.head_dim)
        records = self.store.templates_of_subject(collection, subject_id)
        key = self.keys.public.paillier
        blobs = [r.paillier for r in records] or [self._decoy_bytes]
        templates = [AdmittedTemplate.from_bytes(key, b) for b in blobs]
        still_wanted(alive, "the exact stage")
        decided = self.identifier.verify(parsed, subject_id, templates, coll.threshold)
        matched = decided and bool(records)
        self.audit.append(principal=principal, action="verify", collection=collection,
                          target=subject_id, outcome="match" if matched else "no-match")
        return matched

    @functools.cached_property
    def _decoy_bytes(self) -> bytes:
        """A's decoy template for unknown subjects (made once; reused like a stored one)."""
        key = self.keys.public.paillier
        return decoy_template(self.exact.template, key, RandomnessPool(key)).to_bytes()

    # --- deletion --------------------------------------------------------------------------

    def delete(self, collection: str, subject_id: str, principal: str) -> Receipt:
        self.collection(collection)
        gallery = self._gallery(collection)
        with gallery.lock:
            deleted = self.store.delete_subject(collection, subject_id)
            self._reconcile(collection, gallery)
            refreshed = self._refresh_dirty(collection, gallery)
            self.store.checkpoint()
            erased = self._erase_copies(collection, deleted.slots) if deleted.slots else 0
            if deleted.slots:
                self._layout_stale.add(collection)
        when = datetime.now(UTC)
        entry = self.audit.append(principal=principal, action="delete", outcome="ok",
                                  collection=collection, target=subject_id,
                                  detail=f"{len(deleted.template_ids)} templates, "
                                         f"{erased} copies erased at B", when=when)
        return Receipt(collection, subject_id, len(deleted.template_ids), refreshed,
                       when.isoformat(timespec="seconds"), entry)


def _copy_tag(blocks: Mapping[int, HeadBlock], block_no: int, template_id: str) -> str:
    """The tag B files a template's copy under: its block's current layout epoch decides."""
    block = blocks.get(block_no)
    return block.copy_tag(template_id) if block is not None else copy_tag(template_id, "")


def _unless_dropped(outcome: EnrollOutcome, dropped: set[str]) -> EnrollOutcome:
    """``outcome``, or a rejection when its template was dropped by the refresh just run."""
    if outcome.error is None and outcome.template_id in dropped:
        return EnrollOutcome(outcome.request_id, "", False, EmbeddingRangeError(
            "the template's CKKS head is out of range; it was dropped, not placed"))
    return outcome


@dataclass(frozen=True)
class _StoreSource:
    """:class:`~pura.pipeline.TemplateSource` over A's store: templates by packed id (galleries
    of at most ``top_k``), and the subject of an opened label."""

    node: NodeA
    collection: str

    @property
    def namespace(self) -> str:
        return self.node.namespace(self.collection)

    def subject_of(self, template_id: int) -> str:
        records = self.node.store.templates_by_id(self.collection, [_hex(template_id)])
        if not records:  # deleted while the query ran: the answer is "no match" from now on
            raise NotFoundError("the matched template was deleted during the query")
        return records[0].subject_id

    def candidates(self, template_ids: Sequence[int]) -> list[tuple[str, Candidate]]:
        records = self.node.store.templates_by_id(self.collection, [_hex(t) for t in template_ids])
        key = self.node.keys.public.paillier
        return [(t.subject_id, AdmittedTemplate.from_bytes(key, t.paillier)) for t in records]


class HelperOffline(_IdleWorker):
    """B's offline work (an :class:`_IdleWorker`): keeps its randomness pool stocked for
    ``queries`` queries of ``top_k``.

    Why: every ciphertext B returns is a fresh encryption, and a fresh Paillier randomiser is a
    fixed-base exponentiation (~1.3 ms at 3072 bits, ~160 per query). Computed between requests
    they cost the query nothing; one randomiser is one unit.
    """

    def __init__(self, server_b: ServerB, top_k: int, queries: int = 2) -> None:
        super().__init__("pura-b-offline")
        self._server_b = server_b
        self._target = queries * server_b.pool_demand(top_k)

    def serving(self, handler: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
        """``handler`` run as online work (the refill pauses while any one runs)."""

        def run(payload: bytes) -> bytes:
            with self.online():
                return handler(payload)

        return run

    def _one_unit(self) -> bool:
        with self._lock:
            if self._busy or len(self._server_b.pool) >= self._target:
                return False
        self._server_b.pool.refill(1)
        return True


class NodeB:
    """Server B's core: the Paillier helper steps and the CKKS block refresh, every one behind
    B's own defences (:class:`~pura.protocols.helper_guard.HelperGuard`: per-query tickets and
    quotas, refusals counted, every request in B's hash-chained request log).

    ``request_log``: B's log (default: ``b-requests.log`` beside the copy store, i.e. in B's
    data directory — durable, append-only, re-verified at start)."""

    def __init__(
        self, keys: BKeys, copies: CopyStore, *, engine: LocalEngine = SERIAL,
        search: SearchConfig | None = None, request_log: RequestLog | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self.keys = keys
        params = keys.public.parameters
        exact = ExactConfig.for_key(
            keys.public.paillier, params.encoding.dim, params.encoding.scale_bits
        )
        self.server_b = ServerB(keys.share, exact, engine=engine, seal=keys.seal)
        self.search = search if search is not None else SearchConfig()
        self.offline = HelperOffline(self.server_b, self.search.top_k)
        #: B's own copies of every admitted template, served as candidates (issue 11).
        self.candidates = CandidateServer(self.server_b, keys.ckks_secret, copies, self.search)
        self.request_log = (request_log if request_log is not None
                            else AuditLog(copies.path.parent / "b-requests.log"))
        self.guard = HelperGuard(
            helper_steps(self.server_b, keys.ckks_secret, self.candidates,
                         head_dim=params.encoding.head_dim),
            keys.public.paillier,
            quotas or Quotas(view_k=self.search.view_k, top_k=self.search.top_k,
                             epoch_queries=self.search.epoch_queries),
            self.request_log, ckks_slots=keys.ckks_secret.slot_count,
        )

    def __repr__(self) -> str:
        return f"NodeB(key_id={self.keys.public.key_id})"

    def handlers(self) -> dict[str, Callable[[bytes], bytes]]:
        """``step -> (request bytes -> reply bytes)`` for the helper servicer; serving them
        starts B's offline refill (a daemon thread, see :class:`HelperOffline`)."""
        self.offline.start()
        steps = self.guard.handlers()
        return {step: self.offline.serving(handler) for step, handler in steps.items()}


def loopback(node_b: NodeB) -> HelperCall:
    """In-process A -> B calls through the byte encodings (tests, single-process tools)."""
    return helper_loopback(node_b.handlers())


__all__ = [
    "STEP_PRESELECT",
    "STEP_REFRESH",
    "EnrollOutcome",
    "HelperOffline",
    "NodeA",
    "NodeB",
    "QueryUpload",
    "Receipt",
    "TemplateUpload",
    "loopback",
]
