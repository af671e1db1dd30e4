"""Hostile-client tests of issue 13, items 13 and 14, against the session's real A and B
(fast profile, mTLS on loopback; see conftest).

* Item 14: the unit-norm centroid of public faces ("wolf") passed admission and was stored. Now
  A's wolf check (the template's inner product with the public population mean, decided with B)
  refuses it per item in a BulkEnroll, with a clear message, and the stream goes on.
* Item 13: Verify of an unknown subject answers exactly like a non-match, after the same work
  (the exact stage against A's decoy template). Timed over RPC, interleaved, by medians; before,
  an unknown subject in an empty collection was answered without any exact stage.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid

import numpy as np

from pura.service._proto.pura.v1 import common_pb2, pura_pb2

from .conftest import Deployment

WOLVES = "wolves"
EMPTY = "nobody"


def test_item14_centroid_wolf_is_rejected_per_item_and_the_stream_goes_on(
    deployment: Deployment,
) -> None:
    faces = deployment.faces
    with deployment.client("admin", WOLVES) as admin:
        admin.create_collection()
    public = np.vstack([faces.gallery[250:], faces.non_enrolled])  # the attacker's population
    centroid = public.mean(axis=0)
    wolf = centroid / np.linalg.norm(centroid)
    with deployment.client("enroller", WOLVES) as client:
        enc = client.encryptor()
        items = [("w14_a", enc.template(faces.gallery[300]), uuid.uuid4().hex),
                 ("w14_wolf", enc.template(wolf), uuid.uuid4().hex),
                 ("w14_b", enc.template(faces.gallery[301]), uuid.uuid4().hex)]
        statuses = list(client.bulk_enroll_encrypted(items))
    assert [s.code for s in statuses] == ["enrolled", "rejected", "enrolled"], statuses
    assert "population mean" in statuses[1].message and "wolf" in statuses[1].message
    store = deployment.a.node.store
    assert store.templates_of_subject(WOLVES, "w14_wolf") == []
    assert store.templates_of_subject(WOLVES, "w14_a") and store.templates_of_subject(WOLVES,
                                                                                     "w14_b")
    with deployment.client("identifier", WOLVES) as ident:  # the real ones were stored right
        assert ident.identify(faces.probes[300]).subject in (None, "w14_a")
        assert ident.verify("w14_b", faces.gallery[301])


def _median_ratio(deployment: Deployment, collection: str, known: str, rounds: int,
                  ) -> tuple[float, list[pura_pb2.VerifyReply]]:
    """Interleaved Verify calls (random order within each pair) of the enrolled ``known``
    subject and of never-enrolled subjects with the same stranger's probe: median time of the
    unknown calls over median time of the known ones, and every reply in call order."""
    faces = deployment.faces
    with deployment.client("identifier", collection) as client:
        probe = client.encryptor().query(faces.non_enrolled[11])
        ref = client._ref()
        query = client._query(probe)
        stub = client._stub
        times: dict[bool, list[float]] = {True: [], False: []}
        replies: list[pura_pb2.VerifyReply] = []
        rng = random.Random(13)
        stub.Verify(pura_pb2.VerifyRequest(ref=ref, subject_id=known, query=query), timeout=120)
        for i in range(rounds):
            for is_known in rng.sample([True, False], 2):
                subject = known if is_known else f"t13_nobody_{i}"
                started = time.perf_counter()
                reply = stub.Verify(pura_pb2.VerifyRequest(ref=ref, subject_id=subject,
                                                           query=query), timeout=120)
                times[is_known].append(time.perf_counter() - started)
                replies.append(reply)
    return statistics.median(times[False]) / statistics.median(times[True]), replies


def test_item13_unknown_subject_costs_and_answers_like_an_enrolled_non_match(
    deployment: Deployment,
) -> None:
    """Same reply (NO_MATCH, the budget counting down by one per call either way) and a median
    time ratio unknown/known in [0.7, 1.4] over 8 interleaved pairs — also when the collection
    is empty (then the unknown calls are timed against a known non-match in another
    collection: before, they skipped the exact stage and took a fraction of the time)."""
    faces = deployment.faces
    with deployment.client("admin", "verify13") as admin:
        admin.create_collection()
    with deployment.client("admin", EMPTY) as admin:
        admin.create_collection()
    with deployment.client("enroller", "verify13") as enroller:
        enroller.enroll("t13_known", faces.gallery[410])
    ratio, replies = _median_ratio(deployment, "verify13", "t13_known", rounds=8)
    assert {r.decision for r in replies} == {common_pb2.NO_MATCH}
    budgets = [r.budget_remaining for r in replies]
    assert budgets == list(range(budgets[0], budgets[0] - len(budgets), -1)), budgets
    assert 0.7 <= ratio <= 1.4, ratio

    # Empty collection: unknown subjects there vs the known non-match in "verify13".
    with deployment.client("identifier", EMPTY) as empty, \
            deployment.client("identifier", "verify13") as full:
        probe = full.encryptor().query(faces.non_enrolled[11])
        calls = {
            True: (full._stub, pura_pb2.VerifyRequest(ref=full._ref(), subject_id="t13_known",
                                                      query=full._query(probe))),
            False: (empty._stub, pura_pb2.VerifyRequest(ref=empty._ref(), subject_id="anyone",
                                                        query=empty._query(probe))),
        }
        times: dict[bool, list[float]] = {True: [], False: []}
        rng = random.Random(14)
        for _ in range(6):
            for is_known in rng.sample([True, False], 2):
                stub, request = calls[is_known]
                started = time.perf_counter()
                reply = stub.Verify(request, timeout=120)
                times[is_known].append(time.perf_counter() - started)
                assert reply.decision == common_pb2.NO_MATCH
    empty_ratio = statistics.median(times[False]) / statistics.median(times[True])
    assert 0.7 <= empty_ratio <= 1.4, (empty_ratio, times)
