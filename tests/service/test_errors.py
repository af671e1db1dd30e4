"""Every error the service promises, with its gRPC status code, over real mTLS.

Unknown collection, wrong parameter set or key, malformed ciphertext, wrong dimension, role not
allowed (full role x RPC matrix), budget exhausted, oversized message. "No match" is a result and
is covered in test_rpcs.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from pura_client.encryptor import EncryptedParts

from pura.errors import BudgetExhaustedError
from pura.protocols.messages import PaillierQuery
from pura.service._proto.pura.v1 import common_pb2, pura_pb2, pura_pb2_grpc
from pura.service.server import secure_channel

from .conftest import COLLECTION, Deployment


@pytest.fixture(scope="module")
def parts(deployment: Deployment) -> tuple[EncryptedParts, EncryptedParts]:
    """(template, query) of one real LFW face, encrypted once for the module."""
    with deployment.client("enroller") as client:
        enc = client.encryptor()
        return enc.template(deployment.faces.gallery[0]), enc.query(deployment.faces.probes[0])


@pytest.fixture(scope="module")
def stubs(deployment: Deployment) -> Iterator[Callable[[str], pura_pb2_grpc.PuraStub]]:
    channels: list[grpc.Channel] = []

    def make(role: str) -> pura_pb2_grpc.PuraStub:
        channel = secure_channel(deployment.address, deployment.tls, role)
        channels.append(channel)
        return pura_pb2_grpc.PuraStub(channel)  # type: ignore[no-untyped-call]

    yield make
    for channel in channels:
        channel.close()


def _ref(deployment: Deployment, **override: str) -> common_pb2.CollectionRef:
    info = deployment.a.node.collection(COLLECTION)
    fields = {"collection": COLLECTION, "parameter_set_id": info.parameter_set_id,
              "key_id": info.key_id, **override}
    return common_pb2.CollectionRef(**fields)


def _query(parts: EncryptedParts, **override: object) -> common_pb2.EncryptedQuery:
    fields: dict[str, Any] = {"model_id": "dlib_face_recognition_resnet_model_v1", "dim": 128,
                                 "paillier": parts.paillier, "ckks_head": parts.ckks_head}
    fields.update(override)
    return common_pb2.EncryptedQuery(**fields)


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details() or ""


def test_unknown_collection_is_not_found(
    deployment: Deployment, stubs: Callable[[str], pura_pb2_grpc.PuraStub],
    parts: tuple[EncryptedParts, EncryptedParts],
) -> None:
    stub = stubs("identifier")
    code, msg = _code(lambda: stub.GetParameters(pura_pb2.GetParametersRequest(collection="nope")))
    assert code == grpc.StatusCode.NOT_FOUND and "unknown collection" in msg
    request = pura_pb2.IdentifyRequest(ref=_ref(deployment, collection="nope"),
                                       query=_query(parts[1]))
    assert _code(lambda: stub.Identify(request))[0] == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("field", ["parameter_set_id", "key_id"])
def test_wrong_parameter_set_or_key_is_failed_precondition(
    deployment: Deployment, stubs: Callable[[str], pura_pb2_grpc.PuraStub],
    parts: tuple[EncryptedParts, EncryptedParts], field: str,
) -> None:
    request = pura_pb2.IdentifyRequest(ref=_ref(deployment, **{field: "other"}),
                                       query=_query(parts[1]))
    code, msg = _code(lambda: stubs("identifier").Identify(request))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert ("parameter set" if field == "parameter_set_id" else "key") in msg


def test_ciphertext_under_another_key_is_refused(
    deployment: Deployment, stubs: Callable[[str], pura_pb2_grpc.PuraStub], tmp_path: Path,
) -> None:
    from pura_client.encryptor import Encryptor

    from pura.crypto.params import DLIB_FAST_PARAMETERS
    from pura.keys import generate_key_set

    other = generate_key_set(tmp_path / "other", DLIB_FAST_PARAMETERS)
    foreign = Encryptor(other, deployment.pca).template(deployment.faces.gallery[0])
    request = pura_pb2.EnrollRequest(
        ref=_ref(deployment), subject_id="mallory", request_id=secrets.token_hex(8),
        template=common_pb2.EncryptedTemplate(
            model_id="dlib_face_recognition_resnet_model_v1", dim=128,
            paillier=foreign.paillier, ckks_head=foreign.ckks_head),
    )
    code, msg = _code(lambda: stubs("enroller").Enroll(request))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "key" in msg


@pytest.mark.parametrize(
    "mangle",
    [
        {"paillier": b""},
        {"paillier": "valid-header+garbage"},
        {"ckks_head": secrets.token_bytes(100)},
        {"ckks_head": b"\x00\x00\x00\x01" + b"\x00" * 8},
    ],
    ids=["empty-paillier", "garbage-paillier", "garbage-ckks", "truncated-ckks"],
)
def test_malformed_ciphertext_is_invalid_argument(
    deployment: Deployment, stubs: Callable[[str], pura_pb2_grpc.PuraStub],
    parts: tuple[EncryptedParts, EncryptedParts], mangle: dict[str, Any],
) -> None:
    if mangle.get("paillier") == "valid-header+garbage":  # right key fingerprint, bad body
        mangle = {"paillier": parts[1].paillier[:12] + secrets.token_bytes(300)}
    request = pura_pb2.IdentifyRequest(ref=_ref(deployment), query=_query(parts[1], **mangle))
    code, _ = _code(lambda: stubs("identifier").Identify(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert deployment.a.running.server is not None  # and the server stays up:
    with deployment.client("identifier") as client:
        assert client.parameters().collection == COLLECTION


def test_wrong_dimension_is_invalid_argument(
    deployment: Deployment, stubs: Callable[[str], pura_pb2_grpc.PuraStub],
    parts: tuple[EncryptedParts, EncryptedParts],
) -> None:
    request = pura_pb2.IdentifyRequest(ref=_ref(deployment), query=_query(parts[1], dim=127))
    code, msg = _code(lambda: stubs("identifier").Identify(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "dimension" in msg
    # the declared dimension is right but the packed query is a ciphertext short
    key = deployment.a.node.keys.public.paillier
    with deployment.client("identifier") as client:
        legacy = client.encryptor().query(deployment.faces.probes[0], sealed=False)
    packed = PaillierQuery.from_bytes(key, legacy.paillier).packed
    short = EncryptedParts(PaillierQuery(packed[:-1]).to_bytes(), parts[1].ckks_head)
    request = pura_pb2.IdentifyRequest(ref=_ref(deployment), query=_query(short))
    code, msg = _code(lambda: stubs("identifier").Identify(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "packed ciphertexts" in msg
    template = common_pb2.EncryptedTemplate(
        model_id="dlib_face_recognition_resnet_model_v1", dim=512,
        paillier=parts[0].paillier, ckks_head=parts[0].ckks_head)
    enroll = pura_pb2.EnrollRequest(ref=_ref(deployment), subject_id="x", template=template,
                                    request_id="dim-test")
    code, msg = _code(lambda: stubs("enroller").Enroll(enroll))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "dimension" in msg


# --- the role x RPC matrix ------------------------------------------------------------------

ROLES = ("enroller", "identifier", "auditor", "admin")
ALLOWED = {
    "GetParameters": {"enroller", "identifier", "auditor", "admin"},
    "Enroll": {"enroller", "admin"},
    "Identify": {"identifier"},
    "Verify": {"identifier"},
    "DeleteSubject": {"admin"},
    "CreateCollection": {"admin"},
    "ListSubjects": {"admin"},
    "Stats": {"admin", "auditor"},
    "VerifyAuditLog": {"admin", "auditor"},
}
_ADMIN_RPCS = {"CreateCollection", "ListSubjects", "Stats", "VerifyAuditLog"}
_EMPTY = {
    "GetParameters": pura_pb2.GetParametersRequest, "Enroll": pura_pb2.EnrollRequest,
    "Identify": pura_pb2.IdentifyRequest, "Verify": pura_pb2.VerifyRequest,
    "DeleteSubject": pura_pb2.DeleteSubjectRequest,
    "CreateCollection": pura_pb2.CreateCollectionRequest,
    "ListSubjects": pura_pb2.ListSubjectsRequest, "Stats": pura_pb2.StatsRequest,
    "VerifyAuditLog": pura_pb2.VerifyAuditLogRequest,
}


@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(deployment: Deployment, role: str) -> None:
    """Each role reaches exactly its RPCs. Requests are empty (collection ""): an allowed call
    gets past the role check and fails later (NOT_FOUND / INVALID_ARGUMENT / OK), a refused
    one gets PERMISSION_DENIED before any work."""
    channel = secure_channel(deployment.address, deployment.tls, role)
    try:
        for rpc, allowed in ALLOWED.items():
            service = "PuraAdmin" if rpc in _ADMIN_RPCS else "Pura"
            call = channel.unary_unary(
                f"/pura.v1.{service}/{rpc}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=lambda b: b,
            )
            try:
                call(_EMPTY[rpc](), timeout=30)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
            denied = code == grpc.StatusCode.PERMISSION_DENIED
            assert denied == (role not in allowed), (role, rpc, code)
    finally:
        channel.close()


def test_budget_exhaustion_is_resource_exhausted(
    deployment: Deployment, parts: tuple[EncryptedParts, EncryptedParts], tmp_path: Path
) -> None:
    handle = deployment.start_a(tmp_path / "data", query_budget=2)
    try:
        port = handle.running.port
        with deployment.client("admin", port=port) as admin:
            admin.create_collection()
        with deployment.client("enroller", port=port) as enroller:
            enroller.enroll_encrypted("someone", parts[0])
        with deployment.client("identifier", port=port) as client:
            assert client.identify_encrypted(parts[1]).budget_remaining == 1
            assert client.identify_encrypted(parts[1]).budget_remaining == 0
            stub = pura_pb2_grpc.PuraStub(client.channel)  # type: ignore[no-untyped-call]
            request = pura_pb2.IdentifyRequest(ref=client._ref(), query=_query(parts[1]))
            code, msg = _code(lambda: stub.Identify(request, timeout=30))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "budget" in msg
        # the refused query was neither computed nor logged as an identification
        actions = [e["action"] for e in handle.node.audit.entries()]
        assert actions.count("identify") == 2
    finally:
        handle.stop()


def test_oversized_message_is_resource_exhausted(
    deployment: Deployment, stubs: Callable[[str], pura_pb2_grpc.PuraStub],
    parts: tuple[EncryptedParts, EncryptedParts],
) -> None:
    big = _query(parts[1], ckks_head=secrets.token_bytes(17 << 20))  # limit is 16 MiB here
    request = pura_pb2.IdentifyRequest(ref=_ref(deployment), query=big)
    code, _ = _code(lambda: stubs("identifier").Identify(request))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_failed_verifications_per_target_are_capped(
    deployment: Deployment, parts: tuple[EncryptedParts, EncryptedParts], tmp_path: Path
) -> None:
    handle = deployment.start_a(tmp_path / "data", failed_per_target=1)
    try:
        port = handle.running.port
        with deployment.client("admin", port=port) as admin:
            admin.create_collection()
        with deployment.client("enroller", port=port) as enroller:
            enroller.enroll_encrypted("target", parts[0])
        stranger = deployment.faces.non_enrolled[5]
        with deployment.client("identifier", port=port) as client:
            assert client.verify("target", stranger) is False
            with pytest.raises(BudgetExhaustedError, match="failed verifications"):
                client.verify("target", stranger)
    finally:
        handle.stop()


def test_client_pins_trusted_public_keys(deployment: Deployment, tmp_path: Path) -> None:
    """A client holding the key authority's public keys refuses a server announcing others."""
    from pura_client.client import PuraClient

    from pura.crypto.params import DLIB_FAST_PARAMETERS
    from pura.errors import KeyMismatchError
    from pura.keys import generate_key_set, load_public_keys

    good = load_public_keys(deployment.keys / "public")
    other = generate_key_set(tmp_path / "other", DLIB_FAST_PARAMETERS)
    for trusted, ok in ((good, True), (other, False)):
        client = PuraClient.connect(deployment.address, COLLECTION, tls_dir=deployment.tls,
                                    cert_name="identifier", pca=deployment.pca,
                                    trusted_keys=trusted)
        try:
            if ok:
                assert client.public_keys() is good
            else:
                with pytest.raises(KeyMismatchError, match="trusted key"):
                    client.encryptor()
        finally:
            client.close()


def test_non_unit_template_and_query_are_refused(
    deployment: Deployment, stubs: Callable[[str], pura_pb2_grpc.PuraStub],
) -> None:
    """A "wolf" template (5 % longer than a unit vector, inside every per-coordinate bound) is
    refused at enrolment and a scaled-down probe is refused at identification: both with
    INVALID_ARGUMENT, never stored, never answered with a decision (the servers compute every
    norm themselves)."""
    from pura_client.encryptor import Encryptor

    from pura.protocols.enroll import encrypt_query, encrypt_template

    with deployment.client("enroller") as client:
        enc: Encryptor = client.encryptor()
    face = deployment.faces.gallery[0]
    fixed = enc._fixed(enc._rotate(face))
    longer = [round(1.05 * v) for v in fixed]
    wolf = encrypt_template(longer, enc.layout, enc.keys.paillier, enc.pool)
    honest = enc.template(face, sealed=False)  # the packed upload the wolf imitates
    request = pura_pb2.EnrollRequest(
        ref=_ref(deployment), subject_id="wolf", request_id=secrets.token_hex(8),
        template=common_pb2.EncryptedTemplate(
            model_id="dlib_face_recognition_resnet_model_v1", dim=128,
            paillier=wolf.to_bytes(), ckks_head=honest.ckks_head),
    )
    code, msg = _code(lambda: stubs("enroller").Enroll(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unit" in msg
    assert deployment.a.node.store.templates_of_subject(COLLECTION, "wolf") == []

    probe = enc.query(deployment.faces.probes[0])
    short = encrypt_query([v // 2 for v in enc._fixed(enc._rotate(deployment.faces.probes[0]))],
                          enc.layout, enc.keys.paillier, enc.pool)
    identify = pura_pb2.IdentifyRequest(
        ref=_ref(deployment),
        query=_query(EncryptedParts(short.to_bytes(), probe.ckks_head)))
    code, msg = _code(lambda: stubs("identifier").Identify(identify))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unit" in msg
