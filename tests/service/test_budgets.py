"""QueryBudget (issue 13, item 9) and StreamGuard (item 3), without servers: a real store as the
ledger, an injected clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pura.errors import BudgetExhaustedError
from pura.gallery.store import GalleryStore
from pura.service.interceptors import QueryBudget, StreamGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_charges_refunds_and_malformed_budget_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    store = GalleryStore(tmp_path / "g.db")
    budget = QueryBudget(per_principal=3, window_s=100, malformed_per_principal=2,
                         clock=clock, ledger=store)
    assert budget.charge("eve") == 2
    budget.charge("eve")
    budget.refund("eve")  # not answered: given back
    assert budget.remaining("eve") == 2
    budget.record_malformed("eve")
    budget.record_malformed("eve")
    with pytest.raises(BudgetExhaustedError, match="malformed"):
        budget.check_malformed("eve")
    budget.record_failure("lfw/bob")
    store.close()
    store = GalleryStore(tmp_path / "g.db")  # restart: the windows come back from the store
    again = QueryBudget(per_principal=3, window_s=100, malformed_per_principal=2,
                        clock=clock, ledger=store)
    assert again.remaining("eve") == 2
    with pytest.raises(BudgetExhaustedError, match="malformed"):
        again.check_malformed("eve")
    clock.now += 101  # the window slides
    again.check_malformed("eve")
    assert again.remaining("eve") == 3
    store.close()


class FakeContext:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def test_stream_caps_and_idle_cancellation() -> None:
    clock = Clock()
    guard = StreamGuard(per_principal=2, total=3, idle_s=5, clock=clock)
    contexts = [FakeContext() for _ in range(4)]
    ctx: Any = contexts
    with guard.admit("e1", ctx[0]) as s1, guard.admit("e1", ctx[1]):
        with pytest.raises(BudgetExhaustedError, match="per principal"), \
                guard.admit("e1", ctx[2]):
            pass
        with guard.admit("e2", ctx[2]):
            with pytest.raises(BudgetExhaustedError, match="on this server"), \
                    guard.admit("e3", ctx[3]):
                pass
            clock.now += 3
            s1.touch()
            clock.now += 3  # streams 2 and 3 idle for 6 s, stream 1 for 3 s
            assert guard.sweep() == 2
            assert [c.cancelled for c in contexts] == [False, True, True, False]
            with s1.working():
                clock.now += 60  # server work is not client idleness
                assert guard.sweep() == 0
    assert guard.open_count() == 0
