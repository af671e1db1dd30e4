"""The A -> B transport: protocol messages over the PuraHelper gRPC service.

The protocol layer (pura.protocols) talks to B through a ``HelperChannel`` whose methods take and
return message dataclasses with ``to_bytes``/``from_bytes``. This module only moves those bytes:

* :class:`HelperClient` (at A) sends one step as a stream of chunks and reassembles the reply;
* :class:`HelperServicer` (at B) reassembles a request, dispatches it by step name to a handler
  ``bytes -> bytes`` and streams the reply back.

B's handlers never learn who asked or about which collection: frames carry a step name and
opaque masked/permuted payload bytes only, and the channel is mTLS with A's "peer" certificate.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import grpc

from pura.errors import ConfigError, KeyMismatchError, PeerUnavailableError, ProtocolError
from pura.rpc_errors import error_class
from pura.service import chunks
from pura.service._proto.pura.v1 import helper_pb2, helper_pb2_grpc
from pura.service.status import guarded, guarded_stream

StepHandler = Callable[[bytes], bytes]

#: Transport outcomes that say "B is not there (now)", not "B refused this request": A's
#: clients get UNAVAILABLE for these, so that they retry (docs/service.md, Errors).
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.CANCELLED)


@dataclass(frozen=True)
class HelperIdentity:
    """What B holds; A checks it matches its own keys before serving anything."""

    parameter_set_id: str
    key_id: str


def _helper_error(exc: grpc.RpcError) -> type[ProtocolError]:
    """The class A raises for B's refusal, read from the shared table (:mod:`pura.rpc_errors`).

    Only :class:`ProtocolError` subclasses keep their class (a :class:`HelperRefusedError` stays
    one, so A's callers see B's defences at work); anything else B raised is a failed step,
    ``ProtocolError``: a KeyMismatchError *at B* is not the client's fault and must not be
    reported to the client as if its upload were.
    """
    cls = error_class(exc.code(), exc.trailing_metadata())
    return cls if cls is not None and issubclass(cls, ProtocolError) else ProtocolError


class HelperClient:
    """A's side of the transport."""

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        timeout_s: float = 120.0,
        chunk_size: int = chunks.DEFAULT_CHUNK,
        max_reply: int = 1 << 31,
    ) -> None:
        self._stub = helper_pb2_grpc.PuraHelperStub(channel)  # type: ignore[no-untyped-call]
        self._timeout = timeout_s
        self._chunk = chunk_size
        self._max_reply = max_reply

    def call(self, step: str, payload: bytes) -> bytes:
        """Run one protocol step at B."""

        def frames() -> Iterator[helper_pb2.HelperFrame]:
            for i, chunk in enumerate(chunks.split(payload, self._chunk)):
                yield helper_pb2.HelperFrame(step=step if i == 0 else "", chunk=chunk)

        try:
            replies = self._stub.Exchange(frames(), timeout=self._timeout)
            return chunks.join((f.chunk for f in replies), max_total=self._max_reply)
        except grpc.RpcError as exc:
            if exc.code() in _UNREACHABLE:
                raise PeerUnavailableError(
                    f"server B unavailable during helper step {step!r}: {exc.code().name}"
                ) from exc
            raise _helper_error(exc)(
                f"helper step {step!r} failed: {exc.code().name}: {exc.details()}"
            ) from exc

    def describe(self) -> HelperIdentity:
        try:
            info = self._stub.Describe(helper_pb2.DescribeRequest(), timeout=self._timeout)
        except grpc.RpcError as exc:
            raise ConfigError(f"server B unreachable: {exc.code().name}: {exc.details()}") from exc
        return HelperIdentity(info.parameter_set_id, info.key_id)

    def check_identity(self, expected: HelperIdentity) -> None:
        """Refuse to run against a B holding another key or parameter set."""
        got = self.describe()
        if got != expected:
            raise KeyMismatchError(
                f"server B holds key {got.key_id} / {got.parameter_set_id}, "
                f"A holds {expected.key_id} / {expected.parameter_set_id}"
            )


class HelperServicer(helper_pb2_grpc.PuraHelperServicer):  # type: ignore[misc]
    """B's side: dispatch steps to handlers."""

    def __init__(
        self,
        identity: HelperIdentity,
        handlers: Mapping[str, StepHandler],
        *,
        max_request: int = 1 << 31,
        chunk_size: int = chunks.DEFAULT_CHUNK,
    ) -> None:
        self._identity = identity
        self._handlers = dict(handlers)
        self._max_request = max_request
        self._chunk = chunk_size

    @guarded
    def Describe(  # noqa: N802 - gRPC method name
        self, request: helper_pb2.DescribeRequest, context: grpc.ServicerContext
    ) -> helper_pb2.HelperInfo:
        return helper_pb2.HelperInfo(
            parameter_set_id=self._identity.parameter_set_id,
            key_id=self._identity.key_id,
            steps=sorted(self._handlers),
        )

    @guarded_stream
    def Exchange(  # noqa: N802 - gRPC method name
        self, request_iterator: Iterator[helper_pb2.HelperFrame], context: grpc.ServicerContext
    ) -> Iterator[helper_pb2.HelperFrame]:
        first = next(request_iterator, None)
        if first is None:
            raise ProtocolError("empty helper request")
        handler = self._handlers.get(first.step)
        if handler is None:
            raise ProtocolError(f"unknown helper step {first.step!r}")
        frames = itertools.chain([first], request_iterator)
        payload = chunks.join((f.chunk for f in frames), max_total=self._max_request)
        reply = handler(payload)
        for chunk in chunks.split(reply, self._chunk):
            yield helper_pb2.HelperFrame(chunk=chunk)


def register_helper(servicer: HelperServicer) -> Callable[[grpc.Server], None]:
    """Registrar for :func:`pura.service.server.start_server`."""

    def register(server: grpc.Server) -> None:
        helper_pb2_grpc.add_PuraHelperServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]

    return register


__all__ = ["HelperClient", "HelperIdentity", "HelperServicer", "StepHandler", "register_helper"]
