"""The client's exceptions: the core :mod:`pura.errors` hierarchy, plus what only a client raises.

Why no parallel hierarchy: a server answers with a gRPC status; the client translates it back
into the core class through the one errors <-> status table the servers use too
(:mod:`pura.rpc_errors`, applied by :func:`pura_client.client.translate`), so ``except
pura_client.PuraError`` (the same class as :class:`pura.errors.PuraError`) catches everything the
SDK raises on purpose, and code shared with the servers (key loading, encoding) raises the same
classes in both places. The two client-only classes below subclass the core ones.
"""

from __future__ import annotations

from pura.errors import (
    AccessError,
    AlreadyExistsError,
    BudgetExhaustedError,
    ConfigError,
    CryptoError,
    DimensionError,
    EncodingError,
    FaceError,
    InvalidArgumentError,
    KeyMismatchError,
    NotFoundError,
    PeerUnavailableError,
    PermissionDeniedError,
    ProtocolError,
    PuraError,
    StoreError,
)
from pura_client.client import RpcError


class KeyChangedError(KeyMismatchError):
    """Server A now serves other public keys than the ones pinned on first use.

    Why this is an error and not a warning: a client encrypts faces under whatever keys A hands
    out. An A that swapped in keys of its own making (or an attacker in its place) could decrypt
    every template and query encrypted afterwards. Keys change legitimately only with a new key
    ceremony; the operator then says so explicitly (``KnownKeys.forget`` or a new pin file).
    """


__all__ = [
    "AccessError",
    "AlreadyExistsError",
    "BudgetExhaustedError",
    "ConfigError",
    "CryptoError",
    "DimensionError",
    "EncodingError",
    "FaceError",
    "InvalidArgumentError",
    "KeyChangedError",
    "KeyMismatchError",
    "NotFoundError",
    "PeerUnavailableError",
    "PermissionDeniedError",
    "ProtocolError",
    "PuraError",
    "RpcError",
    "StoreError",
]
