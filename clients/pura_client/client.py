"""Python client for server A: enrol, identify, verify, delete, list subjects, stats.

The client encrypts on its side (:class:`~pura_client.encryptor.Encryptor`, public keys only)
and receives decisions only. Public keys are fetched once per collection (chunked stream) and
checked against the key id A announces; the client refuses to encrypt under keys whose id does
not match (a swapped key would let whoever holds its secret read the templates).

gRPC failures are translated into the :mod:`pura.errors` hierarchy at this one boundary.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy.typing as npt

from pura.config import Limits
from pura.crypto.encoding import PCARotation
from pura.errors import (
    ConfigError,
    KeyMismatchError,
    PuraError,
)
from pura.keys import PublicKeys
from pura.rpc_errors import error_class
from pura.transport import join, secure_channel
from pura_client._proto.pura.v1 import common_pb2, pura_pb2, pura_pb2_grpc
from pura_client.encryptor import EncryptedParts, Encryptor

#: Default for :attr:`PuraClient.idle_timeout_s`: a bulk stream fails after this long with neither
#: an item sent nor a status received. A server acknowledges a batch (``bulk_batch`` items: 64 by
#: default, 16 in the demo) at once after committing it, so this must cover one whole batch at
#: the slowest rate a loaded server has: 0.16 templates/s was measured at 3072 bits on 2 cores
#: under a load average of 25 (bench/README.md), i.e. 400 s for 64 templates.
DEFAULT_IDLE_TIMEOUT_S = 900.0


class RpcError(PuraError):
    """A call failed for a reason with no more specific Pura class (UNAVAILABLE, INTERNAL...)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code


def translate(exc: grpc.RpcError) -> PuraError:
    """grpc.RpcError -> the Pura error class the server raised, by the shared table
    (:mod:`pura.rpc_errors`); :class:`RpcError` for a status that names no Pura class."""
    code, details = exc.code(), exc.details() or ""
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    cls = error_class(code, trailers)
    return cls(f"{code.name}: {details}") if cls is not None else RpcError(code, details)


class Cancellable(Protocol):
    """What :class:`IdleWatchdog` needs of a call (a gRPC streaming call has it)."""

    def cancel(self) -> bool: ...


class IdleWatchdog:
    """Cancels a streaming call once it has made no progress for ``idle_s`` seconds.

    Why not a total deadline: the time a bulk enrolment takes grows with its length (and with
    the servers' load), so any fixed deadline either fails long honest streams (the first
    ``pura demo`` on a loaded 2-core machine did, at 300 s) or is too long to notice a stuck
    one. Progress is an item handed to gRPC or a status received; the call is cancelled when
    neither happened for ``idle_s``, and :attr:`fired` tells the caller why it ended.
    """

    def __init__(
        self, idle_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if idle_s <= 0:
            raise ConfigError(f"idle timeout must be positive, got {idle_s}")
        self.idle_s = idle_s
        self._clock = clock
        self._last = clock()
        self._call: Cancellable | None = None
        self._stop = threading.Event()
        self.fired = False
        self._thread = threading.Thread(target=self._run, name="pura-idle-watchdog",
                                        daemon=True)

    def watch(self, call: Cancellable) -> None:
        """Start watching ``call`` (anything with ``cancel()``)."""
        self._call = call
        self._last = self._clock()
        self._thread.start()

    def progress(self) -> None:
        self._last = self._clock()

    def idle_for(self) -> float:
        return self._clock() - self._last

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.idle_s / 4)):
            if self.idle_for() > self.idle_s:
                self.fired = True
                if self._call is not None:
                    self._call.cancel()
                return


@dataclass(frozen=True)
class Decision:
    """Answer of identify: ``subject`` is None for "no match" (a result, not an error)."""

    subject: str | None
    budget_remaining: int

    @property
    def matched(self) -> bool:
        return self.subject is not None


@dataclass(frozen=True)
class EnrollStatus:
    """Per-item outcome of a bulk enrolment."""

    request_id: str
    code: str  # "enrolled" | "already-enrolled" | "rejected"
    template_id: str
    message: str


class PuraClient:
    """One connection to server A for one collection."""

    def __init__(
        self,
        channel: grpc.Channel,
        collection: str,
        *,
        pca: PCARotation | None = None,
        token: str | None = None,
        timeout_s: float = 300.0,
        trusted_keys: PublicKeys | None = None,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    ) -> None:
        self.channel = channel
        self._trusted = trusted_keys
        self.collection = collection
        self._pca = pca
        self._stub = pura_pb2_grpc.PuraStub(channel)  # type: ignore[no-untyped-call]
        self._admin = pura_pb2_grpc.PuraAdminStub(channel)  # type: ignore[no-untyped-call]
        self._metadata: tuple[tuple[str, str | bytes], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._timeout = timeout_s  # unary calls; streams of unbounded length use idle_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._keys: PublicKeys | None = None
        self._encryptor: Encryptor | None = None
        self._info: pura_pb2.ParametersInfo | None = None

    @classmethod
    def connect(
        cls,
        address: str,
        collection: str,
        *,
        tls_dir: Path | None,
        cert_name: str,
        pca: PCARotation | None = None,
        token: str | None = None,
        timeout_s: float = 300.0,
        trusted_keys: PublicKeys | None = None,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    ) -> PuraClient:
        """mTLS with ``<tls_dir>/<cert_name>.pem`` (its role decides what the client may do).

        ``timeout_s`` bounds each unary call; a bulk enrolment has no total deadline and fails
        only after ``idle_timeout_s`` without progress (see :class:`IdleWatchdog`).
        """
        channel = secure_channel(address, tls_dir, cert_name, Limits())
        return cls(channel, collection, pca=pca, token=token, timeout_s=timeout_s,
                   trusted_keys=trusted_keys, idle_timeout_s=idle_timeout_s)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> PuraClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PuraClient(collection={self.collection!r})"

    def _call(self, fn: Callable[..., Any], request: object) -> Any:
        try:
            return fn(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise translate(exc) from None

    # --- parameters and keys ---------------------------------------------------------------

    def parameters(self) -> pura_pb2.ParametersInfo:
        if self._info is None:
            self._info = self._call(
                self._stub.GetParameters, pura_pb2.GetParametersRequest(collection=self.collection)
            )
        return self._info

    def public_keys(self) -> PublicKeys:
        """The keys to encrypt under.

        With ``trusted_keys`` (loaded from the key authority's ``public/`` directory) the client
        only checks that A announces the same key id: a server A that handed out keys of its
        own making could otherwise decrypt everything encrypted under them. Without it the keys
        are fetched once from A (chunked) and checked against the ids A announces, which only
        protects against corruption, not against a malicious A.
        """
        if self._keys is None and self._trusted is not None:
            info = self.parameters()
            if (info.key_id, info.parameter_set_id) != (
                self._trusted.key_id, self._trusted.parameters.id
            ):
                raise KeyMismatchError(
                    f"server announces key {info.key_id}, trusted key is {self._trusted.key_id}"
                )
            self._keys = self._trusted
        if self._keys is None:
            info = self.parameters()
            request = pura_pb2.GetPublicKeysRequest(collection=self.collection)
            try:
                stream = self._stub.GetPublicKeys(request, timeout=self._timeout,
                                                  metadata=self._metadata)
                blob = join((m.chunk for m in stream), max_total=1 << 30)
            except grpc.RpcError as exc:
                raise translate(exc) from None
            keys = PublicKeys.from_bundle(blob)
            if keys.key_id != info.key_id or keys.parameters.id != info.parameter_set_id:
                raise KeyMismatchError("public keys do not match the collection's key id")
            self._keys = keys
        return self._keys

    def use_pca(self, pca: PCARotation) -> None:
        """Encrypt with ``pca`` (the rotation of the collection's model, known once A has said
        which model that is: ``parameters().model_id``). Only before the first encryption."""
        if self._encryptor is not None:
            raise ConfigError("this client already encrypts with another PCA rotation")
        self._pca = pca

    def encryptor(self) -> Encryptor:
        if self._encryptor is None:
            if self._pca is None:
                raise ConfigError("this client has no PCA rotation; pass pca= to encrypt")
            self._encryptor = Encryptor(self.public_keys(), self._pca)
        return self._encryptor

    def _ref(self) -> common_pb2.CollectionRef:
        info = self.parameters()
        return common_pb2.CollectionRef(
            collection=self.collection, parameter_set_id=info.parameter_set_id,
            key_id=info.key_id,
        )

    def _template(self, parts: EncryptedParts) -> common_pb2.EncryptedTemplate:
        enc = self.public_keys().parameters.encoding
        return common_pb2.EncryptedTemplate(
            model_id=enc.model_id, dim=enc.dim, paillier=parts.paillier, ckks_head=parts.ckks_head
        )

    def _query(self, parts: EncryptedParts) -> common_pb2.EncryptedQuery:
        enc = self.public_keys().parameters.encoding
        return common_pb2.EncryptedQuery(
            model_id=enc.model_id, dim=enc.dim, paillier=parts.paillier, ckks_head=parts.ckks_head
        )

    # --- enrolment -------------------------------------------------------------------------

    def enroll_encrypted(
        self, subject: str, parts: EncryptedParts, request_id: str | None = None
    ) -> pura_pb2.EnrollReply:
        request = pura_pb2.EnrollRequest(
            ref=self._ref(), subject_id=subject, template=self._template(parts),
            request_id=request_id or uuid.uuid4().hex,
        )
        reply: pura_pb2.EnrollReply = self._call(self._stub.Enroll, request)
        return reply

    def enroll(self, subject: str, embedding: npt.ArrayLike, request_id: str | None = None) -> str:
        """Encrypt and enrol one face; returns the template id."""
        reply = self.enroll_encrypted(subject, self.encryptor().template(embedding), request_id)
        return str(reply.template_id)

    def bulk_enroll_encrypted(
        self, items: Iterable[tuple[str, EncryptedParts, str]],
        *, idle_timeout_s: float | None = None,
    ) -> Iterator[EnrollStatus]:
        """Stream (subject, parts, request_id); yields each item's status once committed.

        No total deadline: the stream may run as long as it keeps making progress (an item
        sent or a status received at least every ``idle_timeout_s``, default
        :attr:`idle_timeout_s`); otherwise it is cancelled and raises :class:`RpcError` with
        ``DEADLINE_EXCEEDED``. Resumable: re-sending items with the same request ids after a
        failure yields "already-enrolled" for those the server had committed.
        """
        ref = self._ref()
        watchdog = IdleWatchdog(idle_timeout_s or self.idle_timeout_s)

        def requests() -> Iterator[pura_pb2.EnrollRequest]:
            for subject, parts, request_id in items:
                watchdog.progress()
                yield pura_pb2.EnrollRequest(ref=ref, subject_id=subject,
                                             template=self._template(parts),
                                             request_id=request_id)
                watchdog.progress()

        names = {1: "enrolled", 2: "already-enrolled", 3: "rejected"}
        call = self._stub.BulkEnroll(requests(), metadata=self._metadata)
        watchdog.watch(call)
        done = 0
        try:
            for status in call:
                watchdog.progress()
                done += 1
                yield EnrollStatus(status.request_id, names.get(status.code, "unknown"),
                                   status.template_id, status.message)
        except grpc.RpcError as exc:
            if watchdog.fired:
                raise RpcError(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"bulk enrolment made no progress for {watchdog.idle_s:.0f} s "
                               f"(idle timeout) after {done} acknowledged items") from None
            raise translate(exc) from None
        finally:
            watchdog.close()
            call.cancel()  # no-op once finished; frees the stream if the caller stopped early

    def bulk_enroll(
        self, items: Sequence[tuple[str, npt.ArrayLike, str]],
        on_status: Callable[[EnrollStatus], None] | None = None,
        *, idle_timeout_s: float | None = None,
    ) -> list[EnrollStatus]:
        """Encrypt lazily while streaming (subject, embedding, request_id) items (no total
        deadline; see :meth:`bulk_enroll_encrypted`)."""
        enc = self.encryptor()
        parts = ((s, enc.template(e), r) for s, e, r in items)
        out = []
        for status in self.bulk_enroll_encrypted(parts, idle_timeout_s=idle_timeout_s):
            out.append(status)
            if on_status is not None:
                on_status(status)
        return out

    # --- matching --------------------------------------------------------------------------

    def identify_encrypted(self, parts: EncryptedParts) -> Decision:
        request = pura_pb2.IdentifyRequest(ref=self._ref(), query=self._query(parts))
        reply = self._call(self._stub.Identify, request)
        matched = reply.decision == common_pb2.MATCH
        return Decision(reply.subject_id if matched else None, reply.budget_remaining)

    def identify(self, embedding: npt.ArrayLike) -> Decision:
        return self.identify_encrypted(self.encryptor().query(embedding))

    def verify_encrypted(self, subject: str, parts: EncryptedParts) -> bool:
        request = pura_pb2.VerifyRequest(ref=self._ref(), subject_id=subject,
                                         query=self._query(parts))
        return bool(self._call(self._stub.Verify, request).decision == common_pb2.MATCH)

    def verify(self, subject: str, embedding: npt.ArrayLike) -> bool:
        return self.verify_encrypted(subject, self.encryptor().query(embedding))

    # --- deletion and admin ----------------------------------------------------------------

    def delete(self, subject: str) -> pura_pb2.DeletionReceipt:
        request = pura_pb2.DeleteSubjectRequest(collection=self.collection, subject_id=subject)
        receipt: pura_pb2.DeletionReceipt = self._call(self._stub.DeleteSubject, request)
        return receipt

    def create_collection(self, threshold: int = 0) -> pura_pb2.CollectionInfo:
        request = pura_pb2.CreateCollectionRequest(collection=self.collection, threshold=threshold)
        info: pura_pb2.CollectionInfo = self._call(self._admin.CreateCollection, request)
        return info

    def list_subjects(self, page_size: int = 1000) -> list[str]:
        out: list[str] = []
        token = ""
        while True:
            reply = self._call(self._admin.ListSubjects, pura_pb2.ListSubjectsRequest(
                collection=self.collection, page_size=page_size, page_token=token))
            out.extend(reply.subject_ids)
            token = reply.next_page_token
            if not token:
                return out

    def stats(self) -> pura_pb2.StatsReply:
        reply: pura_pb2.StatsReply = self._call(
            self._admin.Stats, pura_pb2.StatsRequest(collection=self.collection)
        )
        return reply

    def verify_audit_log(self) -> pura_pb2.VerifyAuditLogReply:
        reply: pura_pb2.VerifyAuditLogReply = self._call(
            self._admin.VerifyAuditLog, pura_pb2.VerifyAuditLogRequest()
        )
        return reply


__all__ = [
    "DEFAULT_IDLE_TIMEOUT_S",
    "Decision",
    "EnrollStatus",
    "IdleWatchdog",
    "PuraClient",
    "RpcError",
    "translate",
]
