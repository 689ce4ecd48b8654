"""flush() and stop(): decided by counting records, not by a wall clock that can step back;
a hung sink cannot hold stop() past its timeout; a spool taken over stops quietly."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from spoolkit import Queue, Record, Spool
from spoolkit.backends import DiskBackend
from spoolkit.testing import MemorySink
from tests.helpers import EventLog, event_log_factory, spool_factory

make_spool = pytest.fixture(name="make_spool")(spool_factory)
event_log = pytest.fixture(name="event_log")(event_log_factory)


def _wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until true or ``timeout`` (real) seconds passed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)  # a poll of a predicate, not a wait for an outcome
    return True


def _put_in_the_future(spool: Spool, n: int) -> None:
    """Put ``n`` records stamped an hour ahead: the wall clock steps back after them."""
    with freeze_time(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), tick=True):
        spool.put_many(range(n))


class PermitSink:
    """Keeps every record, each call after taking a permit the test hands out."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.permits = threading.Semaphore(0)
        self._lock = threading.Lock()

    def write(self, batch: Sequence[Record]) -> None:
        """Take a permit, then keep the batch."""
        assert self.permits.acquire(timeout=30)
        with self._lock:
            self.items.extend(r.item for r in batch)

    def delivered(self) -> int:
        """Records kept so far."""
        with self._lock:
            return len(self.items)


def test_flush_of_a_spool_not_started_is_false_after_the_clock_stepped_back(
    make_spool: Any,
) -> None:
    """Records stamped in the "future" still wait: flush says False, not True."""
    spool = make_spool(MemorySink())
    _put_in_the_future(spool, 100)
    assert spool.flush(timeout=0.3) is False
    assert spool.stats().delivered == 0


@pytest.mark.parametrize("how", ["flush", "stop"])
def test_flush_and_stop_wait_for_every_record_after_the_clock_stepped_back(
    make_spool: Any, how: str
) -> None:
    """flush() / stop(drain=True) return True only once all 100 future-stamped records
    reached the sink."""
    sink = PermitSink()
    spool = make_spool(sink, workers=1, batch_size=1)
    _put_in_the_future(spool, 100)
    spool.start()
    result: list[tuple[bool, int]] = []

    def wait() -> None:
        done = spool.flush(timeout=30) if how == "flush" else spool.stop(timeout=30)
        result.append((done, sink.delivered()))

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert _wait_until(lambda: spool._pool.urgent > 0)  # the wait is under way
    for n in range(1, 101):  # one record at a time: a wait that ends early is seen ending
        sink.permits.release()
        assert _wait_until(lambda n=n: sink.delivered() == n or bool(result))
        if result:
            break
    waiter.join(30)
    assert result == [(True, 100)]
    assert sorted(sink.items) == list(range(100))


def test_stop_with_a_hung_sink_returns_false_at_its_timeout_and_says_why(
    make_spool: Any, event_log: EventLog
) -> None:
    """A sink that never returns: stop(timeout=1) returns False within about 1 s, and the
    spool_stopped event gives the reason; the records stay on disk."""
    hang = threading.Event()
    entered = threading.Event()

    def write(batch: Sequence[Record]) -> None:
        entered.set()
        hang.wait()

    spool = make_spool(write, workers=2, batch_size=1, sink_timeout=0.5)
    try:
        spool.put_many(range(10))
        spool.start()
        assert entered.wait(10)
        began = time.monotonic()
        assert spool.stop(timeout=1) is False
        took = time.monotonic() - began
    finally:
        hang.set()
    assert took < 2.5  # its timeout, plus a busy machine's slack
    [stopped] = event_log.named("spool_stopped")
    assert stopped["clean"] is False
    assert "timeout" in stopped["reason"]
    assert "records not delivered stay on disk" in stopped["reason"]
    assert "sink calls still running were abandoned" in stopped["reason"]
    again = make_spool(MemorySink(), path=Path(spool.path))
    again.start()
    assert again.flush(10)
    assert again.stats().delivered == 10


def test_stop_after_another_spool_took_over_the_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Spool whose store a newer Spool on the same directory took over: stop() returns True
    at once, logs no warning, and every record is delivered (by one or the other)."""
    caplog.set_level(logging.INFO, logger="spoolkit")
    first_sink, second_sink = MemorySink(), MemorySink()
    old = Spool(tmp_path / "s", first_sink, backend=DiskBackend(tmp_path / "q"))
    old.put("from the old one")  # before start: it waits on disk
    old.start()
    old.put("second")
    new = Spool(tmp_path / "s2", second_sink, backend=DiskBackend(tmp_path / "q"))
    try:
        began = time.monotonic()
        assert old.stop(timeout=10) is True
        assert time.monotonic() - began < 5
        new.start()
        assert new.flush(10)
    finally:
        new.stop(timeout=5)
    assert {"from the old one", "second"} <= {*first_sink.items, *second_sink.items}
    events = [getattr(r, "spoolkit", {}) for r in caplog.records]
    [stopped] = [e for e in events if e.get("event") == "spool_stopped" and "taken_over" in e]
    assert stopped["clean"] is True
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_stop_after_a_queue_took_over_its_lane(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Queue opened on a running spool's lane takes it over: the spool's stop() returns
    True at once without ClosedError or a warning, and the records are the queue's."""
    caplog.set_level(logging.WARNING, logger="spoolkit")
    spool = Spool(tmp_path / "s", MemorySink())
    spool.put_many(["a", "b"])
    spool.start()
    queue = Queue(spool.lanes_held()[0])
    try:
        began = time.monotonic()
        assert spool.stop(timeout=10) is True
        assert time.monotonic() - began < 5
    finally:
        queue.close()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
