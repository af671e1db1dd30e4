"""The one boundary where Pura errors become gRPC status codes.

The table itself is :mod:`pura.rpc_errors`, shared with every client. Each class of failure has one
code and a message that describes the *shape* of the problem
(which collection, which parameter-set id, which dimension), never secret values -- the error
hierarchy guarantees the messages are safe to forward. Unexpected exceptions become a generic
INTERNAL without details: their text might carry anything.

"No face" and "no match" are results (fields of replies), never statuses.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NoReturn, ParamSpec, TypeVar

import grpc

from pura.errors import DecryptionError, PuraError
from pura.rpc_errors import code_for, error_metadata

log = logging.getLogger("pura.service")

#: Longest status message sent. Messages may quote request fields (a collection name, a step);
#: a client that sends a 1 MB name must not get it echoed into the trailers, where it would
#: exceed the metadata limit and turn the answer into RESOURCE_EXHAUSTED.
MAX_MESSAGE_CHARS = 512


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to ``limit`` characters (with a marker saying how much was dropped)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def message_for(error: PuraError) -> str:
    """Client-visible message. DecryptionError stays opaque on purpose (no oracle)."""
    if isinstance(error, DecryptionError):
        return "protocol failed"
    return shorten(f"{type(error).__name__}: {error}")


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, shorten(message))
    raise AssertionError("grpc abort returned")  # abort always raises; keeps mypy's NoReturn


def invalid(context: grpc.ServicerContext, message: str) -> NoReturn:
    abort(context, grpc.StatusCode.INVALID_ARGUMENT, message)


P = ParamSpec("P")
R = TypeVar("R")


def _is_abort(exc: BaseException) -> bool:
    """grpc's ``context.abort`` raises a bare ``Exception()``; it must pass through untouched."""
    return type(exc) is Exception and not exc.args


def _translate(context: object, exc: Exception, name: str) -> NoReturn:
    if isinstance(exc, PuraError) and isinstance(context, grpc.ServicerContext):
        context.set_trailing_metadata(error_metadata(exc))  # the class, for the client's table
        abort(context, code_for(exc), message_for(exc))
    if _is_abort(exc) or not isinstance(context, grpc.ServicerContext):
        raise exc
    log.exception("unexpected error in %s", name)
    abort(context, grpc.StatusCode.INTERNAL, "internal error")


def guarded(method: Callable[P, R]) -> Callable[P, R]:
    """Decorator for unary-response servicer methods ``(self, request, context)``: translate
    PuraError into its status, hide anything unexpected behind INTERNAL."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            _translate(args[2] if len(args) > 2 else None, exc, method.__name__)

    return wrapper


def guarded_stream(method: Callable[P, Iterator[R]]) -> Callable[P, Iterator[R]]:
    """Same as :func:`guarded` for response-streaming methods (errors surface while iterating)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Iterator[R]:
        try:
            yield from method(*args, **kwargs)
        except Exception as exc:
            _translate(args[2] if len(args) > 2 else None, exc, method.__name__)

    return wrapper


@dataclass
class Deadline:
    """Server-side deadline: the client's, capped, or a default when the client sent none
    (threat T21: calls without deadlines must still end)."""

    expires_at: float

    @classmethod
    def for_call(
        cls, context: grpc.ServicerContext, *, default_s: float, cap_s: float
    ) -> Deadline:
        remaining = context.time_remaining()
        budget = default_s if remaining is None else min(float(remaining), cap_s)
        return cls(time.monotonic() + budget)

    def check(self, context: grpc.ServicerContext, step: str) -> None:
        if time.monotonic() > self.expires_at:
            abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded before {step}")

    def remaining(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())


__all__ = [
    "MAX_MESSAGE_CHARS", "Deadline", "abort", "code_for", "guarded", "guarded_stream", "invalid",
    "message_for", "shorten",
]
