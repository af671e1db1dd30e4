"""The one errors <-> gRPC status table, round trip over a real gRPC channel.

Every PuraError class of :mod:`pura.errors` is raised inside a servicer method wrapped by the
server's own ``status.guarded``, crosses a real (loopback, plaintext) gRPC channel, and is
translated by the client SDK's ``translate``: the client must raise the very class the server
raised, with the status code of the shared table. Before the table was shared,
``EmbeddingRangeError`` arrived as ``ProtocolError`` and ``ConfigError`` as ``KeyMismatchError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from pura_client.client import RpcError, translate

from pura import errors
from pura.errors import (
    ConfigError,
    DecryptionError,
    EmbeddingRangeError,
    HelperRefusedError,
    KeyMismatchError,
    ProtocolError,
    PuraError,
)
from pura.rpc_errors import CODES, ERROR_KEY, KNOWN, code_for, error_class, error_metadata
from pura.service.status import guarded

ALL = sorted(KNOWN.values(), key=lambda c: c.__name__)


def _raise_named(request: bytes, context: grpc.ServicerContext) -> bytes:
    name = request.decode()
    if name == "unexpected":
        raise RuntimeError("secret detail that must not reach the client")
    raise KNOWN[name](f"raised {name}")


class _Servicer:
    @guarded
    def call(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return _raise_named(request, context)


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "test.Errors", {"Raise": grpc.unary_unary_rpc_method_handler(_Servicer().call)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    server.stop(None)


def _call(channel: grpc.Channel, name: str) -> grpc.RpcError:
    method = channel.unary_unary("/test.Errors/Raise")
    with pytest.raises(grpc.RpcError) as info:
        method(name.encode(), timeout=30)
    return info.value


def test_every_error_class_is_registered() -> None:
    """KNOWN is built from pura.errors, so a new class cannot be forgotten; check it is all."""
    exported = {getattr(errors, n) for n in errors.__all__}
    assert set(KNOWN.values()) == {c for c in exported
                                   if isinstance(c, type) and issubclass(c, PuraError)}
    assert len(KNOWN) >= 20


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_round_trip_over_grpc(channel: grpc.Channel, cls: type[PuraError]) -> None:
    exc = _call(channel, cls.__name__)
    assert exc.code() == code_for(cls)
    back = translate(exc)
    assert type(back) is cls, (cls, type(back), exc.code())


def test_the_two_known_mistranslations_are_gone(channel: grpc.Channel) -> None:
    assert type(translate(_call(channel, "EmbeddingRangeError"))) is EmbeddingRangeError
    assert type(translate(_call(channel, "ConfigError"))) is ConfigError
    assert type(translate(_call(channel, "KeyMismatchError"))) is KeyMismatchError


def test_decryption_error_stays_opaque(channel: grpc.Channel) -> None:
    exc = _call(channel, "DecryptionError")
    assert exc.details() == "protocol failed" and exc.code() == grpc.StatusCode.INTERNAL
    assert isinstance(translate(exc), DecryptionError)


def test_unexpected_errors_name_no_class(channel: grpc.Channel) -> None:
    exc = _call(channel, "unexpected")
    assert exc.code() == grpc.StatusCode.INTERNAL and "secret" not in (exc.details() or "")
    assert all(k != ERROR_KEY for k, _ in exc.trailing_metadata() or ())
    assert type(translate(exc)) is RpcError


def test_metadata_cannot_change_the_status() -> None:
    """A trailer naming a class of another code is ignored: the code decides, the name refines."""
    meta = ((ERROR_KEY, "KeyMismatchError,CryptoError,PuraError"),)
    assert error_class(grpc.StatusCode.NOT_FOUND, meta) is errors.NotFoundError
    assert error_class(grpc.StatusCode.UNAVAILABLE, meta) is None
    assert error_class(grpc.StatusCode.FAILED_PRECONDITION, (("pura-error", "os.system"),)) \
        is None


def test_an_unknown_subclass_arrives_as_its_nearest_known_ancestor() -> None:
    """A newer server may raise a class this client does not know; the ancestors it names let
    the client raise the closest class it does know."""
    meta = ((ERROR_KEY, "ShinyNewRefusal,HelperRefusedError,ProtocolError,PuraError"),)
    assert error_class(grpc.StatusCode.INVALID_ARGUMENT, meta) is HelperRefusedError
    meta = ((ERROR_KEY, "ShinyNewError,ProtocolError,PuraError"),)
    assert error_class(grpc.StatusCode.INVALID_ARGUMENT, meta) is ProtocolError


def test_statuses_without_a_class_use_the_code() -> None:
    assert error_class(grpc.StatusCode.UNAUTHENTICATED, None) is errors.AccessError
    assert error_class(grpc.StatusCode.PERMISSION_DENIED, ()) is errors.PermissionDeniedError
    assert error_class(grpc.StatusCode.INVALID_ARGUMENT, ()) is errors.InvalidArgumentError
    for code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED,
                 grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
        assert error_class(code, ()) is None


def test_table_is_ordered_most_specific_first() -> None:
    """An entry shadowed by an earlier, more general one would never be used."""
    for i, (cls, _) in enumerate(CODES):
        assert not any(issubclass(cls, earlier) for earlier, _ in CODES[:i]), cls
    assert error_metadata(EmbeddingRangeError("x")) == (
        (ERROR_KEY, "EmbeddingRangeError,EncodingError,PuraError"),)
