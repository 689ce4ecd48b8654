"""Backpressure at max_bytes: block (with timeout), drop_newest, drop_oldest, raise."""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from spoolkit import Record
from spoolkit.errors import ClosedError, SpoolError, SpoolFull
from spoolkit.testing import FakeClock, MemorySink
from tests.helpers import EventLog, event_log_factory, spool_factory

make_spool = pytest.fixture(name="make_spool")(spool_factory)
event_log = pytest.fixture(name="event_log")(event_log_factory)

LIMIT = 4096


def _item(i: int) -> str:
    return f"{i:04d}" + "x" * 96


def _fill(spool: Any) -> int:
    """Put items until the spool says it is full; return how many went in."""
    n = 0
    while True:
        try:
            spool.put(_item(n), timeout=0)
        except SpoolFull:
            return n
        n += 1


def test_raise_when_full(make_spool: Any) -> None:
    """when_full="raise" raises SpoolFull (a queue.Full and a SpoolError) at the cap."""
    spool = make_spool(MemorySink(), max_bytes=LIMIT, when_full="raise")
    stored = 0
    while not spool.stats().dropped and stored < 1000:
        try:
            spool.put(_item(stored))
        except SpoolFull as exc:
            info = exc
            break
        stored += 1
    assert isinstance(info, queue.Full)
    assert isinstance(info, SpoolError)
    assert 0 < stored < 1000
    assert spool.stats().bytes_on_disk <= LIMIT + 4096  # plus the dead-letter store's
    assert spool.stats().enqueued == stored


def test_block_honours_the_timeout(make_spool: Any) -> None:
    """when_full="block": put waits at most `timeout` seconds, then raises SpoolFull."""
    spool = make_spool(MemorySink(), max_bytes=LIMIT)
    assert _fill(spool) > 0
    with pytest.raises(SpoolFull):
        spool.put(_item(0), timeout=0.05)


def test_block_waits_until_the_sink_makes_room(make_spool: Any) -> None:
    """A blocked put returns once workers deliver records and free space."""
    sink = MemorySink()
    spool = make_spool(sink, max_bytes=LIMIT, batch_size=4)
    n = _fill(spool)
    done = threading.Event()

    def producer() -> None:
        spool.put(_item(n))
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    assert not done.is_set()
    spool.start()
    assert done.wait(10)
    thread.join()
    assert spool.flush(10)
    assert sink.items == [_item(i) for i in range(n + 1)]


def test_drop_newest_counts_and_logs_once_per_burst(make_spool: Any, event_log: EventLog) -> None:
    """drop_newest keeps the oldest records, counts drops, logs one warning per burst."""
    sink = MemorySink()
    clock = FakeClock()
    spool = make_spool(sink, max_bytes=LIMIT, when_full="drop_newest", batch_size=100, clock=clock)
    for i in range(200):
        spool.put(_item(i))
    stats = spool.stats()
    assert stats.dropped > 0
    assert stats.enqueued + stats.dropped == 200
    assert len(event_log.named("spool_full_dropping")) == 1
    with spool:
        assert spool.flush(10)
        spool.put("fits again")
        assert event_log.named("spool_full_ended") == []  # not a quiet second yet
        clock.advance(2)
        spool.put("fits again")
        [ended] = event_log.named("spool_full_ended")
        assert ended["dropped"] == stats.dropped
        assert spool.flush(10)
    assert sink.items[: stats.enqueued] == [_item(i) for i in range(stats.enqueued)]


def test_drop_newest_second_burst_logs_again(make_spool: Any, event_log: EventLog) -> None:
    """A new burst, after a quiet second with room again, logs again."""
    clock = FakeClock()
    gate = threading.Event()

    def write(batch: Sequence[Record]) -> None:
        assert gate.wait(30)

    spool = make_spool(write, max_bytes=LIMIT, when_full="drop_newest", clock=clock)
    for i in range(100):
        spool.put(_item(i))
    spool.start()
    gate.set()
    assert spool.flush(10)
    gate.clear()  # the sink is down again: the spool fills up
    clock.advance(2)
    for i in range(100):
        spool.put(_item(i))
    gate.set()
    assert len(event_log.named("spool_full_dropping")) == 2
    assert len(event_log.named("spool_full_ended")) == 1


def test_drop_oldest_keeps_the_newest(make_spool: Any, event_log: EventLog) -> None:
    """drop_oldest discards the oldest waiting records to make room for new ones."""
    sink = MemorySink()
    spool = make_spool(sink, max_bytes=LIMIT, when_full="drop_oldest", batch_size=100)
    for i in range(200):
        spool.put(_item(i))
    stats = spool.stats()
    assert stats.dropped > 0
    assert len(event_log.named("spool_full_dropping")) == 1
    with spool:
        assert spool.flush(10)
    kept = [int(s[:4]) for s in sink.items]
    assert kept[-1] == 199
    assert kept == list(range(200 - len(kept), 200))
    assert len(kept) + stats.dropped == 200


def test_put_many_with_a_drop_policy_goes_item_by_item(make_spool: Any) -> None:
    """put_many under drop_newest stores what fits and counts the rest as dropped."""
    spool = make_spool(MemorySink(), max_bytes=LIMIT, when_full="drop_newest")
    spool.put_many(_item(i) for i in range(200))
    stats = spool.stats()
    assert stats.enqueued + stats.dropped == 200
    assert stats.dropped > 0


@pytest.mark.parametrize("when_full", ["block", "raise", "drop_newest", "drop_oldest"])
def test_the_producers_prepared_put_acts_as_put(
    make_spool: Any, tmp_path: Path, when_full: str
) -> None:
    """Spool.putter (what SpoolHandler and SpoolProcessor call) has put's outcomes under
    every when_full: the same records stored, refused or dropped, and ClosedError once
    stopped; for block and raise it stores without going through put."""
    outcomes: dict[str, tuple[list[str], Any]] = {}
    for way in ("put", "prepared"):
        spool = make_spool(MemorySink(), tmp_path / way, max_bytes=LIMIT, when_full=when_full)
        put = spool.putter(0) if way == "prepared" else (lambda x, s=spool: s.put(x, timeout=0))
        calls = 0
        real = spool.put

        def counting(*args: Any, real: Any = real, **kwargs: Any) -> None:
            nonlocal calls
            calls += 1
            real(*args, **kwargs)

        spool.put = counting
        seen = []
        for i in range(80):
            try:
                put(_item(i))
                seen.append("stored")
            except SpoolFull:
                seen.append("full")
        stats = spool.stats()
        outcomes[way] = (seen, (stats.enqueued, stats.dropped, stats.backlog))
        if way == "prepared" and when_full in ("block", "raise"):
            assert calls == 0
        spool.stop(drain=False)
        with pytest.raises(ClosedError):
            put(_item(0))
    assert outcomes["prepared"] == outcomes["put"]
    assert "stored" in outcomes["put"][0]
