"""What both ends of a Pura gRPC connection share: the mTLS channel and the chunk framing.

Why this lives in the core and not in :mod:`pura.service`: the client SDK (``pura_client``) dials
server A and reassembles chunked public keys exactly as the servers do among themselves. If that
code lived in the server package, a client would have to import the server (and a server-only
install could not be told apart from a client install). The core holds it once; the server and
the client both import it, and neither imports the other (docs/architecture.md, "Packages").

This module depends on no generated stub: a chunk is anything with the four fields of
``pura.v1.Chunk`` (:class:`ChunkLike`), so the server's stubs (``pura.service._proto``) and the
client's own (``pura_client._proto``) both fit.

Chunking rather than one huge message: gRPC's default receive limit is 4 MB, the public CKKS
context and the masked scores of a large gallery are far bigger, and raising the per-message limit
to "whatever it takes" would let any caller make the receiver allocate that much per message.
Chunks keep every message small and the *total* is capped separately (``max_total``), checked
while receiving, before anything is deserialised (threat T10/T21).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from pura.certs import CertPaths
from pura.config import Limits
from pura.errors import ConfigError, ProtocolError
from pura.wire import pack_blobs, unpack_blobs  # re-exported: blob lists are pura.wire's

DEFAULT_CHUNK = 1 << 20


# --- channels ------------------------------------------------------------------------------


def channel_options(limits: Limits) -> list[tuple[str, Any]]:
    """Message limits set explicitly on both sides (the 4 MB default is too small for 128-bit
    queries; an unbounded one invites memory exhaustion)."""
    return [
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
    ]


def tls_material(tls_dir: Path, name: str) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, ``name``'s certificate chain, ``name``'s private key) from ``tls_dir``."""
    try:
        ca = (tls_dir / "ca.pem").read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"no CA certificate at {tls_dir / 'ca.pem'} (run `pura certs`)") from None
    cert, key = CertPaths(tls_dir / f"{name}.pem", tls_dir / f"{name}.key").load()
    return ca, cert, key


def channel_credentials(tls_dir: Path, name: str) -> grpc.ChannelCredentials:
    """Client side of mTLS with ``name``'s certificate (its role decides what the caller may do;
    the server is authenticated against our CA, not the system roots)."""
    ca, cert, key = tls_material(tls_dir, name)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def secure_channel(
    address: str, tls_dir: Path | None, name: str, limits: Limits | None = None
) -> grpc.Channel:
    """A channel to ``address``; plaintext only when ``tls_dir`` is None (dev)."""
    options = channel_options(limits or Limits())
    if tls_dir is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, channel_credentials(tls_dir, name), options=options)


# --- chunked payloads ----------------------------------------------------------------------


class ChunkLike(Protocol):
    """The fields of a ``pura.v1.Chunk`` message, whichever generated module made it."""

    @property
    def index(self) -> int: ...

    @property
    def data(self) -> bytes: ...

    @property
    def last(self) -> bool: ...

    @property
    def sha256(self) -> bytes: ...


@dataclass(frozen=True)
class ChunkFields:
    """One chunk's fields, to be copied into the caller's own ``Chunk`` message class."""

    index: int
    data: bytes
    last: bool
    sha256: bytes


def split_fields(payload: bytes, chunk_size: int = DEFAULT_CHUNK) -> Iterator[ChunkFields]:
    """Chunks of ``payload``; an empty payload is one empty final chunk. The SHA-256 of the
    whole payload travels with the last chunk so reassembly detects reordering or loss."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    digest = hashlib.sha256(payload).digest()
    count = max(1, -(-len(payload) // chunk_size))
    for index in range(count):
        last = index == count - 1
        yield ChunkFields(index, payload[index * chunk_size:(index + 1) * chunk_size], last,
                          digest if last else b"")


def join(chunks: Iterable[ChunkLike], *, max_total: int) -> bytes:
    """Reassemble; refuses gaps, reordering, overflow of ``max_total`` and digest mismatch."""
    parts: list[bytes] = []
    total = 0
    for expected, chunk in enumerate(chunks):
        if chunk.index != expected:
            raise ProtocolError(f"chunk {chunk.index} arrived where {expected} was expected")
        total += len(chunk.data)
        if total > max_total:
            raise ProtocolError(f"payload exceeds the limit of {max_total} bytes")
        parts.append(chunk.data)
        if chunk.last:
            payload = b"".join(parts)
            if hashlib.sha256(payload).digest() != chunk.sha256:
                raise ProtocolError("payload digest mismatch after reassembly")
            return payload
    raise ProtocolError("stream ended before the final chunk")


__all__ = [
    "DEFAULT_CHUNK",
    "ChunkFields",
    "ChunkLike",
    "channel_credentials",
    "channel_options",
    "join",
    "pack_blobs",
    "secure_channel",
    "split_fields",
    "tls_material",
    "unpack_blobs",
]
