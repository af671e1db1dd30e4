"""B's offline refill (:class:`pura.service.nodes.HelperOffline`): stocked once B serves,
bounded, and paused while a request runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pura.crypto.params import FAST_PARAMETERS
from pura.gallery.copies import CopyStore
from pura.keys import generate_key_set, load_b_keys
from pura.pipeline.config import SearchConfig
from pura.service.nodes import NodeB


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def node_b(tmp_path_factory: pytest.TempPathFactory) -> NodeB:
    root: Path = tmp_path_factory.mktemp("bkeys")
    generate_key_set(root, FAST_PARAMETERS)
    return NodeB(load_b_keys(root / "b"), CopyStore(root / "copies.db"),
                 search=SearchConfig(top_k=2))


def test_pool_is_stocked_once_serving_and_pauses_for_online_work(node_b: NodeB) -> None:
    pool = node_b.server_b.pool
    target = 2 * node_b.server_b.pool_demand(2)
    assert len(pool) == 0  # nothing precomputed before the node serves
    handlers = node_b.handlers()
    assert _wait_for(lambda: len(pool) >= target)
    assert len(pool) == target  # stops at the target, does not grow without bound

    entered, release = threading.Event(), threading.Event()
    node_b.offline._target = target + 50  # room to refill, so only "online" can hold it back

    def slow(payload: bytes) -> bytes:
        entered.set()
        release.wait(10)
        return payload

    wrapped = node_b.offline.serving(slow)
    worker = threading.Thread(target=wrapped, args=(b"x",))
    worker.start()
    assert entered.wait(10)
    before = len(pool)
    time.sleep(0.5)
    assert len(pool) <= before + 1  # at most the unit already started when the request came
    release.set()
    worker.join(10)
    assert _wait_for(lambda: len(pool) >= target + 50)
    assert set(handlers) >= {"paillier.blinded_product", "paillier.norm_square"}
