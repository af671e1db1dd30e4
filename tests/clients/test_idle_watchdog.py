"""IdleWatchdog: cancels a call after ``idle_s`` without progress, never while progress comes."""

from __future__ import annotations

import time

import pytest
from pura_client.client import IdleWatchdog

from pura.errors import ConfigError


class _Call:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> bool:
        self.cancelled = True
        return True


def test_fires_after_idle_period() -> None:
    call, dog = _Call(), IdleWatchdog(0.2)
    dog.watch(call)
    deadline = time.monotonic() + 5.0
    while not call.cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    dog.close()
    assert call.cancelled and dog.fired


def test_progress_keeps_it_quiet() -> None:
    call, dog = _Call(), IdleWatchdog(0.4)
    dog.watch(call)
    for _ in range(12):  # 1.2 s in all, three times the idle period
        time.sleep(0.1)
        dog.progress()
    dog.close()
    assert not call.cancelled and not dog.fired


def test_rejects_non_positive_timeout() -> None:
    with pytest.raises(ConfigError):
        IdleWatchdog(0.0)
