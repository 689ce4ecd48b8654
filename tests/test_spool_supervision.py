"""Supervision: crashed workers restart with their batch handed out again; stuck sinks."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from spoolkit import Record
from spoolkit.testing import FakeClock, MemorySink
from tests.helpers import EventLog, event_log_factory, spool_factory

make_spool = pytest.fixture(name="make_spool")(spool_factory)
event_log = pytest.fixture(name="event_log")(event_log_factory)


class SinkBug(BaseException):
    """Not an Exception: no retry policy catches it, so the worker dies of it."""


class CrashingSink:
    """Crashes its worker on the first `crashes` calls, then keeps batches."""

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.calls = 0
        self.inner = MemorySink()
        self._lock = threading.Lock()

    def write(self, batch: Sequence[Record]) -> None:
        """Crash or keep."""
        with self._lock:
            self.calls += 1
            crash = self.calls <= self.crashes
        if crash:
            raise SinkBug("sink bug")
        self.inner.write(batch)


def test_crashed_worker_restarts_and_its_batch_is_delivered(
    make_spool: Any, event_log: EventLog
) -> None:
    """A worker killed by a sink bug is restarted; its batch is handed out again."""
    sink = CrashingSink(crashes=1)
    with make_spool(sink, workers=1, batch_size=10) as spool:
        spool.put_many(range(5))
        assert spool.flush(10)
        stats = spool.stats()
        assert spool._pool.live() == 1
    assert sorted(sink.inner.items) == list(range(5))
    assert stats.worker_restarts == 1
    assert "SinkBug" in (stats.last_error or "")


def test_crash_is_logged_with_bound_context(make_spool: Any, event_log: EventLog) -> None:
    """The crash log carries the spool path, worker, batch size and record id range."""
    sink = CrashingSink(crashes=1)
    with make_spool(sink, workers=1, batch_size=10) as spool:
        spool.put_many(["a", "b", "c"])
        assert spool.flush(10)
    assert event_log.wait_for("worker_restarted")
    [crash] = event_log.named("worker_crashed")
    ids = [r.id for r in sink.inner.records]
    assert crash["spool"] == spool.path
    assert crash["worker"] == 0
    assert crash["batch_size"] == 3
    assert crash["record_ids"] == f"{ids[0]}..{ids[-1]}"
    assert "SinkBug" in crash["error"]


def test_repeated_crashes_keep_the_pool_at_full_size(make_spool: Any, event_log: EventLog) -> None:
    """After a burst of crashes every configured worker is live again."""
    sink = CrashingSink(crashes=4)
    with make_spool(sink, workers=3, batch_size=2, clock=FakeClock()) as spool:
        spool.put_many(range(20))
        assert spool.flush(20)
        assert event_log.wait_for("worker_restarted", count=4)
        assert spool._pool.live() == 3
        assert spool.stats().worker_restarts == 4
    assert sorted(sink.inner.items) == list(range(20))


def test_stuck_sink_call_is_redelivered_to_another_worker(
    make_spool: Any, event_log: EventLog
) -> None:
    """A sink call longer than sink_timeout is reported; its batch goes to another worker."""
    clock = FakeClock()
    entered = threading.Event()
    release = threading.Event()
    seen: list[list[Any]] = []
    lock = threading.Lock()

    def write(batch: Sequence[Record]) -> None:
        with lock:
            seen.append([r.item for r in batch])
            first = len(seen) == 1
        if first:
            entered.set()
            release.wait(30)

    with make_spool(write, workers=2, sink_timeout=5, clock=clock) as spool:
        spool.put("x")
        assert entered.wait(10)
        clock.advance(6)
        assert event_log.wait_for("sink_stuck")
        assert spool.flush(10)
        assert spool.stats().worker_restarts == 1
        assert spool._pool.live() == 2
        release.set()
        spool.put("y")
        assert spool.flush(10)
        stats = spool.stats()
    assert seen[:2] == [["x"], ["x"]]
    assert stats.delivered == 2  # the stuck call's late return is ignored
    [stuck] = event_log.named("sink_stuck")
    assert stuck["batch_size"] == 1
    assert stuck["sink_timeout"] == 5


def test_no_sink_timeout_never_reports_stuck(make_spool: Any, event_log: EventLog) -> None:
    """With sink_timeout=None a long sink call is left alone."""
    clock = FakeClock()
    entered = threading.Event()
    release = threading.Event()

    def write(batch: Sequence[Record]) -> None:
        entered.set()
        release.wait(30)

    with make_spool(write, workers=1, sink_timeout=None, clock=clock) as spool:
        spool.put("x")
        assert entered.wait(10)
        clock.advance(10_000)
        assert spool.flush(0.3) is False
        release.set()
        assert spool.flush(10)
        assert spool.stats().worker_restarts == 0
    assert event_log.named("sink_stuck") == []


def _wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until true or ``timeout`` (real) seconds passed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)  # a poll of a predicate, not a wait for an outcome
    return True


def _worker_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("spoolkit-worker"))


def test_hanging_sink_keeps_abandoned_threads_bounded(make_spool: Any, event_log: EventLog) -> None:
    """A sink that never returns: stuck workers are replaced up to 2 per worker, then kept."""
    clock = FakeClock()
    hang = threading.Event()
    before = _worker_threads()
    spool = make_spool(
        lambda batch: hang.wait(), workers=2, batch_size=1, sink_timeout=0.5, clock=clock
    )
    try:
        spool.put_many(range(50))
        spool.start()
        pool = spool._pool
        for turn in range(6):
            # every live worker is inside a sink call (a replacement too): then time passes
            assert _wait_until(
                lambda: all(s.call_started is not None for s in pool.slots if not s.abandoned)
            )
            clock.advance(1)
            want = min(2 * (turn + 1), 4)
            assert _wait_until(
                lambda want=want, turn=turn: (
                    spool.stats().stuck_calls == want
                    and spool.stats().stuck_threads == (6 if turn >= 2 else want)
                )
            ), spool.stats()
        stats = spool.stats()
        assert _worker_threads() - before == 6  # 2 workers + 4 abandoned, not one per turn
        assert stats.worker_restarts == 4
        assert len(event_log.named("sink_stuck")) == 4
        [limit] = event_log.named("sink_stuck_limit")
        assert limit["max_stuck"] == 4
        assert limit["stuck_workers"] == 2
    finally:
        hang.set()
