"""Container health probe: ``grpc.health.v1.Health/Check`` over (m)TLS, exit 0 iff SERVING.

Why an exec probe and not the kubelet's native ``grpc:`` probe: the native probe speaks plaintext
gRPC only, and Pura's servers listen with TLS (A and B refuse plaintext on purpose, so an attacker
on the pod network cannot talk to B without a certificate). The probe therefore runs inside the
container and presents the pod's own client certificate, exactly like a real peer. It needs only
``grpcio`` and ``grpcio-health-checking``, which the server image already has.

Usage: ``python grpc_health_probe.py --addr 127.0.0.1:50051 --ca ca.pem --cert c.pem --key c.key``
(``--insecure`` for a plaintext port, e.g. a developer run without certificates).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:50051", help="host:port of the server")
    parser.add_argument("--service", default="", help="health service name ('' = whole server)")
    parser.add_argument("--ca", type=Path, help="PEM of the CA that signed the server")
    parser.add_argument("--cert", type=Path, help="client certificate PEM (mTLS)")
    parser.add_argument("--key", type=Path, help="client private key PEM (mTLS)")
    parser.add_argument("--server-name", default="", help="TLS name to verify (default: host)")
    parser.add_argument("--insecure", action="store_true", help="plaintext channel")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds")
    return parser.parse_args(argv)


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if args.insecure:
        return grpc.insecure_channel(args.addr)
    if args.ca is None:
        raise SystemExit("--ca is required unless --insecure")
    key = args.key.read_bytes() if args.key else None
    cert = args.cert.read_bytes() if args.cert else None
    creds = grpc.ssl_channel_credentials(args.ca.read_bytes(), key, cert)
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(args.addr, creds, options=options)


def check(args: argparse.Namespace) -> bool:
    """True when the server answers SERVING for ``args.service`` within the timeout."""
    with _channel(args) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"health check failed: {exc.code().name}", file=sys.stderr)
            return False
    serving: bool = reply.status == health_pb2.HealthCheckResponse.SERVING
    if not serving:
        print(f"not serving: status {reply.status}", file=sys.stderr)
    return serving


def main(argv: list[str] | None = None) -> int:
    return 0 if check(_parse(sys.argv[1:] if argv is None else argv)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
