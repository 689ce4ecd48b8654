"""Spool's asyncio side: aput on or off the loop, cancellation outcomes, async with, aflush."""

from __future__ import annotations

import asyncio
import collections
import random
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from spoolkit import Record, Spool
from spoolkit.errors import SpoolFull
from spoolkit.spool.aio import PutCancelled
from spoolkit.testing import MemorySink
from tests.helpers import spool_factory

make_spool = pytest.fixture(name="make_spool")(spool_factory)

LIMIT = 4096


def _item(i: int) -> str:
    return f"{i:05d}" + "x" * 95


def _fill(spool: Spool) -> int:
    n = 0
    while True:
        try:
            spool.put(_item(n), timeout=0)
        except SpoolFull:
            return n
        n += 1


def _read_back(path: Path) -> list[Any]:
    """Every record the spool at ``path`` holds, delivered by a fresh consuming Spool."""
    sink = MemorySink()
    spool = Spool(path, sink, batch_interval=0)
    spool.start()
    assert spool.flush(20)
    spool.stop()
    return sink.items


def _finishes_without_suspending(coro: Any) -> bool:
    """Whether ``coro`` runs to its end at its first step (it never left the loop's thread)."""
    try:
        coro.send(None)
    except StopIteration:
        return True
    coro.close()
    return False


class SlowSink:
    """Delivers each batch after a short pause (load, not synchronisation): a full spool
    makes room a little at a time."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.items: list[Any] = []

    def write(self, batch: Sequence[Record]) -> None:
        time.sleep(self.pause)
        self.items.extend(r.item for r in batch)


def test_aput_with_room_runs_on_the_loop(make_spool: Any) -> None:
    """aput with room and no fsync (and aput_many without max_bytes) store at their first
    step: no thread hop, no suspension."""
    spool = make_spool(MemorySink(), max_bytes=LIMIT, consume=False)
    assert _finishes_without_suspending(spool.aput("a"))
    assert spool.stats().enqueued == 1
    unbounded = make_spool(MemorySink(), path=spool.path + "-2", consume=False)
    assert _finishes_without_suspending(unbounded.aput("a"))
    assert _finishes_without_suspending(unbounded.aput_many(["b", "c"]))
    assert unbounded.stats().enqueued == 3


def test_aput_fsync_always_goes_off_the_loop(make_spool: Any) -> None:
    """With fsync="always" aput stores (and fsyncs) on a spoolkit thread, not the loop's."""
    spool = make_spool(MemorySink(), fsync="always", consume=False)
    threads: list[str] = []
    put = spool.put

    def spy(item: Any, **kw: Any) -> None:
        threads.append(threading.current_thread().name)
        put(item, **kw)

    spool.put = spy

    async def main() -> None:
        await spool.aput("b")
        await spool.aput("c", durable=True)

    asyncio.run(main())
    assert threads
    assert all(t.startswith("spoolkit-async") for t in threads), threads
    spool.stop()
    assert sorted(_read_back(spool.path)) == ["b", "c"]


def test_aput_waiting_for_room_does_not_block_the_loop(make_spool: Any) -> None:
    """A full spool under "block": aput waits off the loop (other tasks run) and a cancel
    reports stored=False, with nothing stored."""
    spool = make_spool(MemorySink(), max_bytes=LIMIT, consume=False)
    stored = _fill(spool)

    async def main() -> PutCancelled:
        task = asyncio.create_task(spool.aput(_item(99999)))
        ticks = 0
        while ticks < 20:  # the loop keeps turning while the put waits
            await asyncio.sleep(0.001)
            ticks += 1
        assert not task.done()
        task.cancel()
        with pytest.raises(PutCancelled) as info:
            await task
        return info.value

    exc = asyncio.run(main())
    assert exc.stored is False
    assert isinstance(exc, asyncio.CancelledError)
    spool.stop()
    items = _read_back(spool.path)
    assert len(items) == stored
    assert _item(99999) not in items


def test_aput_timeout_raises_spool_full(make_spool: Any) -> None:
    """aput(timeout=...) on a full "block" spool raises SpoolFull once the timeout passed."""
    spool = make_spool(MemorySink(), max_bytes=LIMIT, consume=False)
    _fill(spool)
    with pytest.raises(SpoolFull):
        asyncio.run(spool.aput(_item(99999), timeout=0.1))


def test_aput_durable_stores_and_counts(make_spool: Any) -> None:
    """aput(durable=True) stores the record (fsynced, off the loop) and counts it."""
    spool = make_spool(MemorySink(), consume=False)
    asyncio.run(spool.aput("d", durable=True))
    assert spool.stats().enqueued == 1
    spool.stop()
    assert _read_back(spool.path) == ["d"]


@pytest.mark.parametrize(
    ("n", "durable"),
    [
        (3000, False),
        (600, True),
        pytest.param(30000, False, marks=pytest.mark.slow),
        pytest.param(5000, True, marks=pytest.mark.slow),
    ],
)
def test_cancelled_aputs_report_what_is_on_disk(make_spool: Any, n: int, durable: bool) -> None:
    """Thousands of aputs (durable or not) on a full spool, cancelled at random points: every
    call's outcome (returned, or PutCancelled.stored) matches what the spool holds, each
    record once."""
    rng = random.Random(18 + n)
    sink = SlowSink(0.002)
    spool = make_spool(sink, max_bytes=LIMIT, workers=1, batch_size=8)
    spool.start()
    started = [False] * n

    async def one(i: int) -> None:
        started[i] = True
        await spool.aput(_item(i), durable=durable)

    async def main() -> list[BaseException | None]:
        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        while not all(t.done() for t in tasks):
            await asyncio.sleep(rng.choice((0, 0, 0.0005, 0.002)))
            for _ in range(rng.randint(0, 12)):
                t = tasks[rng.randrange(n)]
                if not t.done():
                    t.cancel()
        out: list[BaseException | None] = []
        for t in tasks:
            out.append(t.exception() if not t.cancelled() else _cancel_exc(t))
        return out

    outcomes = asyncio.run(main())
    expected = set()
    kinds: collections.Counter[str] = collections.Counter()
    for i, exc in enumerate(outcomes):
        if exc is None:
            expected.add(_item(i))
            kinds["returned"] += 1
        elif isinstance(exc, PutCancelled):
            kinds[f"cancelled stored={exc.stored}"] += 1
            if exc.stored:
                expected.add(_item(i))
        else:
            assert isinstance(exc, asyncio.CancelledError), exc
            assert not started[i], f"aput {i} was cancelled without saying what it stored"
            kinds["cancelled before aput"] += 1
    assert spool.stop(timeout=20)
    held = sink.items + _read_back(spool.path)
    counts = collections.Counter(held)
    assert set(counts) == expected, kinds
    assert max(counts.values()) == 1
    assert kinds["cancelled stored=False"] > 0, kinds
    assert kinds["returned"] > 0, kinds


def _cancel_exc(task: asyncio.Task[Any]) -> BaseException:
    """The CancelledError a cancelled task ended with (its subclass and attributes kept)."""
    try:
        task.result()
    except asyncio.CancelledError as exc:
        return exc
    raise AssertionError("task was not cancelled")


def test_aput_many_cancelled_reports_how_many(make_spool: Any) -> None:
    """aput_many cancelled while waiting for room: PutCancelled.stored items (a prefix) are
    in the spool, the rest are not."""
    spool = make_spool(MemorySink(), max_bytes=LIMIT, consume=False)
    first = _fill(spool)
    spool.stop()
    sink = SlowSink(0.005)
    spool = make_spool(sink, max_bytes=LIMIT, batch_size=1)
    # no room until the consumer starts, then room for a record every few milliseconds
    items = [f"many-{i}" + "y" * 95 for i in range(200)]

    async def main() -> PutCancelled:
        task = asyncio.create_task(spool.aput_many(items))
        await asyncio.sleep(0.01)
        await asyncio.to_thread(spool.start)  # delivery makes room: some items go in
        while spool.stats().enqueued < 5:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(PutCancelled) as info:
            await task
        return info.value

    exc = asyncio.run(main())
    assert isinstance(exc.stored, int)
    assert 5 <= exc.stored < len(items)
    spool.stop()
    held = [x for x in _read_back(spool.path) if x.startswith("many-")]
    delivered = [x for x in sink.items if x.startswith("many-")]
    assert sorted(held + delivered) == sorted(items[: exc.stored])
    assert first > 0


def test_async_with_aflush_astop(make_spool: Any, tmp_path: Path) -> None:
    """async with starts and stops the spool; aflush waits for delivery off the loop."""
    sink = MemorySink()

    async def main() -> Spool:
        async with Spool(tmp_path / "s", sink, batch_interval=0) as spool:
            await spool.aput_many(range(10))
            assert await spool.aflush(10)
            assert sorted(sink.items) == list(range(10))
            await spool.aput(10)
        return spool

    spool = asyncio.run(main())
    assert spool._state == "stopped"
    assert sorted(sink.items) == list(range(11))


def test_astop_returns_stop_result(make_spool: Any) -> None:
    """astop() stops the spool on a thread and returns what stop() returns."""
    spool = make_spool(MemorySink())
    spool.start()

    async def main() -> bool:
        await spool.aput("x")
        return await spool.astop(drain=True, timeout=10)

    assert asyncio.run(main()) is True
    assert spool._sink.items == ["x"]
    assert spool._state == "stopped"


EXIT_WITH_A_WAITING_APUT = """
import asyncio, sys
from spoolkit import Spool
from spoolkit.errors import SpoolFull
spool = Spool(sys.argv[1], None, max_bytes=4096, consume=False)
try:
    while True:
        spool.put("x" * 100, timeout=0)
except SpoolFull:
    pass
loop = asyncio.new_event_loop()
task = loop.create_task(spool.aput("y" * 100))
loop.run_until_complete(asyncio.sleep(0.2))
print("exiting with an aput waiting", flush=True)
"""


def test_interpreter_exits_with_an_aput_waiting(tmp_path: Path) -> None:
    """An aput left waiting for room (its loop abandoned, never cancelled) does not keep the
    interpreter from exiting: its thread gives up at exit."""
    out = subprocess.run(
        [sys.executable, "-c", EXIT_WITH_A_WAITING_APUT, str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "exiting with an aput waiting" in out.stdout
