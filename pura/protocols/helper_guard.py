"""B's own defences against a deviating A: per-query quotas, protocol order, a request log.

The protocols are designed for a semi-honest A. Each of B's steps, taken alone, is an oracle
when A deviates (issue 12): the threshold round opened whatever A placed in the chosen slot, the
norm check answered up to 8,192 A-chosen comparisons per call, preselection accepted any ``k`` up
to every slot. :class:`HelperGuard` sits in front of B's step handlers and answers only what an
honest A's query needs, *per query*:

=====================  ====================================================================
step                   allowed per query ticket (:class:`~pura.protocols.tickets.TicketKind`)
=====================  ====================================================================
``norm_square``        once; one vector, no repacking (query) / 1..``max_enrol_batch``
                       vectors with repacking (enrolment ticket)
``sealed_query``       query tickets only, instead of ``norm_square``: once, one box
                       (:mod:`~pura.protocols.sealed_query`); B decrypts nothing, it opens
                       the box sealed to it and re-encrypts what it checked
``sealed_admit``       enrolment tickets only: 1..``max_enrol_batch`` sealed templates in all
                       (:mod:`~pura.protocols.sealed`); B decrypts only the packed cross
                       terms it masked itself
``norm_check``         once, after ``norm_square``; exactly two comparisons per vector B
                       found valid there (enrolment: two or three per vector — A's wolf
                       check against the public population mean rides in the same round —
                       in as many lanes as A runs, never more than three per valid vector
                       in total)
``ckks.preselect``     once (query ticket), before the distance round; ``k`` equal to B's own
                       ``view_k`` (capped at the slots B is shown); with ``epoch_queries``,
                       at most that many per block between two re-layouts of it
``blinded_product``    once, after ``norm_check``; 1..``max_candidates`` candidates (this
                       fixes the query's ``k``)
``argmin``             once, after ``blinded_product``, over exactly ``k`` candidates
``compare_select``     instead of ``argmin``: tournament rounds of exactly ⌊m/2⌋ comparisons
                       while ``m > 1`` entries remain (m starts at ``k``)
``threshold``          once, after the argmin is complete; the opened value must lie in
                       ``[0, k)`` (:func:`~pura.protocols.secure_min.helper_threshold`)
``open_label``         once, after the threshold round, and only for the candidate set B
                       served to this ticket's preselection; closes the ticket
=====================  ====================================================================

Anything else — an unknown or expired ticket, a step out of order, a second opening, a count
that differs — is refused with :class:`~pura.errors.HelperRefusedError` *before* B decrypts
anything, counted in :attr:`HelperGuard.refusals`, and logged. Tickets are issued at a bounded
rate, so the quotas bound what a deviating A extracts per unit of time, not just per ticket.

Every request, answered or refused, gets one entry in B's append-only, hash-chained log
(:class:`pura.audit_log.AuditLog` under B's data directory, written and ``fsync``\\ ed before the
reply leaves B): the step, the ticket, the sizes and item counts, and the SHA-256 of the request
bytes — never the bytes themselves. An auditor holding A's record of the exchange (the pipeline's
recorder) can match every entry by digest.

What this does not do: B cannot see *what* a request's ciphertexts encrypt before decrypting
them, so within its quota a deviating A still chooses the values. The quotas bound that to the
one query's worth of answers an honest A gets anyway (docs/security.md, "B's defences").
"""

from __future__ import annotations

import hashlib
import random
import secrets
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pura.crypto.paillier import PublicKey
from pura.errors import HelperRefusedError, ProtocolError, PuraError
from pura.protocols.candidates import LabelOpenRequest
from pura.protocols.messages import (
    ArgminRequest,
    BlindedProductRequest,
    CompareRequest,
    NormCheckRequest,
    NormReply,
    NormRequest,
    SealedAdmitReply,
    SealedAdmitRequest,
    SealedQueryRequest,
    ThresholdRequest,
)
from pura.protocols.norms import MAX_CHECKS_PER_VECTOR
from pura.protocols.preselect import PreselectRequest
from pura.protocols.relayout import RelayoutRequest
from pura.protocols.steps import Step
from pura.protocols.tickets import TICKET_BYTES, TICKET_STEP, TicketKind, unseal

#: The principal B writes in its log: B serves exactly one peer (A, over mTLS).
PEER = "server-a"
StepHandler = Callable[[bytes], bytes]


class RequestLog(Protocol):
    """Where B records requests (:class:`pura.audit_log.AuditLog` has this method)."""

    def append(
        self, *, principal: str, action: str, outcome: str, collection: str = "",
        target: str = "", detail: str = "",
    ) -> str: ...


@dataclass(frozen=True)
class Quotas:
    """B's own limits (from B's configuration; nothing here is taken from A's requests)."""

    #: Positions B ranks in preselection and copies it serves (B's ``SearchConfig``).
    view_k: int
    top_k: int = 0
    #: Largest candidate count of one exact stage (``k`` of the distance round; verification
    #: runs over a subject's templates, which may be more than ``top_k``).
    max_candidates: int = 64
    #: Largest enrolment batch admitted under one ticket (A's ``ADMIT_BATCH``).
    max_enrol_batch: int = 32
    #: Tickets B holds open at once (oldest dropped first) and how long one stays valid.
    max_open_tickets: int = 1024
    ticket_ttl_s: float = 600.0
    #: Tickets issued per rolling minute: bounds the whole oracle budget per unit of time.
    tickets_per_minute: int = 600
    #: Preselections per block between two re-layouts of it (issue 12; 0 = no bound): B
    #: refuses to rank a block whose layout has served this many, so that the views B can
    #: align never exceed one epoch's worth whatever A does.
    epoch_queries: int = 0

    def __post_init__(self) -> None:
        if min(self.view_k, self.max_candidates, self.max_enrol_batch, self.max_open_tickets,
               self.tickets_per_minute) < 1 or self.ticket_ttl_s <= 0 or self.top_k < 0 \
                or self.epoch_queries < 0:
            raise ProtocolError(f"every quota must be positive: {self}")


@dataclass
class _Ticket:
    """B's bookkeeping for one query: which steps ran, and the counts they fixed."""

    kind: TicketKind
    issued: float
    done: set[str] = field(default_factory=set)
    vectors: int = 0  # vectors admitted to norm rounds so far
    valid: int = 0  # of which B found valid (answered norm rounds)
    checked: int = 0  # norm comparisons answered so far (2, enrolment 3, per valid vector)
    k: int = 0  # set by blinded_product
    remaining: int = 0  # argmin entries left (1 = minimum known)
    served: bytes = b""  # the preselection request whose candidates B served


def _parsers(key: PublicKey) -> dict[str, Callable[[bytes], Any]]:
    """How B reads each ticketed step's request (to check it before running it)."""
    return {
        Step.NORM_SQUARE: lambda p: NormRequest.from_bytes(key, p),
        Step.NORM_CHECK: lambda p: NormCheckRequest.from_bytes(key, p),
        Step.SEALED_ADMIT: lambda p: SealedAdmitRequest.from_bytes(key, p),
        Step.SEALED_QUERY: lambda p: SealedQueryRequest.from_bytes(key, p),
        Step.BLINDED_PRODUCT: lambda p: BlindedProductRequest.from_bytes(key, p),
        Step.ARGMIN: lambda p: ArgminRequest.from_bytes(key, p),
        Step.COMPARE: lambda p: CompareRequest.from_bytes(key, p),
        Step.THRESHOLD: lambda p: ThresholdRequest.from_bytes(key, p),
        Step.PRESELECT: PreselectRequest.from_bytes,
        Step.OPEN_LABEL: LabelOpenRequest.from_bytes,
    }


class HelperGuard:
    """B's step handlers behind tickets, quotas and the request log (module docstring).

    ``steps``: B's unguarded handlers (:func:`pura.pipeline.helper.helper_steps`). The query
    steps among them are ticketed and checked; the others (block refresh, copy maintenance) are
    A's gallery upkeep, not part of a query, and are logged only.
    """

    def __init__(
        self,
        steps: Mapping[str, StepHandler],
        key: PublicKey,
        quotas: Quotas,
        log: RequestLog,
        *,
        ckks_slots: int = 0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.steps = dict(steps)
        self.key = key
        self.quotas = quotas
        self.log = log
        self._slots = ckks_slots
        self._rng = rng if rng is not None else secrets.SystemRandom()
        self._clock = clock
        self._lock = threading.Lock()
        self._tickets: OrderedDict[bytes, _Ticket] = OrderedDict()
        self._issued: deque[float] = deque()
        #: Refused requests per step (exported as ``pura_b_quota_refusals_total``).
        self.refusals: Counter[str] = Counter()
        #: Preselections per (namespace, block) since that block's last re-layout.
        self._epoch_use: Counter[tuple[str, int]] = Counter()

    def __repr__(self) -> str:
        return f"HelperGuard(open_tickets={len(self._tickets)}, refusals={self.refusals_total})"

    @property
    def refusals_total(self) -> int:
        return sum(self.refusals.values())

    # --- handlers ------------------------------------------------------------------------------

    def handlers(self) -> dict[str, StepHandler]:
        """``step -> (request bytes -> reply bytes)``: what B serves, every step guarded."""
        parsers = _parsers(self.key)
        out: dict[str, StepHandler] = {TICKET_STEP: self._issue}
        for step, run in self.steps.items():
            parse = parsers.get(step)
            out[step] = (self._guarded(str(step), parse, run) if parse is not None
                         else self._logged(str(step), run))
        return out

    def _issue(self, payload: bytes) -> bytes:
        """Open a ticket of the kind A names (rate-limited)."""
        digest = hashlib.sha256(payload).hexdigest()
        try:
            try:
                kind = TicketKind(payload.decode("ascii"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise HelperRefusedError("unknown ticket kind") from exc
            with self._lock:
                ticket = self._open(kind)
        except HelperRefusedError as exc:
            self._refuse(TICKET_STEP, "", len(payload), digest, "", exc)
            raise
        self.log.append(principal=PEER, action=TICKET_STEP, outcome="ok", target=ticket.hex(),
                        detail=f"kind={kind.value} sha256={digest}")
        return ticket

    def _open(self, kind: TicketKind) -> bytes:
        now = self._clock()
        self._expire(now)
        while self._issued and self._issued[0] <= now - 60.0:
            self._issued.popleft()
        if len(self._issued) >= self.quotas.tickets_per_minute:
            raise HelperRefusedError(
                f"ticket rate above {self.quotas.tickets_per_minute} per minute")
        while len(self._tickets) >= self.quotas.max_open_tickets:
            self._tickets.popitem(last=False)
        ticket = self._rng.randbytes(TICKET_BYTES)
        self._tickets[ticket] = _Ticket(kind, now)
        self._issued.append(now)
        return ticket

    def _expire(self, now: float) -> None:
        ttl = self.quotas.ticket_ttl_s
        while self._tickets:
            first = next(iter(self._tickets.values()))
            if first.issued > now - ttl:
                return
            self._tickets.popitem(last=False)

    def _guarded(
        self, step: str, parse: Callable[[bytes], Any], run: StepHandler,
    ) -> StepHandler:
        def handle(data: bytes) -> bytes:
            ticket_id, digest, shape = b"", hashlib.sha256(data).hexdigest(), ""
            try:
                ticket_id, payload = unseal(data)
                digest = hashlib.sha256(payload).hexdigest()
                request = parse(payload)
                shape = _shape(request)
                with self._lock:
                    ticket = self._admit(step, ticket_id, request)
                raw = run(payload)
                if step in (Step.NORM_SQUARE, Step.SEALED_ADMIT, Step.SEALED_QUERY):
                    reply = SealedAdmitReply if step == Step.SEALED_ADMIT else NormReply
                    valid = sum(reply.from_bytes(self.key, raw).valid)
                    with self._lock:
                        ticket.valid += valid
            except HelperRefusedError as exc:
                self._refuse(step, ticket_id.hex(), len(data), digest, shape, exc)
                raise
            except PuraError as exc:
                self.log.append(principal=PEER, action=step, target=ticket_id.hex(),
                                outcome=f"error: {type(exc).__name__}",
                                detail=f"req={len(data)} {shape} sha256={digest}")
                raise
            self.log.append(principal=PEER, action=step, outcome="ok", target=ticket_id.hex(),
                            detail=f"req={len(data)} rep={len(raw)} {shape} sha256={digest}")
            return raw

        return handle

    def _logged(self, step: str, run: StepHandler) -> StepHandler:
        """A step outside any query (block refresh, copy upkeep): logged, not ticketed."""

        def handle(payload: bytes) -> bytes:
            digest = hashlib.sha256(payload).hexdigest()
            try:
                reply = run(payload)
                if step == Step.RELAYOUT:
                    self._new_epoch(payload)
            except PuraError as exc:
                self.log.append(principal=PEER, action=step,
                                outcome=f"error: {type(exc).__name__}",
                                detail=f"req={len(payload)} sha256={digest}")
                raise
            self.log.append(principal=PEER, action=step, outcome="ok",
                            detail=f"req={len(payload)} rep={len(reply)} sha256={digest}")
            return reply

        return handle

    def _new_epoch(self, payload: bytes) -> None:
        """A block was re-laid out (B answered its lift): its epoch count starts again."""
        request = RelayoutRequest.from_bytes(payload)
        with self._lock:
            self._epoch_use.pop((request.namespace, request.block), None)

    def _refuse(self, step: str, ticket: str, size: int, digest: str, shape: str,
                exc: HelperRefusedError) -> None:
        with self._lock:
            self.refusals[step] += 1
        self.log.append(principal=PEER, action=step, outcome=f"refused: {exc}", target=ticket,
                        detail=f"req={size} {shape} sha256={digest}")

    # --- the rules -----------------------------------------------------------------------------

    def _admit(self, step: str, ticket_id: bytes, request: Any) -> _Ticket:
        """Check ``request`` against its ticket and mark the step taken (under the lock).

        A step is consumed when admitted, not when answered: a failing or concurrent duplicate
        request still counts, so no retry can buy a second answer.
        """
        self._expire(self._clock())
        ticket = self._tickets.get(ticket_id)
        if ticket is None:
            raise HelperRefusedError("unknown or expired query ticket")
        rule = _RULES.get((ticket.kind, step))
        if rule is None:
            raise HelperRefusedError(f"{step} is not part of a {ticket.kind.value} ticket")
        # Enrolment admission may run its batch in concurrent lanes (one norm round pair
        # each): its counters, not a once-only rule, bound it.
        once = step != Step.COMPARE and ticket.kind is not TicketKind.ENROL
        if once and step in ticket.done:
            raise HelperRefusedError(f"a second {step} for one {ticket.kind.value}")
        rule(self, ticket, request)
        ticket.done.add(step)
        if step == Step.OPEN_LABEL:  # the query is over: nothing more may be asked under it
            del self._tickets[ticket_id]
        return ticket

    def _norm_square(self, ticket: _Ticket, r: NormRequest) -> None:
        if ticket.kind is TicketKind.QUERY:
            if Step.SEALED_QUERY in ticket.done:
                raise HelperRefusedError("a query is admitted once: its sealed vector already was")
            if r.n_vectors != 1 or r.repack:
                raise HelperRefusedError("a query admits exactly one vector, not repacked")
        elif not (r.repack and r.n_vectors >= 1
                  and ticket.vectors + r.n_vectors <= self.quotas.max_enrol_batch):
            raise HelperRefusedError(
                f"an enrolment ticket admits at most {self.quotas.max_enrol_batch} repacked "
                f"vectors")
        ticket.vectors += r.n_vectors

    def _sealed_admit(self, ticket: _Ticket, r: SealedAdmitRequest) -> None:
        """Sealed admission (enrolment tickets only): bounded like the joint-decryption
        admission, and its valid templates are owed the same round-2 comparisons."""
        if r.n_vectors < 1 or ticket.vectors + r.n_vectors > self.quotas.max_enrol_batch:
            raise HelperRefusedError(
                f"an enrolment ticket admits at most {self.quotas.max_enrol_batch} templates")
        ticket.vectors += r.n_vectors

    def _sealed_query(self, ticket: _Ticket, r: SealedQueryRequest) -> None:
        """A query's sealed vector (query tickets only): one per ticket, and never besides the
        joint-decryption admission (a ticket admits exactly one query vector)."""
        if Step.NORM_SQUARE in ticket.done:
            raise HelperRefusedError("a query is admitted once: its packed vector already was")
        ticket.vectors += r.n_vectors

    def _norm_check(self, ticket: _Ticket, r: NormCheckRequest) -> None:
        """Two comparisons (lower and upper bound) per vector B found valid; an enrolment
        ticket's templates get a third, A's wolf check (:class:`~pura.protocols.norms.MeanBound`),
        so at most three per valid vector in total."""
        query = ticket.kind is TicketKind.QUERY
        owed = (2 if query else MAX_CHECKS_PER_VECTOR) * ticket.valid - ticket.checked
        if owed < 2:
            raise HelperRefusedError("norm check without a valid vector awaiting it")
        if not 2 <= r.n_comparisons <= owed or (query and r.n_comparisons != 2):
            raise HelperRefusedError(
                f"norm check of {r.n_comparisons} comparisons; the protocol needs exactly 2 per "
                f"admitted vector, 3 with an enrolment's wolf check ({owed} owed)")
        ticket.checked += r.n_comparisons

    def _preselect_rule(self, ticket: _Ticket, r: PreselectRequest) -> None:
        if Step.BLINDED_PRODUCT in ticket.done:
            raise HelperRefusedError("preselection after the distance round")
        shown = len(r.scores) * self._slots if self._slots else r.k
        want = min(self.quotas.view_k, shown)
        if r.k != want:
            raise HelperRefusedError(f"preselection k={r.k}; B ranks view_k={want}")
        if self.quotas.top_k and r.top_k != self.quotas.top_k:
            raise HelperRefusedError(f"preselection top_k={r.top_k}; B serves "
                                     f"top_k={self.quotas.top_k}")
        bound = self.quotas.epoch_queries
        if bound:
            used = [(r.namespace, b) for b in r.blocks]
            if any(self._epoch_use[u] >= bound for u in used):
                raise HelperRefusedError(f"a block has served {bound} preselections in this "
                                         "layout epoch; re-lay it out first")
            self._epoch_use.update(used)
        ticket.served = r.request_id

    def _open_label(self, ticket: _Ticket, r: LabelOpenRequest) -> None:
        """One label per query, of the candidates served under this ticket, after the
        threshold round (an honest A opens a label only after a match)."""
        if Step.THRESHOLD not in ticket.done or not ticket.served:
            raise HelperRefusedError("label opening before this query's threshold round")
        if r.request_id != ticket.served:
            raise HelperRefusedError("label opening for candidates served to another query")

    def _blinded_product(self, ticket: _Ticket, r: BlindedProductRequest) -> None:
        if Step.NORM_CHECK not in ticket.done:
            raise HelperRefusedError("distance round before the query's norm check")
        if not 1 <= r.n_candidates <= self.quotas.max_candidates:
            raise HelperRefusedError(
                f"{r.n_candidates} candidates; B allows 1..{self.quotas.max_candidates}")
        ticket.k = ticket.remaining = r.n_candidates

    def _argmin(self, ticket: _Ticket, r: ArgminRequest) -> None:
        if ticket.k < 2 or ticket.remaining != ticket.k:
            raise HelperRefusedError("argmin outside the distance round's candidate set")
        if r.n_comparisons != ticket.k:
            raise HelperRefusedError(f"argmin over {r.n_comparisons}; the query has k={ticket.k}")
        ticket.remaining = 1

    def _compare(self, ticket: _Ticket, r: CompareRequest) -> None:
        if Step.ARGMIN in ticket.done or ticket.remaining < 2:
            raise HelperRefusedError("tournament round with no pair left to compare")
        if r.n_comparisons != ticket.remaining // 2:
            raise HelperRefusedError(
                f"tournament round of {r.n_comparisons}; {ticket.remaining} entries left")
        ticket.remaining -= r.n_comparisons

    def _threshold(self, ticket: _Ticket, r: ThresholdRequest) -> None:
        if ticket.k < 1 or ticket.remaining != 1:
            raise HelperRefusedError("threshold opening before the argmin is complete")
        if r.k != ticket.k:
            raise HelperRefusedError(f"threshold over k={r.k}; the query has k={ticket.k}")


def _shape(request: Any) -> str:
    """Item counts of a request for the log (never values)."""
    parts = []
    for name in ("n_vectors", "repack", "n_comparisons", "n_candidates", "k", "dim"):
        value = getattr(request, name, None)
        if value is not None:
            parts.append(f"{name}={int(value)}")
    for name in ("masked", "packed", "scores", "query"):
        value = getattr(request, name, None)
        if isinstance(value, tuple):
            parts.append(f"{name}={len(value)}")
    return " ".join(parts)


_Rule = Callable[[HelperGuard, _Ticket, Any], None]
_RULES: dict[tuple[TicketKind, str], _Rule] = {
    (TicketKind.QUERY, Step.NORM_SQUARE): HelperGuard._norm_square,
    (TicketKind.QUERY, Step.SEALED_QUERY): HelperGuard._sealed_query,
    (TicketKind.QUERY, Step.NORM_CHECK): HelperGuard._norm_check,
    (TicketKind.QUERY, Step.PRESELECT): HelperGuard._preselect_rule,
    (TicketKind.QUERY, Step.BLINDED_PRODUCT): HelperGuard._blinded_product,
    (TicketKind.QUERY, Step.ARGMIN): HelperGuard._argmin,
    (TicketKind.QUERY, Step.COMPARE): HelperGuard._compare,
    (TicketKind.QUERY, Step.THRESHOLD): HelperGuard._threshold,
    (TicketKind.QUERY, Step.OPEN_LABEL): HelperGuard._open_label,
    (TicketKind.ENROL, Step.NORM_SQUARE): HelperGuard._norm_square,
    (TicketKind.ENROL, Step.NORM_CHECK): HelperGuard._norm_check,
    (TicketKind.ENROL, Step.SEALED_ADMIT): HelperGuard._sealed_admit,
}


__all__ = ["PEER", "HelperGuard", "Quotas", "RequestLog", "StepHandler"]
