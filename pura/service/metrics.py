"""Prometheus metrics of server A or B, served at ``/metrics`` (prometheus_client).

What is exported:

* ``pura_rpc_total{method, code}`` and ``pura_rpc_seconds{method, code}`` (histogram): every RPC
  the server answers, counted and timed by :class:`MetricsInterceptor`, refusals included (the
  interceptor runs before authentication and the readiness gate, so UNAUTHENTICATED and
  UNAVAILABLE answers are counted too);
* ``pura_stage_seconds{stage}`` (histogram): protocol stages the node reports through
  :meth:`Metrics.stage` (admission, preselection, exact stage, block refresh, ...);
* ``pura_level{what}`` (gauge): levels read when scraped — randomness-pool values, prepared
  templates, offline queue depth, gallery size — registered with :meth:`Metrics.level`;
* ``pura_refusals_total{reason}``: requests refused for policy (B's quota, budgets).

Why these labels and no others: an endpoint that operators scrape must not become a side
channel. Labels are RPC method names, status codes, stage names and fixed reasons only — never
subject ids, principals or collection names — and every value is a count, a duration or a level
the operator could observe from outside anyway. Nothing here touches key material.

Each server gets its own :class:`~prometheus_client.CollectorRegistry` (not the process-global
default), so several servers in one process (tests, the demo) keep separate figures.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily

#: Latency buckets (seconds) from a millisecond (health checks) to minutes (a BulkEnroll batch).
RPC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
               60.0, 120.0, 300.0)


@dataclass
class MetricsEndpoint:
    """The HTTP server of ``/metrics`` and its bound port."""

    port: int
    _server: Any
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class Metrics:
    """One server's metrics (``role`` is "a" or "b", exported as a constant label)."""

    def __init__(self, role: str, registry: CollectorRegistry | None = None) -> None:
        self.role = role
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = {"role": role}
        self.rpcs = Counter("pura_rpc", "RPCs answered, by method and status code",
                            ["method", "code"], registry=self.registry).labels
        self.rpc_seconds = Histogram(
            "pura_rpc_seconds", "RPC latency in seconds, by method and status code",
            ["method", "code"], buckets=RPC_BUCKETS, registry=self.registry).labels
        self.stage_seconds = Histogram(
            "pura_stage_seconds", "Protocol stage durations in seconds", ["stage"],
            buckets=RPC_BUCKETS, registry=self.registry).labels
        self.refusals = Counter("pura_refusals", "Requests refused by policy, by reason",
                                ["reason"], registry=self.registry).labels
        self.in_flight = Gauge("pura_rpc_in_flight", "RPCs being answered now (queue depth)",
                               registry=self.registry)
        self._levels = Gauge("pura_level", "Levels read at scrape time (pools, queues, sizes)",
                             ["what"], registry=self.registry)
        Gauge("pura_server_info", "Constant 1; the role label says which server this is",
              list(labels), registry=self.registry).labels(**labels).set(1)

    def __repr__(self) -> str:
        return f"Metrics(role={self.role!r})"

    def level(self, what: str, read: Callable[[], float]) -> None:
        """Export ``read()`` as ``pura_level{what=...}``, called at every scrape."""
        self._levels.labels(what=what).set_function(read)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a protocol stage (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds(stage=name).observe(time.perf_counter() - start)

    def refused(self, reason: str) -> None:
        self.refusals(reason=reason).inc()

    def counts(self, name: str, documentation: str, label: str,
               read: Callable[[], Mapping[str, int]]) -> None:
        """Export a counter another component keeps (``read()`` at every scrape), e.g. B's
        per-step quota refusals, without that component importing prometheus_client."""
        self.registry.register(_MappingCounter(name, documentation, label, read))

    def timed_steps(
        self, handlers: Mapping[str, Callable[[bytes], bytes]]
    ) -> dict[str, Callable[[bytes], bytes]]:
        """B's step handlers, each timed as stage ``b:<step>``."""
        return {step: self._timed(f"b:{step}", fn) for step, fn in handlers.items()}

    def timed_call(self, call: Callable[[str, bytes], bytes]) -> Callable[[str, bytes], bytes]:
        """A's helper call, each step timed as stage ``a->b:<step>`` (the round trip to B)."""
        def timed(step: str, payload: bytes) -> bytes:
            with self.stage(f"a->b:{step}"):
                return call(step, payload)

        return timed

    def _timed(self, stage: str, fn: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
        def timed(payload: bytes) -> bytes:
            with self.stage(stage):
                return fn(payload)

        return timed

    def record(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.in_flight.dec()
        self.rpcs(method=method, code=code.name).inc()
        self.rpc_seconds(method=method, code=code.name).observe(seconds)

    def interceptor(self) -> MetricsInterceptor:
        return MetricsInterceptor(self)

    def serve(self, port: int, host: str = "0.0.0.0") -> MetricsEndpoint:
        """Start ``/metrics`` on ``host:port`` (0 = any free port) in a daemon thread."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        return MetricsEndpoint(int(server.server_address[1]), server, thread)


class _MappingCounter:
    """A collector turning a ``{label value: count}`` mapping into one counter family."""

    def __init__(self, name: str, documentation: str, label: str,
                 read: Callable[[], Mapping[str, int]]) -> None:
        self._name, self._doc, self._label, self._read = name, documentation, label, read

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._doc, labels=[self._label])
        for value, count in sorted(dict(self._read()).items()):
            family.add_metric([str(value)], float(count))
        yield family


def _method_name(full: str) -> str:
    """``/pura.v1.Pura/Identify`` → ``Pura/Identify`` (a bounded set: the services' methods)."""
    service, _, method = full.rpartition("/")
    return f"{service.rsplit('.', 1)[-1]}/{method}" if method else full


def _code(context: grpc.ServicerContext, failed: bool) -> grpc.StatusCode:
    # set by abort()/set_code(); None when the handler returned normally
    code = getattr(context, "code", lambda: None)()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK


class MetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[misc, type-arg]
    """Counts and times every RPC by method and final status code."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = _method_name(str(handler_call_details.method))
        m = self.metrics
        if handler.unary_unary:
            return handler._replace(unary_unary=_unary(handler.unary_unary, method, m))
        if handler.stream_unary:
            return handler._replace(stream_unary=_unary(handler.stream_unary, method, m))
        if handler.unary_stream:
            return handler._replace(unary_stream=_streaming(handler.unary_stream, method, m))
        if handler.stream_stream:
            return handler._replace(stream_stream=_streaming(handler.stream_stream, method, m))
        return handler


def _unary(behavior: Callable[[Any, Any], Any], method: str, metrics: Metrics) -> Any:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        start, failed = time.perf_counter(), False
        metrics.in_flight.inc()
        try:
            return behavior(request, context)
        except BaseException:
            failed = True
            raise
        finally:
            metrics.record(method, _code(context, failed), time.perf_counter() - start)

    return wrapped


def _streaming(behavior: Callable[[Any, Any], Iterator[Any]], method: str,
               metrics: Metrics) -> Any:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        start, failed = time.perf_counter(), False
        metrics.in_flight.inc()
        try:
            yield from behavior(request, context)
        except BaseException:
            failed = True
            raise
        finally:
            metrics.record(method, _code(context, failed), time.perf_counter() - start)

    return wrapped


__all__ = ["RPC_BUCKETS", "Metrics", "MetricsEndpoint", "MetricsInterceptor"]
