"""Hostile-client tests of issue 13, items 13 and 14, against the session's real A and B
(fast profile, mTLS on loopback; see conftest).

* Item 14: the unit-norm centroid of public faces ("wolf") passed admission and was stored. Now
  A's wolf check (the template's inner product with the public population mean, decided with B)
  refuses it per item in a BulkEnroll, with a clear message, and the stream goes on.
* Item 13: Verify of an unknown subject answers exactly like a non-match, after the same work
  (the exact stage against A's decoy template). Timed over RPC, interleaved pairs; before, an
  unknown subject in an empty collection was answered without any exact stage.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

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


Call = Callable[[], pura_pb2.VerifyReply]


def _timed_pairs(calls: dict[bool, Call], rounds: int, seed: int,
                 ) -> tuple[dict[bool, list[float]], list[pura_pb2.VerifyReply]]:
    """``rounds`` pairs of Verify calls, known (``True``) and unknown (``False``) subject, in
    random order within each pair: each kind's times, and every reply in call order."""
    times: dict[bool, list[float]] = {True: [], False: []}
    replies: list[pura_pb2.VerifyReply] = []
    rng = random.Random(seed)
    for _ in range(rounds):
        for is_known in rng.sample([True, False], 2):
            started = time.perf_counter()
            replies.append(calls[is_known]())
            times[is_known].append(time.perf_counter() - started)
    return times, replies


def _ratios(times: dict[bool, list[float]]) -> tuple[float, float]:
    """(lower quartile, median) of the unknown calls' times over the known calls'. The lower
    quartile is the decision statistic: other load on a shared machine only ever adds time, so
    the faster calls of each kind show the work itself; the median is reported too."""
    def q1(xs: list[float]) -> float:
        return statistics.quantiles(xs, n=4)[0]

    return (q1(times[False]) / q1(times[True]),
            statistics.median(times[False]) / statistics.median(times[True]))


def _verify(stub: Any, ref: Any, subject: str, query: Any) -> Call:
    request = pura_pb2.VerifyRequest(ref=ref, subject_id=subject, query=query)
    return lambda: stub.Verify(request, timeout=120)  # type: ignore[no-any-return]


def test_item13_unknown_subject_costs_and_answers_like_an_enrolled_non_match(
    deployment: Deployment,
) -> None:
    """Same reply (NO_MATCH, the budget counting down by one per call either way) and the same
    time: over 12 interleaved pairs of calls, the unknown calls' lower-quartile time over the
    known non-match's lies in [0.7, 1.4] — also when the collection is empty (then the unknown
    calls are timed against the known non-match in another collection: before, they skipped the
    exact stage and took a fraction of the time)."""
    faces = deployment.faces
    for name in ("verify13", EMPTY):
        with deployment.client("admin", name) as admin:
            admin.create_collection()
    with deployment.client("enroller", "verify13") as enroller:
        # two known subjects: each takes at most 13 failed verifications here, below A's
        # per-subject limit (20; it counts unknown subjects' failures alike)
        enroller.enroll("t13_known", faces.gallery[410])
        enroller.enroll("t13_known2", faces.gallery[411])
    with deployment.client("identifier", "verify13") as full, \
            deployment.client("identifier", EMPTY) as empty:
        probe = full.encryptor().query(faces.non_enrolled[11])
        ref, query = full._ref(), full._query(probe)
        known = _verify(full._stub, ref, "t13_known", query)
        known()  # warm-up (connections, pools)
        nobody = iter(f"t13_nobody_{i}" for i in range(1000))

        def unknown() -> pura_pb2.VerifyReply:
            return _verify(full._stub, ref, next(nobody), query)()

        times, replies = _timed_pairs({True: known, False: unknown}, 12, seed=13)
        assert {r.decision for r in replies} == {common_pb2.NO_MATCH}
        budgets = [r.budget_remaining for r in replies]
        assert budgets == list(range(budgets[0], budgets[0] - len(budgets), -1)), budgets
        q1, median = _ratios(times)
        print(f"item 13: unknown / known non-match: lower quartile {q1:.3f}, median {median:.3f}")
        assert 0.7 <= q1 <= 1.4, (q1, median, times)

        known2 = _verify(full._stub, ref, "t13_known2", query)
        in_empty = _verify(empty._stub, empty._ref(), "anyone", empty._query(probe))
        times, replies = _timed_pairs({True: known2, False: in_empty}, 12, seed=14)
        assert {r.decision for r in replies} == {common_pb2.NO_MATCH}
        q1, median = _ratios(times)
        print(f"item 13: unknown in an empty collection / known non-match: lower quartile "
              f"{q1:.3f}, median {median:.3f}")
        assert 0.7 <= q1 <= 1.4, (q1, median, times)
