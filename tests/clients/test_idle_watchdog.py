"""IdleWatchdog: cancels a call after ``idle_s`` without progress, never while progress comes.

Deterministic: the watchdog reads an injected :class:`_Clock` that only the test advances, so
"idle" is decided by the test's time, not by how fast a loaded machine runs the threads. The
test waits on events (the call cancelled, the watchdog having looked at the clock N times); the
timeouts on those waits only bound a failure.
"""

from __future__ import annotations

import threading

import pytest
from pura_client.client import IdleWatchdog

from pura.errors import ConfigError

WAIT_S = 30.0


class _Call:
    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def cancel(self) -> bool:
        self.cancelled.set()
        return True


class _Clock:
    """Manual monotonic clock; counts reads so a test can wait until the watchdog has looked."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.reads = 0
        self._cond = threading.Condition()

    def __call__(self) -> float:
        with self._cond:
            self.reads += 1
            self._cond.notify_all()
            return self.now

    def advance(self, seconds: float) -> None:
        with self._cond:
            self.now += seconds

    def wait_reads(self, more: int) -> bool:
        """Block until the clock has been read ``more`` further times."""
        with self._cond:
            goal = self.reads + more
            return self._cond.wait_for(lambda: self.reads >= goal, WAIT_S)


def test_fires_after_idle_period() -> None:
    clock, call = _Clock(), _Call()
    dog = IdleWatchdog(0.2, clock=clock)
    dog.watch(call)
    assert clock.wait_reads(3) and not call.cancelled.is_set()  # not idle yet: no cancel
    clock.advance(0.21)
    assert call.cancelled.wait(WAIT_S)
    dog.close()
    assert dog.fired


def test_progress_keeps_it_quiet() -> None:
    clock, call = _Clock(), _Call()
    dog = IdleWatchdog(0.4, clock=clock)
    dog.watch(call)
    for _ in range(12):  # 1.2 s of the watchdog's time in all, three times the idle period
        clock.advance(0.1)
        dog.progress()
        assert clock.wait_reads(2)  # the watchdog thread looked twice more (not idle)
    dog.close()
    assert not call.cancelled.is_set() and not dog.fired


def test_rejects_non_positive_timeout() -> None:
    with pytest.raises(ConfigError):
        IdleWatchdog(0.0)
