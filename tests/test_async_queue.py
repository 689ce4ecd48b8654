"""Queue's asyncio consumers: aget_batch waits off the loop, at least once under cancellation."""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from spoolkit import Queue
from spoolkit.errors import PutCancelled


def test_aget_batch_waits_off_the_loop(tmp_path: Path) -> None:
    """aget_batch waits on a thread: the loop keeps turning until a record arrives."""
    q = Queue(tmp_path / "q")

    async def main() -> list[Any]:
        task = asyncio.create_task(q.aget_batch(10, timeout=10))
        ticks = 0
        while ticks < 10:
            await asyncio.sleep(0.001)
            ticks += 1
        assert not task.done()
        await asyncio.to_thread(q.put, "x")
        batch = await task
        await q.aack(*batch)
        return [d.item for d in batch]

    assert asyncio.run(main()) == ["x"]
    assert q.unfinished_tasks == 0
    assert asyncio.run(q.aget_batch(1, timeout=0.05)) == []
    q.close()


def test_cancelled_aget_batch_hands_records_back(tmp_path: Path) -> None:
    """aget_batch cancelled at random points while records arrive: no record is lost; each is
    consumed by a later call (records a cancelled call took are handed back)."""
    rng = random.Random(4)
    q = Queue(tmp_path / "q")
    n = 2000
    got: list[int] = []

    def producer() -> None:
        for i in range(n):
            q.put(i)

    async def main() -> None:
        thread = threading.Thread(target=producer)
        thread.start()
        while len(got) < n:
            task = asyncio.create_task(q.aget_batch(rng.randint(1, 20), timeout=1))
            await asyncio.sleep(rng.choice((0, 0, 0.0002, 0.001)))
            task.cancel()
            try:
                batch = await task
            except asyncio.CancelledError:
                continue
            got.extend(d.item for d in batch)
            await q.aack(*batch)
        await asyncio.to_thread(thread.join)

    asyncio.run(main())
    assert sorted(got) == list(range(n))
    assert q.unfinished_tasks == 0
    q.close()


def test_consumer_cancelled_mid_batch_gets_records_again(tmp_path: Path) -> None:
    """A consumer task cancelled after aget_batch, before aack: its records are delivered
    again (at once if it calls anack, else by the next opener)."""
    q = Queue(tmp_path / "q", fsync="always")
    for i in range(10):
        q.put(i)
    started = asyncio.Event

    async def consumer(hand_back: bool, ready: asyncio.Event) -> None:
        batch = await q.aget_batch(5, timeout=1)
        try:
            ready.set()
            await asyncio.sleep(10)  # "processing", cancelled meanwhile
            await q.aack(*batch)
        except asyncio.CancelledError:
            if hand_back:
                await q.anack(*batch)
            raise

    async def run(hand_back: bool) -> None:
        ready = started()
        task = asyncio.create_task(consumer(hand_back, ready))
        await ready.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run(hand_back=True))
    assert [d.item for d in q.get_batch(5, 0)] == [0, 1, 2, 3, 4]  # handed back: first again
    asyncio.run(run(hand_back=False))  # took 5..9, then died without acking anything
    q.close()
    q = Queue(tmp_path / "q")
    assert sorted(d.item for d in q.get_batch(20, 0)) == list(range(10))
    q.close()


def test_aack_fsync_always_runs_off_the_loop(tmp_path: Path) -> None:
    """With fsync="always" aack acknowledges (and fsyncs) on a spoolkit thread."""
    q = Queue(tmp_path / "q", fsync="always")
    threads: list[str] = []
    ack = q.ack

    def spy(*deliveries: Any) -> None:
        threads.append(threading.current_thread().name)
        ack(*deliveries)

    q.ack = spy  # type: ignore[method-assign]

    async def main() -> None:
        await q.aput("a")
        batch = await q.aget_batch(1, timeout=1)
        await q.aack(*batch)

    asyncio.run(main())
    assert len(threads) == 1
    assert threads[0].startswith("spoolkit-async")
    assert q.unfinished_tasks == 0
    q.close()


def test_queue_aput_waits_for_room_and_cancels_cleanly(tmp_path: Path) -> None:
    """Queue.aput on a full queue waits off the loop; cancelled, it says stored=False and the
    queue holds only what was there."""
    q = Queue(tmp_path / "q", maxsize=2)

    async def main() -> PutCancelled:
        await q.aput(1)
        await q.aput(2)
        task = asyncio.create_task(q.aput(3))
        for _ in range(10):
            await asyncio.sleep(0.001)
        assert not task.done()
        task.cancel()
        with pytest.raises(PutCancelled) as info:
            await task
        return info.value

    assert asyncio.run(main()).stored is False
    assert [d.item for d in q.get_batch(10, 0)] == [1, 2]
    q.close()


def test_records_taken_after_the_cancel_are_handed_back(tmp_path: Path) -> None:
    """Records the waiting thread takes after the call was cancelled are nacked at once: the
    next get_batch has them."""
    q = Queue(tmp_path / "q")
    real = q.get_batch
    waiting, gate = threading.Event(), threading.Event()
    main_thread = threading.current_thread()

    def spy(max_items: int, timeout: float | None = None) -> list[Any]:
        if threading.current_thread() is not main_thread:
            waiting.set()
            gate.wait(5)  # returns only after the test cancelled the call
        return real(max_items, timeout)

    q.get_batch = spy  # type: ignore[method-assign]

    async def main() -> None:
        task = asyncio.create_task(q.aget_batch(5, timeout=5))
        await asyncio.to_thread(waiting.wait, 5)
        for i in range(3):
            q.put(i)
        task.cancel()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert [d.item for d in real(10, 0)] == [0, 1, 2]
    q.close()
