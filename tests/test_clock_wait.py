"""Waiting on a clock for an event: SystemClock.wait, FakeClock.wait, and user clocks without
``wait`` (the adapter in spoolkit._internal.clock)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from spoolkit import RetryPolicy, Spool
from spoolkit._internal.clock import wait
from spoolkit.retry import Clock, SystemClock
from spoolkit.testing import FakeClock, FlakySink


class SleepOnly:
    """A user's clock with only the three members the Clock protocol requires."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        """Fake wall-clock seconds."""
        return self.now

    def monotonic(self) -> float:
        """Fake monotonic seconds."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Record the sleep and move time forward, at once."""
        self.sleeps.append(seconds)
        self.now += seconds


def test_fake_clock_wait_returns_at_once_and_moves_time() -> None:
    """FakeClock.wait records the sleep, advances both clocks and returns False (not set)."""
    clock = FakeClock()
    before, mono = clock.time(), clock.monotonic()
    started = time.monotonic()
    assert clock.wait(threading.Event(), 30.0) is False
    assert time.monotonic() - started < 1
    assert clock.sleeps == [30.0]
    assert clock.time() == before + 30.0
    assert clock.monotonic() == mono + 30.0


def test_fake_clock_wait_on_a_set_event_takes_no_time() -> None:
    """With the event already set, FakeClock.wait returns True and records no sleep."""
    clock = FakeClock()
    event = threading.Event()
    event.set()
    before = clock.time()
    assert clock.wait(event, 30.0) is True
    assert clock.sleeps == []
    assert clock.time() == before


def test_system_clock_wait_ends_when_the_event_is_set() -> None:
    """SystemClock.wait returns True as soon as another thread sets the event."""
    event = threading.Event()
    threading.Timer(0.05, event.set).start()
    started = time.monotonic()
    assert SystemClock().wait(event, 30.0) is True
    assert time.monotonic() - started < 10


def test_system_clock_wait_times_out() -> None:
    """SystemClock.wait returns False after the timeout when nothing sets the event."""
    started = time.monotonic()
    assert SystemClock().wait(threading.Event(), 0.05) is False
    assert time.monotonic() - started >= 0.04


def test_adapter_uses_the_clock_own_wait() -> None:
    """wait(clock, ...) calls a clock's own wait (FakeClock: at once, the sleep recorded)."""
    clock = FakeClock()
    assert wait(clock, threading.Event(), 2.0) is False
    assert clock.sleeps == [2.0]


def test_adapter_sleeps_on_a_clock_without_wait() -> None:
    """A clock with only time/monotonic/sleep is still a Clock; the adapter sleeps on it and
    then reports the event, and skips the sleep when the event is already set."""
    clock = SleepOnly()
    assert isinstance(clock, Clock)
    event = threading.Event()
    assert wait(clock, event, 3.0) is False
    assert clock.sleeps == [3.0]
    event.set()
    assert wait(clock, event, 3.0) is True
    assert clock.sleeps == [3.0]


def test_spool_backs_off_on_a_user_clock_without_wait(tmp_path: Path) -> None:
    """A Spool given a clock without wait() retries with the policy's waits on that clock."""
    clock = SleepOnly()
    sink = FlakySink(pattern=[True, True])
    retry = RetryPolicy(max_attempts=5, initial_wait=1, multiplier=2, jitter=0)
    with Spool(tmp_path / "spool", sink, workers=1, clock=clock, retry=retry) as spool:
        spool.put("x")
        assert spool.flush(10)
    assert [r.item for r in sink.inner.records] == ["x"]
    assert clock.sleeps[:2] == [1, 2]
