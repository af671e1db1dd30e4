"""The front door of the client SDK: ``pura_client.connect(...)`` returns a :class:`Client`.

    import pura_client

    with pura_client.connect("localhost:50051", "staff", tls=".pura/tls", role="identifier") as c:
        print(c.identify("probe.jpg").subject or "no match")

Design, in the manner of httpx: one function that opens a connection, one object with the four
verbs (``enroll / identify / verify / delete``), typed frozen results (no generated ``_pb2``
message leaves this module), and the core exception hierarchy (:mod:`pura_client.errors`).
:class:`~pura_client.client.PuraClient` stays the implementation (streams, admin calls,
encrypted parts) and remains available as :attr:`Client.raw` for what the front door leaves out.

A face is either an embedding (a vector of the collection's model, any array-like) or an image
(a path, encoded bytes, or an ``H x W x 3`` uint8 array), which is embedded here with the client
pipeline of the collection's face model (A announces it; SFace by default; torch, loaded on first
use) and encrypted with that model's shipped PCA rotation. ``connect(..., model=ID)`` states the
model the caller means to use: another model than the collection's is refused with both ids named
(templates of two models cannot be compared; the collection must be re-enrolled under the new
one). "No face in the image" is a result (``face_found=False``), not an error.

Keys are pinned by default (:mod:`pura_client.pins`): the first public keys seen for an
(address, collection) are written to ``known_keys.json`` and any later change is refused with
:class:`~pura_client.errors.KeyChangedError` before anything is encrypted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from pura.crypto.encoding import PCARotation, load_shipped_pca
from pura.crypto.params import model_mismatch_message
from pura.errors import ParameterError
from pura.keys import PublicKeys, load_public_keys
from pura_client.client import DEFAULT_IDLE_TIMEOUT_S, EnrollStatus, PuraClient
from pura_client.pins import KeyPin, KnownKeys

if TYPE_CHECKING:
    from pura_client.embedding.types import FaceResult

#: An embedding (array-like of the model's ``dim`` floats) or an image (path, encoded bytes,
#: HxWx3 uint8 array).
Face: TypeAlias = "npt.ArrayLike | str | Path | bytes"


class FaceEmbedder(Protocol):
    """What :class:`Client` needs of an embedder (``pura_client.Embedder`` has it)."""

    def embed_results(self, images: Sequence[Any]) -> list[FaceResult]: ...


@dataclass(frozen=True)
class Enrolled:
    """Outcome of :meth:`Client.enroll`; ``template_id`` is None when the image held no face."""

    subject: str
    template_id: str | None

    @property
    def face_found(self) -> bool:
        return self.template_id is not None


@dataclass(frozen=True)
class Identification:
    """Outcome of :meth:`Client.identify`: the matched subject, or None for "no match".

    ``budget_remaining`` is the caller's query budget after this query (None when no query was
    sent because the image held no face). The client never sees a score.
    """

    subject: str | None
    budget_remaining: int | None
    face_found: bool = True

    @property
    def matched(self) -> bool:
        return self.subject is not None


@dataclass(frozen=True)
class Verification:
    """Outcome of :meth:`Client.verify` (1:1 against ``subject``)."""

    subject: str
    matched: bool
    face_found: bool = True


@dataclass(frozen=True)
class Deletion:
    """A deletion receipt: what A removed and the audit-log entry that records it."""

    collection: str
    subject: str
    templates_removed: int
    blocks_refreshed: int
    deleted_at: str
    audit_entry_hash: str


@dataclass(frozen=True)
class Collection:
    """A collection as A created it (its key and parameter set are bound at creation)."""

    name: str
    parameter_set_id: str
    key_id: str
    created_at: str


class Client:
    """A connection to server A for one collection; build it with :func:`connect`."""

    def __init__(
        self, raw: PuraClient, address: str, *, known_keys: KnownKeys | None,
        embedder: FaceEmbedder | None = None, pca: PCARotation | Path | str | None = None,
        model: str | None = None,
    ) -> None:
        self.raw = raw
        self.address = address
        self.known_keys = known_keys
        self._embedder = embedder
        self._pin: KeyPin | None = None
        self._pca_source = pca
        self._model = model
        self._pca_ready = False

    def __repr__(self) -> str:
        return f"Client(address={self.address!r}, collection={self.collection!r})"

    @property
    def collection(self) -> str:
        return self.raw.collection

    @property
    def model_id(self) -> str:
        """The collection's face model (as A announces it); ParameterError naming both ids when
        :func:`connect` was told another ``model``."""
        announced = str(self.raw.parameters().model_id)
        if self._model and self._model != announced:
            raise ParameterError(model_mismatch_message(self.collection, announced, self._model))
        return announced

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- keys ------------------------------------------------------------------------------

    def public_keys(self) -> PublicKeys:
        """The keys this client encrypts under, checked against the pin (first use pins them).

        Called before every encryption: nothing is encrypted under keys that were not checked.
        """
        keys = self.raw.public_keys()
        if self.known_keys is not None and self._pin is None:
            self._pin = self.known_keys.check(self.address, self.collection, keys)
        if not self._pca_ready:
            self.raw.use_pca(_pca(self._pca_source, self.model_id))
            self._pca_ready = True
        return keys

    @property
    def key_pin(self) -> KeyPin | None:
        """The pin the keys were checked against (None before first use or when pinning is off)."""
        return self._pin

    # --- faces -----------------------------------------------------------------------------

    def embedder(self) -> FaceEmbedder:
        """The embedder for images (torch; created on first use, so embeddings-only callers
        never load it)."""
        if self._embedder is None:
            from pura_client.embedding.aligned import pipeline_for

            self._embedder = pipeline_for(self.model_id, device="auto")
        return self._embedder

    def _vector(self, face: Face) -> npt.NDArray[np.float64] | None:
        """The embedding of ``face``, or None when ``face`` is an image without a face."""
        if isinstance(face, (str, Path, bytes)) or (
            isinstance(face, np.ndarray) and face.ndim == 3
        ):
            [result] = self.embedder().embed_results([face])
            if result.descriptor is None:
                return None
            return np.asarray(result.descriptor, dtype=np.float64)
        return np.asarray(face, dtype=np.float64)

    # --- the four verbs --------------------------------------------------------------------

    def enroll(self, subject: str, face: Face, *, request_id: str | None = None) -> Enrolled:
        """Encrypt here and enrol one face of ``subject`` (idempotent per ``request_id``)."""
        vector = self._vector(face)
        if vector is None:
            return Enrolled(subject, None)
        self.public_keys()
        return Enrolled(subject, self.raw.enroll(subject, vector, request_id))

    def enroll_many(
        self, items: Iterable[tuple[str, npt.ArrayLike, str]],
        *, idle_timeout_s: float | None = None,
    ) -> list[EnrollStatus]:
        """Stream (subject, embedding, request_id) items through BulkEnroll (resumable)."""
        self.public_keys()
        return self.raw.bulk_enroll(list(items), idle_timeout_s=idle_timeout_s)

    def identify(self, face: Face) -> Identification:
        """1:N: the enrolled subject this face belongs to, or no match (never a score)."""
        vector = self._vector(face)
        if vector is None:
            return Identification(None, None, face_found=False)
        self.public_keys()
        decision = self.raw.identify(vector)
        return Identification(decision.subject, decision.budget_remaining)

    def verify(self, subject: str, face: Face) -> Verification:
        """1:1: does this face belong to ``subject``?"""
        vector = self._vector(face)
        if vector is None:
            return Verification(subject, matched=False, face_found=False)
        self.public_keys()
        return Verification(subject, self.raw.verify(subject, vector))

    def delete(self, subject: str) -> Deletion:
        """Remove every template of ``subject``; returns A's receipt."""
        r = self.raw.delete(subject)
        return Deletion(r.collection, r.subject_id, int(r.templates_removed),
                        int(r.blocks_refreshed), r.deleted_at, r.audit_entry_hash)

    def create_collection(self, threshold: int = 0) -> Collection:
        """Create this client's collection (admin role); ``threshold`` 0 = the server default."""
        info = self.raw.create_collection(threshold)
        return Collection(info.collection, info.parameter_set_id, info.key_id, info.created_at)

    def subjects(self) -> list[str]:
        """Enrolled subject ids (admin / auditor roles)."""
        return self.raw.list_subjects()


def _pca(pca: PCARotation | Path | str | None, model_id: str) -> PCARotation:
    """The rotation to encrypt with: given, loaded from a file (checked to be ``model_id``'s), or
    the one shipped for ``model_id`` (the collection's model)."""
    if isinstance(pca, PCARotation):
        return pca
    if pca is None:
        return load_shipped_pca(model_id)
    return PCARotation.load(Path(pca), model_id=model_id)


def connect(
    address: str,
    collection: str,
    *,
    tls: Path | str | None,
    role: str = "identifier",
    token: str | None = None,
    pca: PCARotation | Path | str | None = None,
    known_keys: KnownKeys | Path | str | None = None,
    pin_keys: bool = True,
    trusted_keys: PublicKeys | Path | str | None = None,
    embedder: FaceEmbedder | None = None,
    timeout_s: float = 300.0,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    model: str | None = None,
) -> Client:
    """Open a connection to server A for ``collection``.

    ``tls``: directory made by ``pura certs`` (``ca.pem`` and ``<role>.pem``/``.key``); None means
    plaintext, which a server accepts only in dev mode. ``role``: which certificate to present
    (enroller, identifier, admin, auditor); it decides what the client may do.

    Keys: with ``trusted_keys`` (the key authority's ``public/`` directory, or loaded keys) A
    must announce exactly those. Otherwise, and by default, keys are pinned on first use in
    ``known_keys`` (a path or :class:`KnownKeys`; default ``~/.config/pura/known_keys.json``)
    and a later change is refused. ``pin_keys=False`` turns pinning off (then a malicious A could
    hand out keys it can decrypt with; only for throw-away test servers).

    Face model: images are embedded with the collection's model and encrypted with its shipped
    PCA rotation (``pca`` overrides the rotation: a :class:`PCARotation` or a file, checked to be
    the collection's model's). ``model``: the model id the caller means to use; when it is not
    the collection's, the first embedding or encryption raises ParameterError naming both.
    """
    if isinstance(trusted_keys, (str, Path)):
        trusted_keys = load_public_keys(Path(trusted_keys))
    pins: KnownKeys | None = None
    if pin_keys and trusted_keys is None:
        pins = known_keys if isinstance(known_keys, KnownKeys) else KnownKeys(known_keys)
    raw = PuraClient.connect(
        address, collection, tls_dir=None if tls is None else Path(tls), cert_name=role,
        token=token, timeout_s=timeout_s, trusted_keys=trusted_keys,
        idle_timeout_s=idle_timeout_s,
    )
    return Client(raw, address, known_keys=pins, embedder=embedder, pca=pca, model=model)


__all__ = [
    "Client",
    "Collection",
    "Deletion",
    "Enrolled",
    "Face",
    "FaceEmbedder",
    "Identification",
    "Verification",
    "connect",
]
