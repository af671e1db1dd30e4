"""gRPC servicers of server A: thin adapters from protobuf to :class:`~pura.service.nodes.NodeA`.

Each method: read the caller (set by the auth interceptor, which already enforced the role),
charge the query budget where the RPC answers a biometric question, translate the request,
call the node, translate the answer. Errors become status codes in one place
(:mod:`pura.service.status`). No reply carries a score or a distance.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import grpc

from pura.config import Limits
from pura.errors import (
    AlreadyExistsError,
    CallAbandonedError,
    InvalidArgumentError,
    ProtocolError,
    PuraError,
)
from pura.service import chunks
from pura.service._proto.pura.v1 import common_pb2, pura_pb2, pura_pb2_grpc
from pura.service.interceptors import OpenStream, QueryBudget, StreamGuard, current_principal
from pura.service.nodes import EnrollOutcome, NodeA, QueryUpload, TemplateUpload
from pura.service.status import Deadline, abort, code_for, guarded, guarded_stream, invalid

_Ctx = grpc.ServicerContext
_T = TypeVar("_T")

#: BulkEnroll batches in flight per stream (admission of one overlaps the commit of another).
BULK_PIPELINE = 3


def _upload(request: pura_pb2.EnrollRequest) -> TemplateUpload:
    t = request.template
    return TemplateUpload(
        request.subject_id, request.request_id, t.model_id, t.dim, t.paillier, t.ckks_head
    )


def _query(query: common_pb2.EncryptedQuery) -> QueryUpload:
    return QueryUpload(query.model_id, query.dim, query.paillier, query.ckks_head)


def _status(outcome: EnrollOutcome) -> pura_pb2.EnrollItemStatus:
    code = pura_pb2.EnrollItemStatus
    if outcome.error is not None:
        return code(request_id=outcome.request_id, code=code.REJECTED,
                    message=f"{type(outcome.error).__name__}: {outcome.error}")
    return code(
        request_id=outcome.request_id,
        code=code.ALREADY_ENROLLED if outcome.already_enrolled else code.ENROLLED,
        template_id=outcome.template_id,
    )


def _until_cancelled(
    requests: Iterator[pura_pb2.EnrollRequest], stream: OpenStream
) -> Iterator[pura_pb2.EnrollRequest]:
    """``requests`` until the client ends the stream or the server cancels it for idleness
    (gRPC then raises from the blocked read; nothing of a partial batch is committed)."""
    while True:
        try:
            request = next(requests)
        except StopIteration:
            return
        except grpc.RpcError:
            if stream.cancelled:
                return
            raise
        stream.touch()
        yield request


class PuraServicer(pura_pb2_grpc.PuraServicer):  # type: ignore[misc]
    """The client-facing service."""

    def __init__(
        self, node: NodeA, limits: Limits, budget: QueryBudget, streams: StreamGuard | None = None
    ) -> None:
        self.node = node
        self.limits = limits
        self.budget = budget
        self.streams = streams or StreamGuard(
            per_principal=limits.streams_per_principal, total=limits.open_streams_cap,
            idle_s=limits.stream_idle_s,
        )

    def _deadline(self, context: _Ctx) -> Deadline:
        return Deadline.for_call(
            context, default_s=self.limits.default_deadline_s, cap_s=self.limits.max_deadline_s
        )

    @guarded
    def GetParameters(  # noqa: N802
        self, request: pura_pb2.GetParametersRequest, context: _Ctx
    ) -> pura_pb2.ParametersInfo:
        coll = self.node.collection(request.collection)
        params = self.node.params
        return pura_pb2.ParametersInfo(
            collection=coll.name,
            parameter_set_id=coll.parameter_set_id,
            parameter_set_json=params.to_json(),
            key_id=coll.key_id,
            model_id=coll.model_id,
            fast_profile=params.paillier.security_bits < 128,
            public_keys_size=len(self.node.keys.public.bundle()),
        )

    @guarded_stream
    def GetPublicKeys(  # noqa: N802
        self, request: pura_pb2.GetPublicKeysRequest, context: _Ctx
    ) -> Iterator[pura_pb2.PublicKeyChunk]:
        self.node.collection(request.collection)
        for chunk in chunks.split(self.node.keys.public.bundle()):
            yield pura_pb2.PublicKeyChunk(chunk=chunk)

    @guarded
    def Enroll(  # noqa: N802
        self, request: pura_pb2.EnrollRequest, context: _Ctx
    ) -> pura_pb2.EnrollReply:
        self._deadline(context).check(context, "enrolment")
        ref = request.ref
        [outcome] = self.node.enroll(
            ref.collection, [_upload(request)], current_principal().name,
            parameter_set_id=ref.parameter_set_id, key_id=ref.key_id,
        )
        if outcome.error is not None:
            raise outcome.error
        return pura_pb2.EnrollReply(
            template_id=outcome.template_id,
            subject_id=request.subject_id,
            already_enrolled=outcome.already_enrolled,
        )

    @guarded_stream
    def BulkEnroll(  # noqa: N802
        self, request_iterator: Iterator[pura_pb2.EnrollRequest], context: _Ctx
    ) -> Iterator[pura_pb2.EnrollItemStatus]:
        """Commit in batches of ``limits.bulk_batch``; each item is acknowledged only after its
        batch's transaction committed, so an acknowledged item survives any crash.

        Up to :data:`BULK_PIPELINE` batches are in flight, acknowledged in order: while one
        batch's admission waits for B, A stores and refreshes the one before (issue 14: with
        one batch at a time the two servers took turns and two cores enrolled like one).

        The stream holds a slot of :attr:`streams` (per-principal and total caps) and is
        cancelled by the server when its client stays silent for ``limits.stream_idle_s``."""
        principal = current_principal().name
        with self.streams.admit(principal, context) as stream, ThreadPoolExecutor(
                BULK_PIPELINE, thread_name_prefix="pura-bulk") as workers:
            pending: deque[Future[list[EnrollOutcome]]] = deque()
            batch: list[pura_pb2.EnrollRequest] = []
            for request in _until_cancelled(request_iterator, stream):
                batch.append(request)
                if len(batch) >= self.limits.bulk_batch:
                    pending.append(workers.submit(self._commit, batch, principal, stream))
                    batch = []
                    while len(pending) >= BULK_PIPELINE:
                        yield from self._acknowledge(pending.popleft(), stream)
            if batch and not stream.cancelled:
                pending.append(workers.submit(self._commit, batch, principal, stream))
            while pending:
                yield from self._acknowledge(pending.popleft(), stream)

    def _commit(
        self, batch: list[pura_pb2.EnrollRequest], principal: str, stream: OpenStream
    ) -> list[EnrollOutcome]:
        ref = batch[0].ref
        if any(r.ref != ref for r in batch):
            raise ProtocolError("all items of one BulkEnroll stream must use the same ref")
        with stream.working():
            return self.node.enroll(
                ref.collection, [_upload(r) for r in batch], principal,
                parameter_set_id=ref.parameter_set_id, key_id=ref.key_id,
            )

    @staticmethod
    def _acknowledge(
        done: Future[list[EnrollOutcome]], stream: OpenStream
    ) -> Iterator[pura_pb2.EnrollItemStatus]:
        """A batch's statuses, in order, once its transaction committed."""
        with stream.working():
            outcomes = done.result()
        for outcome in outcomes:
            yield _status(outcome)

    def _answered(self, context: _Ctx, principal: str, run: Callable[[], _T]) -> _T:
        """Run one budgeted query: charged up front (so concurrent calls cannot overspend),
        refunded unless it is answered to a client still waiting for it.

        Why (issue 13, item 9): a client that gave up must not pay for, or keep the server busy
        with, a query nobody will read; ``context.is_active`` is checked before the work and
        between its stages (the node raises :class:`CallAbandonedError`). A query refused as
        malformed is refunded but counted against the malformed budget, which is checked
        first, so that probing the servers' checks stays limited too."""
        self.budget.check_malformed(principal)
        self.budget.charge(principal)
        try:
            if not context.is_active():
                raise CallAbandonedError("the client cancelled the call before it started")
            result = run()
        except PuraError as exc:
            self.budget.refund(principal)
            if code_for(exc) in (grpc.StatusCode.INVALID_ARGUMENT,
                                 grpc.StatusCode.FAILED_PRECONDITION):
                self.budget.record_malformed(principal)
            raise
        except BaseException:
            self.budget.refund(principal)
            raise
        if not context.is_active():
            self.budget.refund(principal)
            raise CallAbandonedError("the client cancelled the call; its answer was not sent")
        return result

    @guarded
    def Identify(  # noqa: N802
        self, request: pura_pb2.IdentifyRequest, context: _Ctx
    ) -> pura_pb2.IdentifyReply:
        deadline = self._deadline(context)
        ref = request.ref
        self.node.collection(ref.collection, parameter_set_id=ref.parameter_set_id,
                             key_id=ref.key_id)
        principal = current_principal().name

        def run() -> str | None:
            deadline.check(context, "identification")
            return self.node.identify(
                ref.collection, _query(request.query), principal,
                parameter_set_id=ref.parameter_set_id, key_id=ref.key_id,
                alive=context.is_active,
            )

        subject = self._answered(context, principal, run)
        decision = common_pb2.MATCH if subject is not None else common_pb2.NO_MATCH
        return pura_pb2.IdentifyReply(
            decision=decision, subject_id=subject or "",
            budget_remaining=self.budget.remaining(principal),
        )

    @guarded
    def Verify(  # noqa: N802
        self, request: pura_pb2.VerifyRequest, context: _Ctx
    ) -> pura_pb2.VerifyReply:
        deadline = self._deadline(context)
        ref = request.ref
        self.node.collection(ref.collection, parameter_set_id=ref.parameter_set_id,
                             key_id=ref.key_id)
        self.budget.check_target(f"{ref.collection}/{request.subject_id}")
        principal = current_principal().name

        def run() -> bool:
            deadline.check(context, "verification")
            return self.node.verify(
                ref.collection, request.subject_id, _query(request.query), principal,
                parameter_set_id=ref.parameter_set_id, key_id=ref.key_id,
                alive=context.is_active,
            )

        matched = self._answered(context, principal, run)
        remaining = self.budget.remaining(principal)
        if not matched:
            self.budget.record_failure(f"{ref.collection}/{request.subject_id}")
        decision = common_pb2.MATCH if matched else common_pb2.NO_MATCH
        return pura_pb2.VerifyReply(decision=decision, budget_remaining=remaining)

    @guarded
    def DeleteSubject(  # noqa: N802
        self, request: pura_pb2.DeleteSubjectRequest, context: _Ctx
    ) -> pura_pb2.DeletionReceipt:
        receipt = self.node.delete(request.collection, request.subject_id,
                                   current_principal().name)
        return pura_pb2.DeletionReceipt(
            collection=receipt.collection,
            subject_id=receipt.subject_id,
            templates_removed=receipt.templates_removed,
            blocks_refreshed=receipt.blocks_refreshed,
            deleted_at=receipt.deleted_at,
            audit_entry_hash=receipt.audit_entry_hash,
        )


class AdminServicer(pura_pb2_grpc.PuraAdminServicer):  # type: ignore[misc]
    """Collection management and operational views (admin, auditor)."""

    def __init__(self, node: NodeA) -> None:
        self.node = node

    @guarded
    def CreateCollection(  # noqa: N802
        self, request: pura_pb2.CreateCollectionRequest, context: _Ctx
    ) -> pura_pb2.CollectionInfo:
        limit = 1 << self.node.exact.compare.dist_bits
        if request.threshold >= limit:
            raise InvalidArgumentError(
                f"threshold must be below 2^{self.node.exact.compare.dist_bits} (the range of the "
                "secure comparison; a larger one could never be used); 0 = the server default")
        try:
            coll = self.node.create_collection(request.collection, threshold=request.threshold)
        except AlreadyExistsError:
            abort(context, grpc.StatusCode.ALREADY_EXISTS,
                  f"collection {request.collection[:64]!r} already exists")
        self.node.audit.append(principal=current_principal().name, action="create-collection",
                               outcome="ok", collection=coll.name)
        return pura_pb2.CollectionInfo(collection=coll.name,
                                       parameter_set_id=coll.parameter_set_id,
                                       key_id=coll.key_id, created_at=coll.created_at)

    @guarded
    def ListSubjects(  # noqa: N802
        self, request: pura_pb2.ListSubjectsRequest, context: _Ctx
    ) -> pura_pb2.ListSubjectsReply:
        size = request.page_size or 1000
        if not 1 <= size <= 10_000:
            invalid(context, "page_size must be in 1..10000")
        try:
            after = base64.urlsafe_b64decode(request.page_token.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            invalid(context, "malformed page_token")
        ids = self.node.store.list_subjects(request.collection, limit=size + 1, after=after)
        token = base64.urlsafe_b64encode(ids[size - 1].encode()).decode() if len(ids) > size else ""
        return pura_pb2.ListSubjectsReply(subject_ids=ids[:size], next_page_token=token)

    @guarded
    def Stats(self, request: pura_pb2.StatsRequest, context: _Ctx) -> pura_pb2.StatsReply:  # noqa: N802
        coll = self.node.collection(request.collection)
        s = self.node.store.stats(request.collection)
        kind, alive, expected = self.node.scorer_status()
        return pura_pb2.StatsReply(
            collection=coll.name, subjects=s.subjects, templates=s.templates, blocks=s.blocks,
            pending_templates=s.pending_templates, template_bytes=s.template_bytes,
            block_bytes=s.block_bytes, parameter_set_id=coll.parameter_set_id,
            identifications=self.node.identifications, scorer=kind, scorer_alive=alive,
            scorer_expected=expected, scorer_description=self.node.scorer_description(),
        )

    @guarded
    def VerifyAuditLog(  # noqa: N802
        self, request: pura_pb2.VerifyAuditLogRequest, context: _Ctx
    ) -> pura_pb2.VerifyAuditLogReply:
        result = self.node.audit.verify()
        return pura_pb2.VerifyAuditLogReply(
            intact=result.intact, entries=result.entries,
            first_bad_index=result.first_bad_index or 0, head_hash=result.head_hash,
        )


def registrars(
    servicer: PuraServicer, admin: AdminServicer
) -> list[Callable[[grpc.Server], None]]:
    """Registrar callables for :func:`pura.service.server.start_server`."""

    def register(server: grpc.Server) -> None:
        pura_pb2_grpc.add_PuraServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        pura_pb2_grpc.add_PuraAdminServicer_to_server(admin, server)  # type: ignore[no-untyped-call]

    return [register]


SERVICE_NAMES = ("pura.v1.Pura", "pura.v1.PuraAdmin")

__all__ = ["SERVICE_NAMES", "AdminServicer", "PuraServicer", "registrars"]
