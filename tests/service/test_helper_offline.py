"""B's offline refill (:class:`pura.service.nodes.HelperOffline`): stocked once B serves,
bounded, and paused while a request runs.

Deterministic: the test never sleeps to let something (not) happen. A :class:`_Watch` sees
every unit the worker thread evaluates and every refill it makes, and signals events; the test
waits on those (the timeouts only bound a failure). "Paused" is checked by waking the worker
while a request is in flight and waiting until it has *evaluated* a unit and declined it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pura.crypto.params import DLIB_FAST_PARAMETERS
from pura.gallery.copies import CopyStore
from pura.keys import generate_key_set, load_b_keys
from pura.pipeline.config import SearchConfig
from pura.protocols.steps import Step
from pura.service.nodes import HelperOffline, NodeB

WAIT_S = 120.0  # a failure bound, not a delay: every wait below returns as soon as its event fires


class _Watch:
    """Observes ``offline`` from outside, through its unit and its pool's refill."""

    def __init__(self, offline: HelperOffline, node: NodeB) -> None:
        self.pool = node.server_b.pool
        self.goal = 0
        self.online = False
        self.refills_online = 0
        self.reached = threading.Event()  # the pool holds >= goal
        self.idle_at_goal = threading.Event()  # a unit was evaluated at goal and declined
        self.declined_online = threading.Event()  # a unit begun while online declined
        unit, refill = offline._one_unit, self.pool.refill

        def watched_unit() -> bool:
            online_at_start = self.online
            did = unit()
            if not did and online_at_start:
                self.declined_online.set()
            if not did and len(self.pool) >= self.goal:
                self.idle_at_goal.set()
            return did

        def watched_refill(count: int) -> None:
            if self.online:
                self.refills_online += 1
            refill(count)
            if len(self.pool) >= self.goal:
                self.reached.set()

        offline._one_unit = watched_unit  # type: ignore[method-assign]
        self.pool.refill = watched_refill  # type: ignore[method-assign]

    def aim(self, goal: int) -> None:
        self.goal = goal
        for event in (self.reached, self.idle_at_goal):
            event.clear()


@pytest.fixture(scope="module")
def node_b(tmp_path_factory: pytest.TempPathFactory) -> NodeB:
    root: Path = tmp_path_factory.mktemp("bkeys")
    generate_key_set(root, DLIB_FAST_PARAMETERS)
    return NodeB(load_b_keys(root / "b"), CopyStore(root / "copies.db"),
                 search=SearchConfig(top_k=2))


def test_pool_is_stocked_once_serving_and_pauses_for_online_work(node_b: NodeB) -> None:
    pool = node_b.server_b.pool
    target = 2 * node_b.server_b.pool_demand(2)
    watch = _Watch(node_b.offline, node_b)
    watch.aim(target)
    assert len(pool) == 0  # nothing precomputed before the node serves
    handlers = node_b.handlers()  # starts the worker
    assert watch.reached.wait(WAIT_S) and watch.idle_at_goal.wait(WAIT_S)
    assert len(pool) == target  # it looked again at the target and stopped: no unbounded growth

    entered, release = threading.Event(), threading.Event()
    node_b.offline._target = target + 50  # room to refill, so only "online" can hold it back
    watch.aim(target + 50)

    def slow(payload: bytes) -> bytes:
        entered.set()
        release.wait(WAIT_S)
        return payload

    worker = threading.Thread(target=node_b.offline.serving(slow), args=(b"x",))
    worker.start()
    assert entered.wait(WAIT_S)
    watch.online = True
    before = len(pool)
    node_b.offline._wake.set()  # wake the worker while the request is in flight ...
    assert watch.declined_online.wait(WAIT_S)  # ... it evaluated a unit and declined it
    # at most the unit already started when the request came
    assert watch.refills_online <= 1 and len(pool) <= before + 1
    watch.online = False
    release.set()
    worker.join(WAIT_S)
    assert watch.reached.wait(WAIT_S) and len(pool) >= target + 50  # resumed after the request
    assert set(handlers) >= {Step.BLINDED_PRODUCT, Step.NORM_SQUARE}
