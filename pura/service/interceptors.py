"""Authentication, per-RPC role checks and per-client query budgets.

Security reasoning:

* **Identity comes from the TLS layer** (the client certificate the handshake verified against
  our CA) or from a bearer token whose SHA-256 is in the server's token table. Nothing a client
  puts in ordinary metadata can grant a role (threat T17).
* **Default deny**: a method absent from the policy is refused for everyone.
* **Budgets** cap identification/verification queries per principal in a sliding window, so an
  identifier cannot run the thousands of probes a hill-climbing or decision-oracle attack needs
  (threats T4/T5). Verification additionally caps *failed* probes per target subject.
* **Open streams** (:class:`StreamGuard`): a client-streaming call holds one of the server's
  worker threads for as long as the client keeps it open, so eight idle BulkEnroll streams from
  one enroller used to leave no thread for Identify (issue 13, item 3). Streams are capped per
  principal and in total (at most half the worker threads), and a stream whose client sends
  nothing for ``idle_s`` is cancelled by the server.
* **Bearer tokens and certificates** both grant roles. When a call brings both, the
  certificate's role wins: the TLS handshake proved it, while a token is only as good as the
  secrecy of a string (a leaked token must not change what a certificate holder may do).

The interceptor wraps the method handler (gRPC's Python interceptors see no AuthContext; the
wrapped behaviour does) and publishes the caller in a ContextVar for the servicer.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from pura.certs import role_of_certificate
from pura.errors import BudgetExhaustedError

ROLES = ("enroller", "identifier", "auditor", "admin", "peer")

_P = "/pura.v1.Pura/"
_ADM = "/pura.v1.PuraAdmin/"
_H = "/pura.v1.PuraHelper/"
_PUBLIC_READ = ("enroller", "identifier", "auditor", "admin")

#: method -> roles allowed. Anything else is denied (health and reflection are open to any
#: caller that completed the mTLS handshake: they reveal nothing about the gallery).
POLICY: Mapping[str, tuple[str, ...]] = {
    _P + "GetParameters": _PUBLIC_READ,
    _P + "GetPublicKeys": _PUBLIC_READ,
    _P + "Enroll": ("enroller", "admin"),
    _P + "BulkEnroll": ("enroller", "admin"),
    _P + "Identify": ("identifier",),
    _P + "Verify": ("identifier",),
    _P + "DeleteSubject": ("admin",),
    _ADM + "CreateCollection": ("admin",),
    _ADM + "ListSubjects": ("admin",),
    _ADM + "Stats": ("admin", "auditor"),
    _ADM + "VerifyAuditLog": ("admin", "auditor"),
    _H + "Exchange": ("peer",),
    _H + "Describe": ("peer",),
}
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a name (certificate CN or token name) and one role."""

    name: str
    role: str
    via: str  # "mtls" | "token"


CURRENT: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "pura_principal", default=None
)


def current_principal() -> Principal:
    principal = CURRENT.get()
    if principal is None:  # only reachable if a servicer runs without the interceptor
        raise RuntimeError("servicer called outside the authentication interceptor")
    return principal


class TokenTable:
    """Bearer tokens -> principals. Only SHA-256 digests are held (a leaked config leaks no
    usable token); comparison is constant-time."""

    def __init__(self, entries: Iterable[tuple[str, str, str]] = ()) -> None:
        """``entries``: (sha256 hex of the token, principal name, role)."""
        self._entries = [(bytes.fromhex(d), n, r) for d, n, r in entries]
        for _, _, role in self._entries:
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r}")

    @staticmethod
    def digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def lookup(self, token: str) -> Principal | None:
        probe = hashlib.sha256(token.encode()).digest()
        found = None
        for digest, name, role in self._entries:
            if hmac.compare_digest(digest, probe):
                found = Principal(name, role, "token")
        return found


class Authenticator:
    """Derives the :class:`Principal` of a call."""

    def __init__(self, tokens: TokenTable | None = None) -> None:
        self._tokens = tokens or TokenTable()
        self._cert_cache: dict[bytes, tuple[str, str | None]] = {}
        self._lock = threading.Lock()

    def _from_cert(self, context: grpc.ServicerContext) -> Principal | None:
        certs: Any = context.auth_context().get("x509_pem_cert") or []
        if not certs or isinstance(certs, bytes):
            return None
        pem = bytes(certs[0])
        with self._lock:
            if pem not in self._cert_cache:
                self._cert_cache[pem] = role_of_certificate(pem)
            name, role = self._cert_cache[pem]
        return Principal(name, role, "mtls") if role in ROLES and role else None

    def _from_token(self, context: grpc.ServicerContext) -> Principal | None:
        for key, value in context.invocation_metadata():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                return self._tokens.lookup(value[len("Bearer "):])
        return None

    def authenticate(self, context: grpc.ServicerContext) -> Principal | None:
        """The certificate's principal if it names a role, else the bearer token's (see the
        module docstring for why the certificate wins)."""
        return self._from_cert(context) or self._from_token(context)


def _wrap_behavior(
    behavior: Callable[..., Any], check: Callable[[grpc.ServicerContext], Principal | None]
) -> Callable[..., Any]:
    def unary(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
        token = CURRENT.set(check(context))
        try:
            return behavior(request_or_iterator, context)
        finally:
            CURRENT.reset(token)

    return unary


def _wrap_streaming(
    behavior: Callable[..., Any], check: Callable[[grpc.ServicerContext], Principal | None]
) -> Callable[..., Any]:
    def stream(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
        principal = check(context)
        token = CURRENT.set(principal)
        try:
            iterator = behavior(request_or_iterator, context)
        finally:
            CURRENT.reset(token)
        while True:  # the generator body runs on next(); keep the principal visible there
            token = CURRENT.set(principal)
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                CURRENT.reset(token)
            yield item

    return stream


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc, type-arg]
    """Authenticate every call and enforce :data:`POLICY` (default deny)."""

    def __init__(
        self, authenticator: Authenticator, policy: Mapping[str, tuple[str, ...]] = POLICY
    ) -> None:
        self._auth = authenticator
        self._policy = policy

    def _checker(self, method: str) -> Callable[[grpc.ServicerContext], Principal | None]:
        allowed = self._policy.get(method)
        is_open = method.startswith(OPEN_PREFIXES)

        def check(context: grpc.ServicerContext) -> Principal | None:
            principal = self._auth.authenticate(context)
            if is_open:
                return principal
            if principal is None:
                context.abort(
                    grpc.StatusCode.UNAUTHENTICATED, "no valid client certificate or token"
                )
            if allowed is None or principal.role not in allowed:
                context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"role {principal.role!r} may not call {method.rsplit('/', 1)[-1]}",
                )
            return principal

        return check

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        check = self._checker(handler_call_details.method)
        if handler.unary_unary:
            return handler._replace(unary_unary=_wrap_behavior(handler.unary_unary, check))
        if handler.stream_unary:
            return handler._replace(stream_unary=_wrap_behavior(handler.stream_unary, check))
        if handler.unary_stream:
            return handler._replace(unary_stream=_wrap_streaming(handler.unary_stream, check))
        return handler._replace(stream_stream=_wrap_streaming(handler.stream_stream, check))


class ReadyGate(grpc.ServerInterceptor):  # type: ignore[misc, type-arg]
    """UNAVAILABLE for every RPC except health until ``ready`` is set.

    Why: server A may listen before it can serve (B is down at start, recovery not yet run); a
    call then must get the retryable UNAVAILABLE, never a half-initialised answer."""

    def __init__(self, ready: threading.Event) -> None:
        self._ready = ready

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_PREFIXES):
            return handler
        ready = self._ready

        def gate(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def gated(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
                if not ready.is_set():
                    context.abort(grpc.StatusCode.UNAVAILABLE,
                                  "server A is starting: waiting for server B")
                return behavior(request_or_iterator, context)

            return gated

        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, kind)
            if behavior:
                return handler._replace(**{kind: gate(behavior)})
        return handler


@dataclass
class _OpenStream:
    principal: str
    context: grpc.ServicerContext
    last: float
    busy: int = 0
    cancelled: bool = False


class OpenStream:
    """Handle of one admitted stream: report activity, mark server-side work."""

    def __init__(self, guard: StreamGuard, state: _OpenStream) -> None:
        self._guard = guard
        self._state = state

    def touch(self) -> None:
        """The client sent something: the idle clock starts again."""
        self._guard.touch(self._state)

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """Server-side work on this stream: time spent here is not the client being idle."""
        self._guard.set_busy(self._state, +1)
        try:
            yield
        finally:
            self._guard.set_busy(self._state, -1)

    @property
    def cancelled(self) -> bool:
        return self._state.cancelled


class StreamGuard:
    """Admission and idle timeout for client-streaming calls (see the module docstring).

    ``clock`` is injectable; the watchdog is a daemon thread started with the first stream that
    checks every ``min(1, idle_s / 4)`` seconds and cancels (``context.cancel()``) streams whose
    client has been silent for longer than ``idle_s`` while no server work was running on them.
    """

    def __init__(
        self,
        *,
        per_principal: int,
        total: int,
        idle_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_principal < 1 or total < 1 or idle_s <= 0:
            raise ValueError("stream limits must be positive")
        self.per_principal = per_principal
        self.total = total
        self.idle_s = idle_s
        self._clock = clock
        self._open: list[_OpenStream] = []
        self._lock = threading.Lock()
        self._watchdog: threading.Thread | None = None

    def open_count(self, principal: str | None = None) -> int:
        with self._lock:
            return sum(1 for s in self._open if principal is None or s.principal == principal)

    @contextlib.contextmanager
    def admit(self, principal: str, context: grpc.ServicerContext) -> Iterator[OpenStream]:
        """Hold a stream slot for the body; raises :class:`BudgetExhaustedError` (→
        RESOURCE_EXHAUSTED) over either cap, before the call takes any other resource."""
        with self._lock:
            mine = sum(1 for s in self._open if s.principal == principal)
            if mine >= self.per_principal:
                raise BudgetExhaustedError(
                    f"at most {self.per_principal} open streams per principal")
            if len(self._open) >= self.total:
                raise BudgetExhaustedError(f"at most {self.total} open streams on this server")
            state = _OpenStream(principal, context, self._clock())
            self._open.append(state)
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="pura-streams",
                                                  daemon=True)
                self._watchdog.start()
        try:
            yield OpenStream(self, state)
        finally:
            with self._lock:
                self._open.remove(state)

    def touch(self, state: _OpenStream) -> None:
        with self._lock:
            state.last = self._clock()

    def set_busy(self, state: _OpenStream, delta: int) -> None:
        with self._lock:
            state.busy += delta
            state.last = self._clock()

    def sweep(self) -> int:
        """Cancel every stream idle for longer than ``idle_s``; returns how many."""
        now = self._clock()
        with self._lock:
            idle = [s for s in self._open
                    if not s.busy and not s.cancelled and now - s.last > self.idle_s]
            for s in idle:
                s.cancelled = True
        for s in idle:
            s.context.cancel()  # type: ignore[no-untyped-call]
        return len(idle)

    def _watch(self) -> None:
        """Sweep until no stream is open (the next admitted stream starts a new watchdog)."""
        period = min(1.0, self.idle_s / 4)
        while True:
            time.sleep(period)
            self.sweep()
            with self._lock:
                if not self._open:
                    self._watchdog = None
                    return


class BudgetLedger(Protocol):
    """Where budget charges are kept across restarts (:class:`~pura.gallery.store.GalleryStore`
    implements it)."""

    def add_budget_event(self, subject: str, kind: str, at: float) -> None: ...

    def remove_budget_event(self, subject: str, kind: str, at: float) -> None: ...

    def budget_events(self, since: float) -> list[tuple[str, str, float]]: ...


QUERY, FAILED, MALFORMED = "query", "failed-verification", "malformed"


class QueryBudget:
    """Sliding-window budgets: answered queries per principal, failed probes per verification
    target, and refused malformed queries per principal (issue 13, item 9).

    Why three: a query is charged when it starts and refunded when it is not answered (the
    client went away, B was down, or the query was refused as malformed), so a client pays
    only for answers; but refusals are themselves an oracle (is this crafted vector a unit
    vector?), so they are counted against a budget of their own.

    With a ``ledger`` every charge and refund is written to it and the windows are reloaded
    from it at start, so a restart does not reset them; the clock is then wall time (monotonic
    time does not survive a restart). ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        *,
        per_principal: int,
        window_s: float,
        failed_per_target: int = 20,
        malformed_per_principal: int | None = None,
        clock: Callable[[], float] | None = None,
        ledger: BudgetLedger | None = None,
    ) -> None:
        self.per_principal = per_principal
        self.failed_per_target = failed_per_target
        self.malformed_per_principal = (
            per_principal if malformed_per_principal is None else malformed_per_principal
        )
        self.window_s = window_s
        self._clock = clock or (time.time if ledger is not None else time.monotonic)
        self._ledger = ledger
        self._writes = 0
        self._events: dict[tuple[str, str], collections.deque[float]] = (
            collections.defaultdict(collections.deque)
        )
        self._lock = threading.Lock()
        if ledger is not None:
            for subject, kind, at in ledger.budget_events(self._clock() - window_s):
                self._events[(subject, kind)].append(at)

    def _trim(self, queue: collections.deque[float], now: float) -> None:
        while queue and queue[0] <= now - self.window_s:
            queue.popleft()

    def _count(self, subject: str, kind: str) -> int:
        queue = self._events[(subject, kind)]
        self._trim(queue, self._clock())
        return len(queue)

    def _add(self, subject: str, kind: str) -> float:
        now = self._clock()
        self._events[(subject, kind)].append(now)
        if self._ledger is not None:
            self._ledger.add_budget_event(subject, kind, now)
            self._writes += 1
            if self._writes % 1000 == 0:  # the ledger keeps only the current window
                self._ledger.budget_events(now - self.window_s)
        return now

    def charge(self, principal: str) -> int:
        """Count one query; returns what is left, or raises when the budget is used up."""
        with self._lock:
            if self._count(principal, QUERY) >= self.per_principal:
                raise BudgetExhaustedError(
                    f"query budget of {self.per_principal} per {self.window_s:.0f} s used up"
                )
            self._add(principal, QUERY)
            return self.per_principal - len(self._events[(principal, QUERY)])

    def remaining(self, principal: str) -> int:
        """Queries ``principal`` may still make in the current window."""
        with self._lock:
            return max(0, self.per_principal - self._count(principal, QUERY))

    def refund(self, principal: str) -> None:
        """Give back the latest charge of ``principal`` (its query was not answered)."""
        with self._lock:
            queue = self._events[(principal, QUERY)]
            if queue:
                at = queue.pop()
                if self._ledger is not None:
                    self._ledger.remove_budget_event(principal, QUERY, at)

    def check_malformed(self, principal: str) -> None:
        """Refuse a principal whose malformed queries used up their own budget."""
        with self._lock:
            if self._count(principal, MALFORMED) >= self.malformed_per_principal:
                raise BudgetExhaustedError(
                    f"too many refused malformed queries ({self.malformed_per_principal} per "
                    f"{self.window_s:.0f} s)")

    def record_malformed(self, principal: str) -> None:
        with self._lock:
            self._add(principal, MALFORMED)

    def check_target(self, target: str) -> None:
        """Refuse verification against a subject that has had too many failed probes."""
        with self._lock:
            if self._count(target, FAILED) >= self.failed_per_target:
                raise BudgetExhaustedError("too many failed verifications against this subject")

    def record_failure(self, target: str) -> None:
        with self._lock:
            self._add(target, FAILED)


__all__ = [
    "CURRENT",
    "POLICY",
    "ROLES",
    "AuthInterceptor",
    "Authenticator",
    "BudgetLedger",
    "OpenStream",
    "Principal",
    "QueryBudget",
    "ReadyGate",
    "StreamGuard",
    "TokenTable",
    "current_principal",
]
