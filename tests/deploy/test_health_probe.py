"""deploy/grpc_health_probe.py against a real gRPC health server on loopback (plain and mTLS)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from pura.certs import make_demo_pki

REPO = Path(__file__).resolve().parents[2]


def _load_probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "grpc_health_probe", REPO / "deploy" / "grpc_health_probe.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


probe = _load_probe()


def _start(creds: grpc.ServerCredentials | None) -> tuple[grpc.Server, health.HealthServicer, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    address = "127.0.0.1:0"
    port = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
    server.start()
    return server, servicer, port


@pytest.fixture()
def plain_server() -> Iterator[tuple[health.HealthServicer, int]]:
    server, servicer, port = _start(None)
    yield servicer, port
    server.stop(None)


def test_serving_and_not_serving(plain_server: tuple[health.HealthServicer, int]) -> None:
    servicer, port = plain_server
    args = ["--addr", f"127.0.0.1:{port}", "--insecure", "--timeout", "2"]
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert probe.main(args) == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert probe.main(args) == 1


def test_unknown_service_fails(plain_server: tuple[health.HealthServicer, int]) -> None:
    _, port = plain_server
    assert probe.main(["--addr", f"127.0.0.1:{port}", "--insecure", "--service", "nope"]) == 1


def test_nothing_listening_fails() -> None:
    server, _, port = _start(None)
    server.stop(None)
    assert probe.main(["--addr", f"127.0.0.1:{port}", "--insecure", "--timeout", "0.5"]) == 1


def test_mtls_with_demo_pki(tmp_path: Path) -> None:
    pki = make_demo_pki(tmp_path / "tls")
    cert, key = pki["server-b"].load()
    ca = pki["ca"].cert.read_bytes()
    creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                        require_client_auth=True)
    server, servicer, port = _start(creds)
    try:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        base = ["--addr", f"127.0.0.1:{port}", "--ca", str(pki["ca"].cert),
                "--server-name", "localhost", "--timeout", "3"]
        client = ["--cert", str(pki["auditor"].cert), "--key", str(pki["auditor"].key)]
        assert probe.main(base + client) == 0
        # Without a client certificate the mTLS handshake fails: the probe reports unhealthy.
        assert probe.main(base) == 1
    finally:
        server.stop(None)


def test_tls_requires_ca() -> None:
    with pytest.raises(SystemExit):
        probe.main(["--addr", "127.0.0.1:1"])
