"""Pura client SDK.

The front door (five lines, see README "Client SDK")::

    import pura_client

    with pura_client.connect("localhost:50051", "staff", tls=".pura/tls", role="identifier") as c:
        print(c.identify("probe.jpg").subject or "no match")

Public surface: :func:`connect` -> :class:`Client` (``enroll / identify / verify / delete``),
typed results (:class:`Enrolled`, :class:`Identification`, :class:`Verification`,
:class:`Deletion`), :class:`Embedder` (the face pipeline), :class:`KnownKeys` (trust-on-first-use
key pins) and the exceptions of :mod:`pura_client.errors` (the core :class:`PuraError` tree).

Importing ``pura_client`` loads no torch: :class:`Embedder` is resolved on first access, so an
application that sends embeddings, or only deletes, never pays for (or needs) the face pipeline.

Sub-packages:

* ``pura_client.client`` -- :class:`PuraClient`, the implementation behind :class:`Client`.
* ``pura_client.datasets`` -- LFW on disk: people, pairs (View 2), identification splits.
* ``pura_client.embedding`` -- the face pipeline (reference dlib pipeline, torch port) and the
  on-disk embedding cache shared by tests and benchmarks.
* ``pura_client.evaluate`` -- the ``pura-eval`` command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pura_client.errors import (
    AccessError,
    BudgetExhaustedError,
    ConfigError,
    KeyChangedError,
    KeyMismatchError,
    NotFoundError,
    PermissionDeniedError,
    PuraError,
    RpcError,
)
from pura_client.pins import KeyPin, KnownKeys
from pura_client.sdk import (
    Client,
    Collection,
    Deletion,
    Enrolled,
    Identification,
    Verification,
    connect,
)

if TYPE_CHECKING:
    from pura_client.embedding.pipeline import Embedder


def __getattr__(name: str) -> Any:
    """``pura_client.Embedder`` imports torch only when first used."""
    if name == "Embedder":
        from pura_client.embedding.pipeline import Embedder

        return Embedder
    raise AttributeError(f"module 'pura_client' has no attribute {name!r}")


__all__ = [
    "AccessError",
    "BudgetExhaustedError",
    "Client",
    "Collection",
    "ConfigError",
    "Deletion",
    "Embedder",
    "Enrolled",
    "Identification",
    "KeyChangedError",
    "KeyMismatchError",
    "KeyPin",
    "KnownKeys",
    "NotFoundError",
    "PermissionDeniedError",
    "PuraError",
    "RpcError",
    "Verification",
    "connect",
]
