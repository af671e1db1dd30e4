"""Hostile client and fault tests against real servers (issue 13): one test per item.

Every test here failed on the code before issue 13 (checked by running this file against that
commit). They use the session's real A and B (fast profile, mTLS on loopback, see conftest) or,
where a test needs its own limits, store or B, another real A (and B) started the same way.
Item numbers are the issue's.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pura_client.encryptor import EncryptedParts

from pura.config import Limits, ServerConfig
from pura.service._proto.pura.v1 import common_pb2, pura_pb2, pura_pb2_grpc
from pura.service.run import start_b
from pura.service.server import free_port, secure_channel

from .conftest import COLLECTION, Deployment, config_a

MODEL = "dlib_face_recognition_resnet_model_v1"
#: This module's collection on the session's A: what it enrols must not change the answers
#: other modules expect from ``lfw``.
HOSTILE = "hostile"


@pytest.fixture(scope="module")
def parts(deployment: Deployment) -> tuple[EncryptedParts, EncryptedParts]:
    """(template, query) of one real LFW face, encrypted once for the module; creates the
    module's collection."""
    with deployment.client("admin", HOSTILE) as admin:
        admin.create_collection()
    with deployment.client("enroller", HOSTILE) as client:
        enc = client.encryptor()
        template = enc.template(deployment.faces.gallery[0], sealed=False)  # packed + head
        return template, enc.query(deployment.faces.probes[0])


@pytest.fixture(scope="module")
def channels(deployment: Deployment) -> Iterator[Callable[..., grpc.Channel]]:
    made: list[grpc.Channel] = []

    def make(role: str, port: int = 0) -> grpc.Channel:
        address = f"localhost:{port}" if port else deployment.address
        channel = secure_channel(address, deployment.tls, role)
        made.append(channel)
        return channel

    yield make
    for channel in made:
        channel.close()


def _stub(channel: grpc.Channel) -> pura_pb2_grpc.PuraStub:
    return pura_pb2_grpc.PuraStub(channel)  # type: ignore[no-untyped-call]


def _admin(channel: grpc.Channel) -> pura_pb2_grpc.PuraAdminStub:
    return pura_pb2_grpc.PuraAdminStub(channel)  # type: ignore[no-untyped-call]


def _ref(deployment: Deployment, collection: str = HOSTILE) -> common_pb2.CollectionRef:
    info = deployment.a.node.collection(COLLECTION)
    return common_pb2.CollectionRef(collection=collection,
                                    parameter_set_id=info.parameter_set_id, key_id=info.key_id)


def _enroll_request(
    deployment: Deployment, subject: str, parts: EncryptedParts, request_id: str = "", **t: Any
) -> pura_pb2.EnrollRequest:
    fields: dict[str, Any] = {"model_id": MODEL, "dim": 128, "paillier": parts.paillier,
                              "ckks_head": parts.ckks_head, **t}
    return pura_pb2.EnrollRequest(
        ref=_ref(deployment), subject_id=subject,
        request_id=request_id or secrets.token_hex(8),
        template=common_pb2.EncryptedTemplate(**fields))


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details() or ""


# --- item 1: one enrolment cannot take identification (or A's restart) down ------------------


def test_item1_out_of_range_head_is_dropped_and_cannot_stop_identify_or_restart(
    deployment: Deployment, tmp_path: Path
) -> None:
    """A head encrypting values near 2^80 used to make every later refresh fail: Identify
    INVALID_ARGUMENT, later enrolments never placed, and A exiting at restart. Now B refuses
    the head, A drops that row (reported, audited) and everything else goes on; a bad row
    already in the store (written by older code) cannot stop recovery either."""
    import numpy as np

    from pura.gallery.store import GalleryStore, NewTemplate

    data = tmp_path / "data"
    handle = deployment.start_a(data)
    faces = deployment.faces
    try:
        port = handle.running.port
        with deployment.client("admin", port=port) as admin:
            admin.create_collection()
        with deployment.client("enroller", port=port) as enroller:
            enc = enroller.encryptor()
            enroller.enroll_encrypted("h1_good", enc.template(faces.gallery[200]))
            ctx = enc.keys.ckks
            m = deployment.a.node.params.encoding.head_dim
            huge = ctx.ciphertext_to_bytes(ctx.encrypt_head(np.full(m, 2.0**80)))
            wolf = EncryptedParts(enc.template(faces.gallery[201], sealed=False).paillier, huge)
            with pytest.raises(Exception, match="out of range"):
                enroller.enroll_encrypted("h1_wolf", wolf)
            enroller.enroll_encrypted("h1_after", enc.template(faces.gallery[202]))
        with deployment.client("identifier", port=port) as client:
            assert client.identify(faces.gallery[200]).subject == "h1_good"
        with deployment.client("admin", port=port) as admin:
            assert admin.stats().pending_templates == 0
            assert "h1_wolf" not in admin.list_subjects()
        dropped = [e for e in handle.node.audit.entries() if e["action"] == "enroll-dropped"]
        assert [e["target"] for e in dropped] == ["h1_wolf"]
        good = handle.node.store.templates_of_subject(COLLECTION, "h1_good")[0]
    finally:
        handle.stop()
    with GalleryStore(data / "gallery.db") as store:  # a bad row left by older code
        info = store.get_collection(COLLECTION)
        store.add_templates(COLLECTION, [NewTemplate(
            "h1_old_wolf", "h1-old", info.model_id, info.parameter_set_id, info.key_id,
            good.paillier, huge)])
    handle = deployment.start_a(data)  # used to exit with the refresh's ProtocolError
    try:
        with deployment.client("identifier", port=handle.running.port) as client:
            assert client.identify(faces.gallery[202]).subject == "h1_after"
        assert handle.node.store.templates_of_subject(COLLECTION, "h1_old_wolf") == []
    finally:
        handle.stop()


# --- item 2: a crafted head cannot make true mates answer "no match" ---------------------------


def test_item2_out_of_range_heads_are_refused_and_bounded_ones_change_no_answer(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Heads at 2^34 or 2^30 used to be accepted and placed, and true mates then answered
    "no match". Now every head is range-checked with B before it is placed (coordinates and
    norm within a unit vector's bound): those heads, and a unit head scaled by 1.05, are
    refused. Heads that pass (here: exact copies of the victims' own heads under an attacker's
    subject, the strongest bounded head against them) leave every victim's answer as it was."""
    import numpy as np

    handle = deployment.start_a(tmp_path / "data")
    faces = deployment.faces
    victims = list(range(210, 214))
    try:
        port = handle.running.port
        with deployment.client("admin", port=port) as admin:
            admin.create_collection()
        with deployment.client("enroller", port=port) as enroller:
            enc = enroller.encryptor()
            for i in victims:
                enroller.enroll_encrypted(f"h2_victim{i}", enc.template(faces.gallery[i]))
            ctx, m = enc.keys.ckks, handle.node.params.encoding.head_dim
            own = enc.template(faces.gallery[220], sealed=False).paillier
            head = enc._rotate(faces.gallery[victims[0]])[:m]
            for name, values in (("h2_at34", np.full(m, 2.0**34)),
                                 ("h2_at30", np.full(m, 2.0**30)),
                                 ("h2_long", head / np.linalg.norm(head) * 1.05)):
                raw = ctx.ciphertext_to_bytes(ctx.encrypt_head(values))
                with pytest.raises(Exception, match="out of range"):
                    enroller.enroll_encrypted(name, EncryptedParts(own, raw))
            for i in victims:  # accepted: bounded heads, each a copy of a victim's head
                clone = enc.template(faces.gallery[i], sealed=False).ckks_head
                enroller.enroll_encrypted(f"h2_clone{i}", EncryptedParts(own, clone))
        with deployment.client("identifier", port=port) as client:
            for i in victims:
                assert client.identify(faces.gallery[i]).subject == f"h2_victim{i}"
        names = handle.node.store.list_subjects(COLLECTION, limit=100)
        assert not {"h2_at34", "h2_at30", "h2_long"} & set(names)
    finally:
        handle.stop()


# --- item 3: idle streams cannot starve Identify ---------------------------------------------


def test_item3_idle_bulk_streams_neither_starve_a_nor_stay_open(
    deployment: Deployment, channels: Callable[..., grpc.Channel], tmp_path: Path
) -> None:
    """Eight idle BulkEnroll streams from one enroller used to hold all eight worker threads
    (GetParameters then timed out). Now: two per principal, the rest RESOURCE_EXHAUSTED at
    once, other RPCs keep answering, and the server cancels the idle ones."""
    handle = deployment.start_a(tmp_path / "data", stream_idle_s=2)  # type: ignore[arg-type]
    port = handle.running.port
    release = threading.Event()
    outcomes: list[grpc.StatusCode] = []

    def idle_requests() -> Iterator[pura_pb2.EnrollRequest]:
        release.wait(30)
        return
        yield  # pragma: no cover - a generator that sends nothing

    def open_stream() -> None:
        stub = _stub(channels("enroller", port))
        try:
            for _ in stub.BulkEnroll(idle_requests(), timeout=30):
                pass
            outcomes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            outcomes.append(exc.code())

    threads = [threading.Thread(target=open_stream) for _ in range(8)]
    try:
        started = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(0.5)
        with deployment.client("admin", port=port) as admin:
            admin.create_collection()
        with deployment.client("identifier", port=port) as client:
            assert client.parameters().collection == COLLECTION  # answered while streams idle
        for t in threads:
            t.join(20)
        elapsed = time.monotonic() - started
        codes = sorted(c.name for c in outcomes)
        assert codes.count("RESOURCE_EXHAUSTED") == 6, codes
        assert codes.count("CANCELLED") == 2, codes  # the idle ones, ended by the server
        assert elapsed < 15, elapsed  # long before the client's own 30 s
        assert handle.running is not None
    finally:
        release.set()
        for t in threads:
            t.join(5)
        handle.stop()


# --- item 5: a request id names one request ----------------------------------------------------


def test_item5_reused_request_id_is_already_exists(
    deployment: Deployment, channels: Callable[..., grpc.Channel],
    parts: tuple[EncryptedParts, EncryptedParts],
) -> None:
    stub = _stub(channels("enroller"))
    rid = secrets.token_hex(8)
    first = stub.Enroll(_enroll_request(deployment, "h5_alice", parts[0], rid), timeout=120)
    again = stub.Enroll(_enroll_request(deployment, "h5_alice", parts[0], rid), timeout=120)
    assert again.already_enrolled and again.template_id == first.template_id
    code, msg = _code(lambda: stub.Enroll(_enroll_request(deployment, "h5_bob", parts[0], rid),
                                          timeout=120))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "request id" in msg
    store = deployment.a.node.store
    assert store.templates_of_subject(HOSTILE, "h5_bob") == []
    assert len(store.templates_of_subject(HOSTILE, "h5_alice")) == 1


# --- item 6: certificates and tokens both grant roles -------------------------------------------


def test_item6_certificate_roles_work_when_tokens_are_configured(
    deployment: Deployment, tmp_path: Path
) -> None:
    """With tokens configured, admin and identifier certificates used to get UNAUTHENTICATED.
    Now the mTLS port keeps certificate roles, tokens work on the token port, and when a call
    brings both, the certificate wins."""
    from dataclasses import replace

    from pura.service.interceptors import TokenTable
    from pura.service.run import start_a

    token = "h6-" + secrets.token_hex(12)
    config = replace(
        config_a(deployment.root, deployment.b.port, tmp_path / "data", Limits()),
        tokens=((TokenTable.digest(token), "h6-operator", "admin"),),
        token_listen="127.0.0.1:0",
    )
    handle = start_a(config)
    try:
        port = handle.running.port
        with deployment.client("admin", port=port) as admin:
            admin.create_collection()
        with deployment.client("identifier", port=port) as client:
            assert client.parameters().collection == COLLECTION
        ca = (deployment.tls / "ca.pem").read_bytes()
        plain = grpc.secure_channel(f"localhost:{handle.running.token_port}",
                                    grpc.ssl_channel_credentials(ca))
        bearer = (("authorization", f"Bearer {token}"),)
        stats = _admin(plain).Stats(pura_pb2.StatsRequest(collection=COLLECTION),
                                    metadata=bearer, timeout=30)
        assert stats.collection == COLLECTION
        code, _ = _code(lambda: _admin(plain).Stats(
            pura_pb2.StatsRequest(collection=COLLECTION), timeout=30))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        plain.close()
        identifier = secure_channel(f"localhost:{port}", deployment.tls, "identifier")
        code, _ = _code(lambda: _admin(identifier).Stats(  # the certificate's role wins
            pura_pb2.StatsRequest(collection=COLLECTION), metadata=bearer, timeout=30))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        identifier.close()
    finally:
        handle.stop()


# --- item 7: status codes ----------------------------------------------------------------------


@pytest.mark.parametrize("subject", ["bad\x01id", "x" * 300])
def test_item7_bad_subject_id_is_invalid_argument(
    deployment: Deployment, channels: Callable[..., grpc.Channel],
    parts: tuple[EncryptedParts, EncryptedParts], subject: str,
) -> None:
    stub = _stub(channels("enroller"))
    code, msg = _code(lambda: stub.Enroll(_enroll_request(deployment, subject, parts[0]),
                                          timeout=60))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "subject id" in msg


def test_item7_bad_collection_name_and_threshold_are_invalid_argument(
    deployment: Deployment, channels: Callable[..., grpc.Channel],
) -> None:
    admin = _admin(channels("admin"))
    create = pura_pb2.CreateCollectionRequest
    code, msg = _code(lambda: admin.CreateCollection(create(collection="bad name!"), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "collection name" in msg
    for i, threshold in enumerate(((1 << 64) - 1, (1 << 63) - 1)):
        request = create(collection=f"h7t{i}", threshold=threshold)
        code, msg = _code(lambda r=request: admin.CreateCollection(r, timeout=30))  # type: ignore[misc]
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "threshold" in msg
    assert "h7t" not in " ".join(deployment.a.node.store.list_collections())


def test_item7_huge_collection_name_is_not_echoed(
    deployment: Deployment, channels: Callable[..., grpc.Channel],
) -> None:
    stub = _stub(channels("identifier"))
    name = "n" * (1 << 20)
    code, msg = _code(lambda: stub.GetParameters(
        pura_pb2.GetParametersRequest(collection=name), timeout=30))
    assert code == grpc.StatusCode.NOT_FOUND, code
    assert len(msg) < 1024


def test_item7_b_down_is_unavailable_and_a_starts_without_b(
    deployment: Deployment, parts: tuple[EncryptedParts, EncryptedParts], tmp_path: Path,
) -> None:
    """B killed -> UNAVAILABLE (clients retry), not INVALID_ARGUMENT. A started while B is down
    reports NOT_SERVING on health and serves once B is back."""
    b_port = free_port()
    b_config = ServerConfig(role="b", key_dir=deployment.keys / "b", tls_dir=deployment.tls,
                            listen=f"127.0.0.1:{b_port}")
    config = config_a(deployment.root, b_port, tmp_path / "data",
                      Limits(max_message_bytes=16 << 20, bulk_batch=5))
    from pura.service.run import start_a

    started = time.monotonic()
    handle = start_a(config)  # B is not running yet
    try:
        assert time.monotonic() - started < 10
        health = health_pb2_grpc.HealthStub(
            secure_channel(f"localhost:{handle.running.port}", deployment.tls, "admin"))
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        b = start_b(b_config)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.5)
            assert status == health_pb2.HealthCheckResponse.SERVING
            port = handle.running.port
            with deployment.client("admin", port=port) as admin:
                admin.create_collection()
            with deployment.client("enroller", port=port) as enroller:
                enroller.enroll_encrypted("h7_someone", parts[0])
        finally:
            b.stop(None)
        stub = _stub(secure_channel(f"localhost:{port}", deployment.tls, "identifier"))
        request = pura_pb2.IdentifyRequest(
            ref=_ref(deployment, COLLECTION),
            query=common_pb2.EncryptedQuery(model_id=MODEL, dim=128, paillier=parts[1].paillier,
                                            ckks_head=parts[1].ckks_head))
        code, _ = _code(lambda: stub.Identify(request, timeout=60))
        assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        handle.stop()


# --- item 8: what ids may contain --------------------------------------------------------------


@pytest.mark.parametrize("char", ["\u202e", "\u200b", "\u0085", "\x7f", "\u2028"])
def test_item8_subject_ids_with_invisible_or_control_characters_are_refused(
    deployment: Deployment, channels: Callable[..., grpc.Channel],
    parts: tuple[EncryptedParts, EncryptedParts], char: str,
) -> None:
    subject = f"h8{char}x"
    stub = _stub(channels("enroller"))
    code, _ = _code(lambda: stub.Enroll(_enroll_request(deployment, subject, parts[0]),
                                        timeout=60))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert deployment.a.node.store.templates_of_subject(HOSTILE, subject) == []


# --- item 9: abandoned calls, refused queries and budgets across a restart -----------------------


def test_item9_abandoned_calls_are_not_charged_and_budgets_survive_restart(
    deployment: Deployment, parts: tuple[EncryptedParts, EncryptedParts], tmp_path: Path,
) -> None:
    """Calls whose client gave up used to run to the end and be charged. Now they stop at the
    next stage and are refunded; refused malformed queries have their own budget; both
    budgets are in the store, so a restart does not reset them."""
    data = tmp_path / "data"
    handle = deployment.start_a(data, query_budget=4)
    try:
        port = handle.running.port
        with deployment.client("admin", port=port) as admin:
            admin.create_collection()
        with deployment.client("enroller", port=port) as enroller:
            enroller.enroll_encrypted("h9_someone", parts[0])
        channel = secure_channel(f"localhost:{port}", deployment.tls, "identifier")
        stub = _stub(channel)

        def identify(head: bytes, timeout: float) -> pura_pb2.IdentifyReply:
            query = common_pb2.EncryptedQuery(model_id=MODEL, dim=128,
                                              paillier=parts[1].paillier, ckks_head=head)
            reply: pura_pb2.IdentifyReply = stub.Identify(
                pura_pb2.IdentifyRequest(ref=_ref(deployment, COLLECTION), query=query),
                timeout=timeout)
            return reply

        for _ in range(2):  # the client gives up after 0.2 s
            code, _ = _code(lambda: identify(parts[1].ckks_head, 0.2))
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(10)  # let the server reach its next stage check
        assert identify(parts[1].ckks_head, 120).budget_remaining == 3  # only this one charged
        actions = [e["action"] for e in handle.node.audit.entries()]
        assert actions.count("identify") == 1  # the abandoned ones never finished
        garbage = secrets.token_bytes(3000)
        for _ in range(4):  # refused, not charged to the query budget, but counted
            code, _ = _code(lambda: identify(garbage, 60))
            assert code == grpc.StatusCode.INVALID_ARGUMENT
        code, msg = _code(lambda: identify(garbage, 60))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "malformed" in msg
        channel.close()
    finally:
        handle.stop()
    handle = deployment.start_a(data, query_budget=4)  # restart on the same store
    try:
        channel = secure_channel(f"localhost:{handle.running.port}", deployment.tls,
                                 "identifier")
        stub = _stub(channel)
        code, msg = _code(lambda: identify(parts[1].ckks_head, 60))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "malformed" in msg
        channel.close()
    finally:
        handle.stop()


# --- item 10: store files are private ------------------------------------------------------------


def test_item10_store_files_are_not_readable_by_others(
    deployment: Deployment, parts: tuple[EncryptedParts, EncryptedParts],
) -> None:
    data = deployment.root / "data"
    with deployment.client("enroller", HOSTILE) as enroller:
        enroller.enroll_encrypted("h10_subject", parts[0])
    files = [p for p in data.iterdir() if p.name.startswith("gallery.db")]
    assert {p.name for p in files} >= {"gallery.db", "gallery.db-wal", "gallery.db-shm"}
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in files}
    assert all(p.stat().st_mode & 0o077 == 0 for p in files), modes
    assert data.stat().st_mode & 0o077 == 0, oct(data.stat().st_mode)


# --- item 4: one bad ciphertext is one rejected item -----------------------------------------


def test_item4_paillier_c2_in_a_bulk_stream_rejects_only_that_item(
    deployment: Deployment, channels: Callable[..., grpc.Channel],
    parts: tuple[EncryptedParts, EncryptedParts],  # creates the module's collection
) -> None:
    """A Paillier ``c = 2`` in item 3 of 7 (batch 5) used to end the stream with
    INVALID_ARGUMENT, with items lost. Now: that item REJECTED, all six others stored."""
    import gmpy2

    from pura.crypto.paillier import Ciphertext
    from pura.protocols.messages import PaillierTemplate

    with deployment.client("enroller", HOSTILE) as client:
        enc = client.encryptor()
        faces = [enc.template(deployment.faces.gallery[100 + i], sealed=False) for i in range(7)]
    key = deployment.a.node.keys.public.paillier
    good = PaillierTemplate.from_bytes(key, faces[2].paillier)
    bad = PaillierTemplate((Ciphertext(key, gmpy2.mpz(2)), *good.packed[1:]))
    faces[2] = EncryptedParts(bad.to_bytes(), faces[2].ckks_head)
    requests = [_enroll_request(deployment, f"h4_s{i}", p) for i, p in enumerate(faces)]
    statuses = list(_stub(channels("enroller")).BulkEnroll(iter(requests), timeout=300))
    code = pura_pb2.EnrollItemStatus
    assert [s.code for s in statuses] == [code.ENROLLED] * 2 + [code.REJECTED] + \
        [code.ENROLLED] * 4, [(s.code, s.message) for s in statuses]
    store = deployment.a.node.store
    assert store.templates_of_subject(HOSTILE, "h4_s2") == []
    assert all(store.templates_of_subject(HOSTILE, f"h4_s{i}") for i in (0, 1, 3, 4, 5, 6))


def test_sealed_uploads_forged_or_malformed_are_rejected_per_item(
    deployment: Deployment, channels: Callable[..., grpc.Channel],
    parts: tuple[EncryptedParts, EncryptedParts],  # creates the module's collection
) -> None:
    """Sealed admission (issue 14) over RPC, one bulk stream: a mask ciphertext of another value
    (a forged norm), a box that does not open, a head sent with a sealed upload and a mask
    ``c = 2`` are each REJECTED with their reason; every other item is stored, and the stored
    ones are found by identification (B derived their heads)."""
    import dataclasses

    import gmpy2

    from pura.crypto.paillier import Ciphertext
    from pura.protocols.messages import SealedTemplate

    with deployment.client("enroller", HOSTILE) as client:
        enc = client.encryptor()
        faces = [enc.template(deployment.faces.gallery[120 + i]) for i in range(7)]
    key = deployment.a.node.keys.public.paillier
    ups = [SealedTemplate.from_bytes(key, f.paillier) for f in faces]
    forged = dataclasses.replace(ups[1], masks=(ups[1].masks[0] * 2, *ups[1].masks[1:]))
    garbage = dataclasses.replace(ups[2], box=secrets.token_bytes(len(ups[2].box)))
    two = dataclasses.replace(ups[5], masks=(Ciphertext(key, gmpy2.mpz(2)), *ups[5].masks[1:]))
    items = [faces[0], EncryptedParts(forged.to_bytes(), b""),
             EncryptedParts(garbage.to_bytes(), b""),
             EncryptedParts(faces[3].paillier, parts[0].ckks_head), faces[4],
             EncryptedParts(two.to_bytes(), b""), faces[6]]
    requests = [_enroll_request(deployment, f"hs_s{i}", p) for i, p in enumerate(items)]
    statuses = list(_stub(channels("enroller")).BulkEnroll(iter(requests), timeout=300))
    code = pura_pb2.EnrollItemStatus
    assert [s.code for s in statuses] == [code.ENROLLED] + [code.REJECTED] * 3 + \
        [code.ENROLLED, code.REJECTED, code.ENROLLED], [(s.code, s.message) for s in statuses]
    assert "mask ciphertexts" in statuses[1].message
    assert "sealed vector" in statuses[2].message or "open" in statuses[2].message
    assert "no CKKS head" in statuses[3].message
    with deployment.client("identifier", HOSTILE) as client:
        for i in (0, 4, 6):
            assert client.identify(deployment.faces.gallery[120 + i]).subject == f"hs_s{i}"


# --- item 8: strict head parsing, and Verify checks the whole query -----------------------------


def test_item8_head_with_trailing_bytes_or_at_work_level_is_refused(
    deployment: Deployment, channels: Callable[..., grpc.Channel],
    parts: tuple[EncryptedParts, EncryptedParts],
) -> None:
    from pura.service.chunks import unpack_blobs

    stub = _stub(channels("enroller"))
    padded = parts[0].ckks_head + b"\x00" * (4 << 20)
    work = unpack_blobs(parts[1].ckks_head, what="query head")[0]  # a work-level ciphertext
    before = deployment.a.node.store.stats(HOSTILE).template_bytes
    for name, head in (("h8_trailing", padded), ("h8_work", work)):
        request = _enroll_request(deployment, name, EncryptedParts(parts[0].paillier, head))
        code, msg = _code(lambda r=request: stub.Enroll(r, timeout=60))  # type: ignore[misc]
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, code, msg)
        assert deployment.a.node.store.templates_of_subject(HOSTILE, name) == []
    assert deployment.a.node.store.stats(HOSTILE).template_bytes <= before + (1 << 20)


def test_item8_verify_checks_the_query_head(
    deployment: Deployment, channels: Callable[..., grpc.Channel],
    parts: tuple[EncryptedParts, EncryptedParts],
) -> None:
    subject = deployment.faces.gallery_labels[0].replace(" ", "_")
    with deployment.client("enroller", HOSTILE) as enroller:
        enroller.enroll_encrypted(f"h8v_{subject}"[:200], parts[0])
    query = common_pb2.EncryptedQuery(model_id=MODEL, dim=128, paillier=parts[1].paillier,
                                      ckks_head=secrets.token_bytes(5000))
    request = pura_pb2.VerifyRequest(ref=_ref(deployment), subject_id=f"h8v_{subject}"[:200],
                                     query=query)
    code, _ = _code(lambda: _stub(channels("identifier")).Verify(request, timeout=120))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


# --- item 13: Verify does not tell who is enrolled ---------------------------------------------


def test_item13_verify_of_unknown_subject_answers_like_a_non_match(
    deployment: Deployment, channels: Callable[..., grpc.Channel],
    parts: tuple[EncryptedParts, EncryptedParts],
) -> None:
    """Unknown subject: NO_MATCH (not NOT_FOUND), after the same exact-stage work as a real
    non-match (timed against an enrolled stranger; generous bounds on a shared 2-core VM)."""
    with deployment.client("enroller", HOSTILE) as enroller:
        enroller.enroll_encrypted("h13_known", parts[0])
    stranger = deployment.faces.non_enrolled[7]
    with deployment.client("identifier", HOSTILE) as client:
        probe = client.encryptor().query(stranger)
        stub = _stub(client.channel)

        def verify(subject: str) -> tuple[int, float]:
            request = pura_pb2.VerifyRequest(
                ref=_ref(deployment), subject_id=subject,
                query=common_pb2.EncryptedQuery(model_id=MODEL, dim=128,
                                                paillier=probe.paillier,
                                                ckks_head=probe.ckks_head))
            started = time.perf_counter()
            reply = stub.Verify(request, timeout=120)
            return reply.decision, time.perf_counter() - started

        known = [verify("h13_known") for _ in range(2)]
        unknown = [verify(f"h13_nobody_{i}") for i in range(2)]
    assert {d for d, _ in known} == {common_pb2.NO_MATCH}
    assert {d for d, _ in unknown} == {common_pb2.NO_MATCH}
    fastest_known = min(t for _, t in known)
    assert min(t for _, t in unknown) > 0.5 * fastest_known, (known, unknown)


# --- item 11: A refuses B's keys at keygen's default layout --------------------------------------


def test_item11_a_refuses_to_start_when_it_can_read_bs_keys_next_door(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Keygen writes keys/a and keys/b side by side; A used to check only keys/a unless
    --forbid named keys/b. Now A refuses by default (the session's servers opt out explicitly:
    one user runs both here)."""
    from dataclasses import replace

    from pura.errors import ConfigError
    from pura.service.run import start_a

    config = replace(config_a(deployment.root, deployment.b.port, tmp_path / "data", Limits()),
                     shared_host_keys=False)
    with pytest.raises(ConfigError, match="must not be readable"):
        start_a(config)


# --- soak: four threads of real traffic plus hostile items, then the invariants ---------------


@pytest.mark.slow
def test_soak_enroll_delete_identify_with_hostile_items(
    deployment: Deployment, tmp_path: Path
) -> None:
    """>= 60 s of Enroll, Delete, Identify and hostile requests on four threads against a real
    A and B. Afterwards the subject list equals acknowledged minus deleted, every hostile item
    was refused (never OK), and every answer equals plaintext 1:N on the final gallery."""
    import random

    import gmpy2

    from pura.crypto.paillier import Ciphertext
    from pura.protocols.messages import PaillierTemplate

    from .test_rpcs import plaintext_identify

    handle = deployment.start_a(tmp_path / "data", query_budget=100_000)
    faces = deployment.faces
    people = [(faces.gallery_labels[i], faces.gallery[i]) for i in range(300, 316)]
    rng = random.Random(13)
    lock = threading.Lock()
    acknowledged: set[str] = set()
    deleted: set[str] = set()
    failures: list[str] = []
    done = {"identify": 0, "hostile": 0}
    stop = time.monotonic() + 60
    try:
        port = handle.running.port
        with deployment.client("admin", port=port) as admin:
            admin.create_collection()
        with deployment.client("enroller", port=port) as client:
            enc = client.encryptor()
            templates = {label: enc.template(v) for label, v in people}
            packed_upload = enc.template(people[0][1], sealed=False)  # what the c = 2 item forges
            queries = [enc.query(v) for _, v in people[:6]]
        key = handle.node.keys.public.paillier

        def enrol() -> None:
            with deployment.client("enroller", port=port) as c:
                while time.monotonic() < stop:
                    label, _ = rng.choice(people)
                    with lock:
                        if label in acknowledged - deleted:
                            continue
                    c.enroll_encrypted(label, templates[label], uuid_like(label))
                    with lock:
                        acknowledged.add(label)
                        deleted.discard(label)

        def delete() -> None:
            with deployment.client("admin", port=port) as c:
                while time.monotonic() < stop:
                    time.sleep(2)
                    with lock:
                        live = sorted(acknowledged - deleted)
                    if len(live) > 4:
                        victim = rng.choice(live)
                        c.delete(victim)
                        with lock:
                            deleted.add(victim)

        def identify() -> None:
            with deployment.client("identifier", port=port) as c:
                while time.monotonic() < stop:
                    answer = c.identify_encrypted(rng.choice(queries)).subject
                    done["identify"] += 1
                    if answer is not None and answer not in {p for p, _ in people}:
                        failures.append(f"identify answered {answer!r}")

        def hostile() -> None:
            stub = _stub(secure_channel(f"localhost:{port}", deployment.tls, "enroller"))
            base = templates[people[0][0]]
            packed = PaillierTemplate.from_bytes(key, packed_upload.paillier).packed
            c2 = EncryptedParts(PaillierTemplate((Ciphertext(key, gmpy2.mpz(2)),
                                                  *packed[1:])).to_bytes(),
                                packed_upload.ckks_head)
            bad = [("h_soak\u202e", base), ("h_soak_junk", EncryptedParts(
                base.paillier, base.ckks_head + b"\x00" * 64)), ("h_soak_c2", c2)]
            while time.monotonic() < stop:
                subject, parts = rng.choice(bad)
                done["hostile"] += 1
                request = _enroll_request(deployment, subject, parts)
                request.ref.collection = COLLECTION
                try:
                    stub.Enroll(request, timeout=120)
                    failures.append(f"hostile {subject!r} was accepted")
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                        failures.append(f"hostile {subject!r}: {exc.code().name}")

        def uuid_like(label: str) -> str:
            return f"{label}-{rng.getrandbits(64):016x}"

        errors: list[BaseException] = []

        def guard(fn: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    fn()
                except BaseException as exc:  # reported below, with the thread's name
                    errors.append(exc)
            return run

        threads = [threading.Thread(target=guard(f), name=f.__name__)
                   for f in (enrol, delete, identify, hostile)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert not errors, errors
        assert not failures, failures[:5]
        # the run did something: enrolments, deletions, answers and refusals all happened
        assert len(acknowledged) >= 4 and deleted and min(done.values()) >= 3, (
            len(acknowledged), len(deleted), done)
        expected = acknowledged - deleted
        with deployment.client("admin", port=port) as admin:
            assert set(admin.list_subjects()) == expected
        labels = sorted(expected)
        vectors = [dict(people)[label] for label in labels]
        with deployment.client("identifier", port=port) as c:
            for label, v in people[:6]:
                want = plaintext_identify(deployment, labels, vectors, v) if labels else None
                assert c.identify(v).subject == want, (label, want)
    finally:
        handle.stop()
