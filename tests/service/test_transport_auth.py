"""Real TLS servers on loopback: mTLS roles, default deny, chunked helper transport, health."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pura.certs import make_demo_pki
from pura.config import Limits
from pura.errors import ConfigError, KeyMismatchError, ProtocolError
from pura.service.interceptors import Authenticator, TokenTable
from pura.service.peer import HelperClient, HelperIdentity, HelperServicer, register_helper
from pura.service.server import RunningServer, secure_channel, start_server

IDENTITY = HelperIdentity("ps-test", "key-test")


def _digest_step(payload: bytes) -> bytes:
    """A real (if simple) step: B returns the SHA-256 of what it reassembled, repeated."""
    return hashlib.sha256(payload).digest() * 5000


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tls")
    make_demo_pki(out)
    return out


@pytest.fixture(scope="module")
def helper(pki: Path) -> Iterator[RunningServer]:
    servicer = HelperServicer(IDENTITY, {"digest": _digest_step}, chunk_size=50_000)
    tokens = TokenTable([(TokenTable.digest("peer-token"), "token-peer", "peer")])
    running = start_server(
        listen="127.0.0.1:0",
        registrars=[register_helper(servicer)],
        service_names=["pura.v1.PuraHelper"],
        limits=Limits(max_message_bytes=1 << 20),
        authenticator=Authenticator(tokens),
        tls=(pki, "server-b"),
    )
    yield running
    running.stop(None)


def _client(pki: Path, port: int, name: str) -> HelperClient:
    channel = secure_channel(f"localhost:{port}", pki, name)
    return HelperClient(channel, timeout_s=20, chunk_size=64_000)


def test_chunked_exchange_over_mtls(pki: Path, helper: RunningServer) -> None:
    client = _client(pki, helper.port, "server-a")
    payload = secrets.token_bytes(3_000_000)  # > the 1 MiB message limit: must be chunked
    assert client.call("digest", payload) == hashlib.sha256(payload).digest() * 5000
    client.check_identity(IDENTITY)
    with pytest.raises(KeyMismatchError):
        client.check_identity(HelperIdentity("ps-test", "other-key"))


def test_unknown_step_is_invalid_argument(pki: Path, helper: RunningServer) -> None:
    with pytest.raises(ProtocolError, match=r"INVALID_ARGUMENT.*unknown helper step"):
        _client(pki, helper.port, "server-a").call("nope", b"x")


@pytest.mark.parametrize("role", ["identifier", "enroller", "admin", "auditor"])
def test_client_roles_cannot_reach_b(pki: Path, helper: RunningServer, role: str) -> None:
    with pytest.raises(ProtocolError, match="PERMISSION_DENIED"):
        _client(pki, helper.port, role).call("digest", b"x")


def test_no_client_certificate_fails_the_handshake(pki: Path, helper: RunningServer) -> None:
    ca = (pki / "ca.pem").read_bytes()
    channel = grpc.secure_channel(f"localhost:{helper.port}", grpc.ssl_channel_credentials(ca))
    with pytest.raises(grpc.RpcError) as err:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_bearer_tokens_when_client_certs_are_optional(pki: Path) -> None:
    servicer = HelperServicer(IDENTITY, {"digest": _digest_step})
    tokens = TokenTable([(TokenTable.digest("s3cret-token"), "token-peer", "peer")])
    running = start_server(
        listen="127.0.0.1:0",
        registrars=[register_helper(servicer)],
        service_names=[],
        limits=Limits(),
        authenticator=Authenticator(tokens),
        tls=(pki, "server-b"),
        require_client_cert=False,
    )
    try:
        ca = (pki / "ca.pem").read_bytes()
        channel = grpc.secure_channel(f"localhost:{running.port}", grpc.ssl_channel_credentials(ca))
        describe = channel.unary_unary(
            "/pura.v1.PuraHelper/Describe",
            request_serializer=lambda b: b, response_deserializer=lambda b: b,
        )
        assert describe(b"", metadata=(("authorization", "Bearer s3cret-token"),), timeout=5)
        bad: tuple[tuple[tuple[str, str | bytes], ...], ...] = (
            (), (("authorization", "Bearer wrong"),), (("role", "peer"),)
        )
        for metadata in bad:
            with pytest.raises(grpc.RpcError) as err:
                describe(b"", metadata=metadata, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        running.stop(None)


def test_health_serving_and_no_reflection(pki: Path, helper: RunningServer) -> None:
    channel = secure_channel(f"localhost:{helper.port}", pki, "identifier")
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflect = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=lambda b: b, response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.RpcError) as err:
        list(reflect(iter([b""]), timeout=5))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_oversized_single_message_is_resource_exhausted(pki: Path, helper: RunningServer) -> None:
    channel = secure_channel(f"localhost:{helper.port}", pki, "server-a")
    describe = channel.unary_unary(
        "/pura.v1.PuraHelper/Describe",
        request_serializer=lambda b: b, response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.RpcError) as err:
        describe(b"\x0a" + b"\xff" * 5 + secrets.token_bytes(2 << 20), timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_concurrency_cap_answers_resource_exhausted(pki: Path) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    gate, entered = threading.Event(), threading.Event()

    def slow(payload: bytes) -> bytes:
        entered.set()
        gate.wait(10)
        return payload

    servicer = HelperServicer(IDENTITY, {"slow": slow})
    running = start_server(
        listen="127.0.0.1:0", registrars=[register_helper(servicer)], service_names=[],
        limits=Limits(max_concurrent_rpcs=1), authenticator=Authenticator(),
        tls=(pki, "server-b"),
    )
    try:
        client = _client(pki, running.port, "server-a")
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(client.call, "slow", b"1")
            assert entered.wait(30)  # the first call holds the only slot (no sleep-and-hope)
            with pytest.raises(ProtocolError, match="RESOURCE_EXHAUSTED"):
                client.call("slow", b"2")
            gate.set()
            assert first.result(timeout=10) == b"1"
    finally:
        running.stop(None)


def test_reflection_only_in_dev_mode() -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    servicer = HelperServicer(IDENTITY, {"digest": _digest_step})
    running = start_server(
        listen="127.0.0.1:0", registrars=[register_helper(servicer)],
        service_names=["pura.v1.PuraHelper"], limits=Limits(),
        authenticator=Authenticator(), tls=None, dev=True,
    )
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [reply] = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in reply.list_services_response.service}
        assert "pura.v1.PuraHelper" in names
        channel.close()
    finally:
        running.stop(None)
    with pytest.raises(ConfigError, match="TLS"):
        start_server(listen="127.0.0.1:0", registrars=[], service_names=[], limits=Limits(),
                     authenticator=Authenticator(), tls=None, dev=False)
