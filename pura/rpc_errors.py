"""The one table between Pura errors and gRPC status codes, read by servers and clients alike.

Why one table: the server used to map errors to codes in one place and the client mapped codes
back to errors in another, and the two disagreed -- a status code is too coarse to name a class
(``EmbeddingRangeError``, ``ProtocolError`` and ``InvalidArgumentError`` all travel as
INVALID_ARGUMENT), so a forged upload reached the client as ``ProtocolError`` and a
configuration fault as ``KeyMismatchError``.

How a class crosses the wire: the server sets the status code from :data:`CODES` and names the
error's class, and its ancestors up to :class:`PuraError`, in the trailing metadata key
:data:`ERROR_KEY` (``"EmbeddingRangeError,EncodingError,PuraError"``). The client raises the first
name it knows, but only if that class's code in this table is the code it received -- the
metadata can make an answer more precise, never turn one status into another. A status without
the key (transport failures, the auth interceptor, ``abort`` calls) falls back to the class of
its code (:data:`FALLBACK`) or, for codes with no class, to the caller's own generic error.

What the metadata reveals: a class name, which the status message already carried
(``status.message_for``); :class:`DecryptionError` stays one opaque class (no oracle on why).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import grpc

from pura import errors
from pura.errors import (
    AccessError,
    AlreadyExistsError,
    BudgetExhaustedError,
    CallAbandonedError,
    ConfigError,
    CryptoError,
    DecryptionError,
    EncodingError,
    FaceError,
    InvalidArgumentError,
    KeyMismatchError,
    NotFoundError,
    ParameterError,
    PeerUnavailableError,
    PermissionDeniedError,
    ProtocolError,
    PuraError,
    StoreError,
)

#: Trailing-metadata key naming the error class (and its ancestors), most specific first.
ERROR_KEY = "pura-error"

#: Error class -> status code, most specific class first (the first ``isinstance`` match wins).
CODES: tuple[tuple[type[PuraError], grpc.StatusCode], ...] = (
    (PeerUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (CallAbandonedError, grpc.StatusCode.CANCELLED),
    (InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (ParameterError, grpc.StatusCode.FAILED_PRECONDITION),
    (KeyMismatchError, grpc.StatusCode.FAILED_PRECONDITION),
    (DecryptionError, grpc.StatusCode.INTERNAL),
    (CryptoError, grpc.StatusCode.INVALID_ARGUMENT),
    (EncodingError, grpc.StatusCode.INVALID_ARGUMENT),
    (FaceError, grpc.StatusCode.INVALID_ARGUMENT),
    (ProtocolError, grpc.StatusCode.INVALID_ARGUMENT),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (BudgetExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (AccessError, grpc.StatusCode.PERMISSION_DENIED),
    (ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (StoreError, grpc.StatusCode.INTERNAL),
)

#: Code -> class for a status that names no class (it did not come from a PuraError: the auth
#: interceptor's refusals, an ``abort`` in a servicer). Codes absent here (UNAVAILABLE from the
#: transport, DEADLINE_EXCEEDED, INTERNAL, RESOURCE_EXHAUSTED "message too large", ...) have no
#: Pura class of their own; the caller raises its generic error for them.
FALLBACK: dict[grpc.StatusCode, type[PuraError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: AccessError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
}


def _known_classes() -> dict[str, type[PuraError]]:
    """Every PuraError class of :mod:`pura.errors` by name: the only classes a status may name
    (a client never instantiates a class a server merely spelt)."""
    return {
        name: cls for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, PuraError) and cls.__module__ == errors.__name__
    }


KNOWN: dict[str, type[PuraError]] = _known_classes()


def code_for(error: PuraError | type[PuraError]) -> grpc.StatusCode:
    """The status code of ``error`` (an instance or a class); INTERNAL for anything unlisted."""
    cls = error if isinstance(error, type) else type(error)
    for listed, code in CODES:
        if issubclass(cls, listed):
            return code
    return grpc.StatusCode.INTERNAL


def error_metadata(error: PuraError) -> tuple[tuple[str, str], ...]:
    """Trailing metadata naming ``error``'s class and its Pura ancestors, most specific first."""
    names = [c.__name__ for c in type(error).__mro__
             if isinstance(c, type) and issubclass(c, PuraError)]
    return ((ERROR_KEY, ",".join(names)),)


def error_class(code: grpc.StatusCode, metadata: Iterable[Any] | None) -> type[PuraError] | None:
    """The class a client raises for a status ``code`` with trailing ``metadata``, or None
    when the status carries no Pura class (the caller raises its generic error).

    ``metadata`` holds ``(key, value)`` pairs (gRPC's trailing metadata)."""
    for key, value in metadata or ():
        if key != ERROR_KEY:
            continue
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        for name in text.split(","):
            cls = KNOWN.get(name.strip())
            if cls is not None and code_for(cls) == code:
                return cls
    return FALLBACK.get(code)


__all__ = ["CODES", "ERROR_KEY", "FALLBACK", "KNOWN", "code_for", "error_class", "error_metadata"]
