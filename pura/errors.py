"""One exception hierarchy for the whole project.

Backend exceptions (gmpy2, tenseal, sqlite3, grpc, torch, dlib) are translated into these at exactly
one boundary per backend (``raise XError(...) from exc``), so callers catch ``PuraError`` subclasses
only. Messages describe the *shape* of bad input (lengths, dimensions, parameter-set ids), never
secret values.

Tree::

    PuraError
    ├── ConfigError                  bad configuration, missing files, unsafe permissions
    ├── CryptoError
    │   ├── ParameterError           unknown or insecure parameter set, mismatched parameter-set id
    │   ├── KeyMismatchError         ciphertext or share made under another key
    │   ├── InvalidCiphertextError   malformed / out-of-range / tampered ciphertext bytes
    │   ├── DecryptionError          shares do not combine to a valid plaintext (opaque on purpose)
    │   └── PackingOverflowError     packed value outside its slot bounds
    ├── EncodingError
    │   ├── DimensionError           embedding of the wrong dimension / not finite
    │   └── EmbeddingRangeError      encrypted vector is not the encoding of a unit vector
    ├── ProtocolError                a party received a message it cannot process
    │   ├── HelperRefusedError       B refused a well-formed request outside the protocol's
    │   │                            quotas or sequence (B's own defences)
    │   └── PeerUnavailableError     the other server cannot be reached (retry later)
    ├── InvalidArgumentError         a request field (name, id, threshold) is not acceptable
    ├── StoreError
    │   ├── NotFoundError            unknown collection / subject
    │   └── AlreadyExistsError
    ├── CallAbandonedError           the client gave up on the call; the work stopped
    ├── AccessError
    │   ├── PermissionDeniedError    role not allowed for this operation
    │   └── BudgetExhaustedError     per-client query budget used up
    └── FaceError                    unreadable or too small image ("no face" is a result)
"""

from __future__ import annotations


class PuraError(Exception):
    """Base class of every error Pura raises on purpose."""


class ConfigError(PuraError):
    """Configuration is missing, invalid or unsafe (e.g. a secret key file readable by others)."""


class CryptoError(PuraError):
    """Base class for cryptographic failures."""


class ParameterError(CryptoError):
    """Unknown, insecure or mismatched cryptographic parameter set."""


class KeyMismatchError(CryptoError):
    """An object was produced under a different key than the one supplied."""


class InvalidCiphertextError(CryptoError):
    """Ciphertext bytes are malformed, out of range, or do not belong to the expected key."""


class DecryptionError(CryptoError):
    """Decryption failed. Deliberately undifferentiated: no oracle on *why*."""


class SealError(DecryptionError):
    """A sealed box to B (:mod:`pura.crypto.seal`) did not open: wrong key, wrong context or
    altered bytes. A :class:`DecryptionError`, so it stays just as opaque."""


class PackingOverflowError(CryptoError):
    """A value does not fit the slot bounds of a packed plaintext."""


class EncodingError(PuraError):
    """An embedding could not be encoded."""


class DimensionError(EncodingError):
    """An embedding has the wrong dimension or non-finite entries."""


class EmbeddingRangeError(EncodingError):
    """An encrypted query or template is not the fixed-point encoding of a unit vector.

    Raised when the servers' own check finds a coordinate or the squared norm outside what honest
    encoding can produce (a forged or corrupted upload). Such a vector is rejected: it is never
    answered with "match" or "no match" (see :mod:`pura.protocols.norms`).
    """


class ProtocolError(PuraError):
    """A protocol party received a message it cannot process."""


class PeerUnavailableError(ProtocolError):
    """The other server (B, seen from A) is down or unreachable.

    A subclass of :class:`ProtocolError` so that every place that defers work when a helper
    step fails keeps doing so, but reported to clients as UNAVAILABLE: the request was fine and
    a retry later can succeed (INVALID_ARGUMENT would tell a client never to retry).
    """


class InvalidArgumentError(PuraError):
    """A request field (collection name, subject id, threshold, ...) is outside what the service
    accepts. Raised before any work, with a message that names the rule, never the value."""


class HelperRefusedError(ProtocolError):
    """Server B refused a parseable request that no honest A sends.

    Why a class of its own: a request that breaks B's per-query quotas (a second threshold
    opening, more comparisons than a norm check needs, a preselection ``k`` other than B's
    ``view_k``, an opening of a value outside ``[0, k)``) is evidence of a deviating A, not a
    transport fault. B counts these refusals and logs each one (docs/security.md, "B's
    defences"); callers must not retry them.
    """


class StoreError(PuraError):
    """Persistent store failure."""


class NotFoundError(StoreError):
    """Unknown collection or subject."""


class AlreadyExistsError(StoreError):
    """The object already exists."""


class CallAbandonedError(PuraError):
    """The client cancelled the call (or its deadline passed) while the server worked on it.

    Raised between the stages of a query, so that a server does not finish, and charge, work
    that nobody will read (issue 13, item 9)."""


class AccessError(PuraError):
    """Base class for authorisation failures."""


class PermissionDeniedError(AccessError):
    """The caller's role is not allowed to perform this operation."""


class BudgetExhaustedError(AccessError):
    """The caller's query budget is used up (defence against score probing)."""


class FaceError(PuraError):
    """An image cannot be used (unreadable, too small). "No face" is a result, not this error."""


__all__ = [
    "AccessError",
    "AlreadyExistsError",
    "BudgetExhaustedError",
    "CallAbandonedError",
    "ConfigError",
    "CryptoError",
    "DecryptionError",
    "DimensionError",
    "EmbeddingRangeError",
    "EncodingError",
    "FaceError",
    "HelperRefusedError",
    "InvalidArgumentError",
    "InvalidCiphertextError",
    "KeyMismatchError",
    "NotFoundError",
    "PackingOverflowError",
    "ParameterError",
    "PeerUnavailableError",
    "PermissionDeniedError",
    "ProtocolError",
    "PuraError",
    "SealError",
    "StoreError",
]
