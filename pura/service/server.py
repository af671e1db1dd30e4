"""gRPC server construction: TLS, limits, interceptors, health, optional reflection.

Why each setting (threat T21, docs/architecture.md):

* TLS with ``require_client_auth=True``: every caller proves a certificate from our CA; roles come
  from it (see :mod:`pura.service.interceptors`). Plaintext is only possible with ``dev``.
* ``grpc.max_receive_message_length`` / ``max_send_message_length`` set explicitly (the 4 MB
  default is too small for 128-bit queries; an unbounded one invites memory exhaustion).
* ``maximum_concurrent_rpcs``: gRPC answers RESOURCE_EXHAUSTED beyond it instead of queueing
  without bound; HE work per call is heavy, so the cap is small.
* keepalive enforcement: clients may not ping more often than every 10 s without data.
* ``grpc.health.v1`` for orchestrators; reflection only in dev mode (it advertises the API).
* Bearer tokens get a port of their own (``token_listen``): gRPC's Python API can either
  require a client certificate or not ask for one at all, never "ask but accept none". One port
  without client certificates made every certificate role UNAUTHENTICATED when tokens were
  configured (issue 13, item 6); now the mTLS port always requires certificates and the token
  port never asks for them.
* A ``gate`` (:class:`~pura.service.interceptors.ReadyGate`) answers UNAVAILABLE until the
  server is ready, so a server can listen (and report NOT_SERVING on health) before it can
  serve, e.g. A while B is down.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from pura.config import Limits
from pura.errors import ConfigError
from pura.service.interceptors import Authenticator, AuthInterceptor, ReadyGate

if TYPE_CHECKING:  # prometheus_client is a server extra; clients import this module too
    from pura.service.metrics import Metrics, MetricsEndpoint
from pura.transport import channel_credentials, channel_options, secure_channel, tls_material

Registrar = Callable[[grpc.Server], None]


def server_options(limits: Limits) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.so_reuseport", 0),
    ]


def server_credentials(
    tls_dir: Path, name: str, *, require_client_cert: bool = True
) -> grpc.ServerCredentials:
    """TLS presenting ``name``'s certificate. With ``require_client_cert`` (the default) the
    handshake fails for clients without a certificate from our CA; without it (only when bearer
    tokens are configured) the interceptor still refuses calls that bring neither."""
    ca, cert, key = tls_material(tls_dir, name)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=require_client_cert
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host`` (for tests and the demo)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    """A started server, its bound port and its health servicer."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    #: Port for bearer-token callers (TLS without client certificates); 0 when none.
    token_port: int = 0
    #: The ``/metrics`` HTTP endpoint (Prometheus), when one was asked for.
    metrics: MetricsEndpoint | None = None

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set("", status)

    def stop(self, grace: float | None = 1.0) -> None:
        self.set_serving(False)
        self.server.stop(grace).wait()
        if self.metrics is not None:
            self.metrics.close()


def start_server(
    *,
    listen: str,
    registrars: Sequence[Registrar],
    service_names: Sequence[str],
    limits: Limits,
    authenticator: Authenticator,
    tls: tuple[Path, str] | None,
    dev: bool = False,
    require_client_cert: bool = True,
    token_listen: str | None = None,
    ready: threading.Event | None = None,
    metrics: Metrics | None = None,
    metrics_listen: str | None = None,
) -> RunningServer:
    """Build, bind and start a server. ``tls`` = (tls_dir, certificate name) or None (dev).

    ``token_listen``: a second address for bearer-token callers (TLS, no client certificate).
    ``ready``: until it is set, every RPC but health answers UNAVAILABLE and health reports
    NOT_SERVING; whoever sets it calls :meth:`RunningServer.set_serving` too.
    ``metrics``: counts and times every RPC (its interceptor runs first, so refusals by the
    gate or authentication are counted too); ``metrics_listen`` ("host:port") serves them at
    ``/metrics``."""
    if tls is None and not dev:
        raise ConfigError("refusing to serve without TLS outside dev mode")
    gate = [] if ready is None else [ReadyGate(ready)]
    counted = [] if metrics is None else [metrics.interceptor()]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=limits.worker_threads),
        interceptors=[*counted, *gate, AuthInterceptor(authenticator)],
        options=server_options(limits),
        maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
    )
    for register in registrars:
        register(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if dev:
        from grpc_reflection.v1alpha import reflection

        reflection.enable_server_reflection(
            [*service_names, reflection.SERVICE_NAME, health.SERVICE_NAME], server
        )
    if tls is None:
        port = server.add_insecure_port(listen)
    else:
        creds = server_credentials(*tls, require_client_cert=require_client_cert)
        port = server.add_secure_port(listen, creds)
    if port == 0:
        raise ConfigError(f"cannot bind {listen}")
    token_port = 0
    if token_listen is not None:
        if tls is None:
            raise ConfigError("a token port needs TLS (bearer tokens must not travel in clear)")
        token_creds = server_credentials(*tls, require_client_cert=False)
        token_port = server.add_secure_port(token_listen, token_creds)
        if token_port == 0:
            raise ConfigError(f"cannot bind {token_listen}")
    endpoint = None
    if metrics is not None and metrics_listen is not None:
        host, _, metrics_port = metrics_listen.rpartition(":")
        endpoint = metrics.serve(int(metrics_port), host or "0.0.0.0")
    server.start()
    running = RunningServer(server, port, health_servicer, token_port, endpoint)
    running.set_serving(ready is None or ready.is_set())
    return running


__all__ = [
    "RunningServer",
    "channel_credentials",
    "channel_options",
    "free_port",
    "secure_channel",
    "server_credentials",
    "server_options",
    "start_server",
]
