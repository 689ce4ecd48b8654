"""Async sinks (``async def write``): run on the pool's event loop, with a sync sink's behaviour.

Most tests run twice, with a sync and an async sink scripted alike, and check the same outcome:
delivery, retries, dead letters, PartialFailure, sink_timeout and the stats.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from spoolkit import Record, RetryPolicy, Spool
from spoolkit.errors import ConfigError, PartialFailure, PermanentError, TransientError
from spoolkit.spool.async_sink import is_async_callable
from spoolkit.testing import FakeClock
from tests.helpers import EventLog, event_log_factory, spool_factory

make_spool = pytest.fixture(name="make_spool")(spool_factory)
event_log = pytest.fixture(name="event_log")(event_log_factory)

Script = Callable[[Sequence[Record], int], None]
"""What a scripted sink does with a batch on its n-th call (1-based): return or raise."""


class SyncScripted:
    """A sync sink that follows a script and keeps what it accepted."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.calls = 0
        self.kept: list[Record] = []
        self.lock = threading.Lock()

    def _call(self, batch: Sequence[Record]) -> None:
        with self.lock:
            self.calls += 1
            n = self.calls
        self.script(batch, n)
        with self.lock:
            self.kept.extend(batch)

    def write(self, batch: Sequence[Record]) -> None:
        """Follow the script."""
        self._call(batch)


class AsyncScripted(SyncScripted):
    """The same, with ``async def write``: it yields to the loop before and after the script."""

    async def write(self, batch: Sequence[Record]) -> None:  # type: ignore[override]  # async
        """Follow the script, on the pool's loop."""
        await asyncio.sleep(0)
        self._call(batch)
        await asyncio.sleep(0)


@pytest.fixture(params=["sync", "async"])
def scripted(request: pytest.FixtureRequest) -> Callable[[Script], SyncScripted]:
    """Builds the sync or the async scripted sink."""
    return SyncScripted if request.param == "sync" else AsyncScripted


def ok(batch: Sequence[Record], n: int) -> None:
    """Accept every batch."""


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until true or ``timeout`` (real) seconds passed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)  # a poll of a predicate, not a wait for an outcome
    return True


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "spoolkit-async-sink"]


def test_async_write_is_detected_on_the_bound_method() -> None:
    """An async def write (bound method, function or async __call__) is an async sink."""

    class Callable_:
        async def __call__(self, batch: Sequence[Record]) -> None:
            """Nothing."""

    assert is_async_callable(AsyncScripted(ok).write)
    assert is_async_callable(Callable_())
    assert not is_async_callable(SyncScripted(ok).write)
    assert not is_async_callable(print)


def test_every_record_is_delivered_and_counted(make_spool: Any, scripted: Any) -> None:
    """All records reach the sink once; stats count them as delivered, with no error."""
    sink = scripted(ok)
    with make_spool(sink, workers=4, batch_size=7) as spool:
        spool.put_many(range(100))
        assert spool.flush(10)
        stats = spool.stats()
    assert sorted(r.item for r in sink.kept) == list(range(100))
    assert (stats.delivered, stats.retried, stats.dead_lettered) == (100, 0, 0)
    assert stats.last_error is None


def test_a_failed_batch_is_retried_with_the_same_ids(make_spool: Any, scripted: Any) -> None:
    """A TransientError retries the batch in place: same ids, attempts 2, retried counted."""

    def fail_first(batch: Sequence[Record], n: int) -> None:
        if n == 1:
            raise TransientError("down for a moment")

    sink = scripted(fail_first)
    with make_spool(sink, workers=1, retry=RetryPolicy(jitter=0), clock=FakeClock()) as spool:
        spool.put_many(["a", "b"])
        assert spool.flush(10)
        stats = spool.stats()
    assert [(r.item, r.attempts) for r in sink.kept] == [("a", 2), ("b", 2)]
    assert (stats.delivered, stats.retried, stats.dead_lettered) == (2, 2, 0)
    assert "down for a moment" in (stats.last_error or "")


def test_exhausted_retries_dead_letter_the_batch(make_spool: Any, scripted: Any) -> None:
    """A sink failing every call: the batch is dead-lettered after max_attempts attempts."""

    def always(batch: Sequence[Record], n: int) -> None:
        raise TransientError("still down")

    sink = scripted(always)
    retry = RetryPolicy(max_attempts=3, jitter=0)
    with make_spool(sink, workers=1, retry=retry, clock=FakeClock()) as spool:
        spool.put("x")
        assert spool.flush(10)
        stats = spool.stats()
        [letter] = spool.dead_letters.list()
    assert sink.calls == 3
    assert (stats.delivered, stats.retried, stats.dead_lettered) == (0, 2, 1)
    assert (letter.record.item, letter.attempts) == ("x", 3)
    assert "still down" in str(letter.error)


def test_permanent_error_dead_letters_at_once(make_spool: Any, scripted: Any) -> None:
    """A PermanentError dead-letters the batch without a retry."""

    def reject(batch: Sequence[Record], n: int) -> None:
        raise PermanentError("bad record")

    sink = scripted(reject)
    with make_spool(sink, workers=1, retry=RetryPolicy(jitter=0), clock=FakeClock()) as spool:
        spool.put_many(["x", "y"])
        assert spool.flush(10)
        stats = spool.stats()
        letters = spool.dead_letters.list()
    assert sink.calls == 1
    assert sorted(d.record.item for d in letters) == ["x", "y"]
    assert (stats.delivered, stats.retried, stats.dead_lettered) == (0, 0, 2)


def test_partial_failure_retries_only_the_named_records(make_spool: Any, scripted: Any) -> None:
    """PartialFailure from the sink: the others are acknowledged, the named one retried."""

    def one_bad(batch: Sequence[Record], n: int) -> None:
        if n == 1:
            raise PartialFailure([batch[1].id])

    sink = scripted(one_bad)
    with make_spool(
        sink, workers=1, batch_size=3, retry=RetryPolicy(jitter=0), clock=FakeClock()
    ) as spool:
        spool.put_many(["a", "b", "c"])
        assert spool.flush(10)
        stats = spool.stats()
    # the first call's batch is kept only when it returned: here it raised, so only the retry
    assert [(r.item, r.attempts) for r in sink.kept] == [("b", 2)]
    assert (stats.delivered, stats.retried, stats.dead_lettered) == (3, 1, 0)


def test_stuck_call_is_replaced_and_its_batch_redelivered(
    make_spool: Any, event_log: EventLog, scripted: Any
) -> None:
    """A call past sink_timeout is reported stuck; its batch goes to a new worker, delivered once
    counted; an async call is cancelled on the loop, so no thread stays behind for it."""
    clock = FakeClock()
    entered = threading.Event()
    release = threading.Event()
    cancelled = threading.Event()
    is_async = scripted is AsyncScripted

    def hang_first(batch: Sequence[Record], n: int) -> None:
        if n == 1:
            entered.set()
            if not is_async:
                release.wait(30)

    class HangingAsync(AsyncScripted):
        async def write(self, batch: Sequence[Record]) -> None:  # type: ignore[override]
            """Hang on the first call until cancelled."""
            self._call(batch)
            if self.calls == 1:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    cancelled.set()
                    raise

    sink = HangingAsync(hang_first) if is_async else scripted(hang_first)
    with make_spool(sink, workers=2, sink_timeout=5, clock=clock) as spool:
        spool.put("x")
        assert entered.wait(10)
        clock.advance(6)
        assert event_log.wait_for("sink_stuck")
        assert spool.flush(10)
        if is_async:
            assert cancelled.wait(10)
            [stuck] = spool._supervisor._stuck
            assert wait_until(lambda: not stuck.thread.is_alive())
            spool._supervisor.check_stuck()
            assert spool.stats().stuck_threads == 0
        release.set()
        stats = spool.stats()
    assert [r.item for r in sink.kept] == ["x", "x"]  # the stuck call's own keep is ignored
    assert (stats.delivered, stats.worker_restarts, stats.stuck_calls) == (1, 1, 1)


def test_batches_of_several_workers_are_in_flight_at_once_up_to_concurrency(
    make_spool: Any,
) -> None:
    """With concurrency=3 and 6 workers, exactly 3 calls run at once on the one loop."""
    gate = threading.Event()
    now = [0]
    peak = [0]
    threads: set[str] = set()

    class Held:
        concurrency = 3

        async def write(self, batch: Sequence[Record]) -> None:
            """Count calls in flight; hold each until the gate opens."""
            threads.add(threading.current_thread().name)
            now[0] += 1
            peak[0] = max(peak[0], now[0])
            try:
                while not gate.is_set():
                    await asyncio.sleep(0.005)
            finally:
                now[0] -= 1

    with make_spool(Held(), workers=6, batch_size=1) as spool:
        spool.put_many(range(12))
        assert wait_until(lambda: peak[0] >= 3)
        # the three others wait for a slot: give them time to break the limit if they could
        assert not wait_until(lambda: peak[0] > 3, timeout=0.3)
        gate.set()
        assert spool.flush(10)
        assert spool.stats().delivered == 12
    assert peak[0] == 3
    assert threads == {"spoolkit-async-sink"}


def test_stop_cancels_an_async_call_still_running(make_spool: Any) -> None:
    """stop() past its timeout cancels a hanging async call; its batch stays in the spool."""
    entered = threading.Event()
    cancelled = threading.Event()

    class Hanging:
        async def write(self, batch: Sequence[Record]) -> None:
            """Hang until cancelled."""
            entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

    spool = make_spool(Hanging(), workers=1)
    spool.start()
    spool.put("x")
    assert entered.wait(10)
    assert spool.stop(drain=False, timeout=0.1) is False
    assert cancelled.wait(10)
    assert spool.stats().backlog == 1


def test_bad_concurrency_is_a_config_error(tmp_path: Path) -> None:
    """A sink whose concurrency is not a positive int is refused when the spool is built."""

    class Bad:
        concurrency = 0

        async def write(self, batch: Sequence[Record]) -> None:
            """Nothing."""

    with pytest.raises(ConfigError, match="concurrency must be a positive whole number"):
        Spool(tmp_path / "s", Bad())


def test_close_sink_awaits_an_async_close_on_the_loop_then_closes_the_loop(
    make_spool: Any,
) -> None:
    """Pool.close_sink awaits an async close() on the pool's loop, then stops and closes it."""
    closed_on: list[str] = []

    class Writes:
        async def write(self, batch: Sequence[Record]) -> None:
            """Accept."""

    class Closes:
        async def close(self) -> None:
            """Note the thread it ran on."""
            closed_on.append(threading.current_thread().name)

    spool = make_spool(Writes(), workers=1)
    spool.start()
    spool.put("x")
    assert spool.flush(10)
    pool = spool._pool
    runner = pool.runner
    assert runner is not None
    pool.close_sink(Closes())  # the spool's own sink has no close(): the same path, observed
    assert closed_on == ["spoolkit-async-sink"]
    assert runner.loop.is_closed()
    assert not runner.thread.is_alive()


def test_spool_awaits_async_open_and_close_and_its_loop_ends_at_stop(make_spool: Any) -> None:
    """A Spool awaits an async open() and close() on its loop; after stop() the loop is gone."""
    ran_on: list[tuple[str, str]] = []

    class WithOpenClose:
        async def open(self) -> None:
            """Note the thread it ran on."""
            ran_on.append(("open", threading.current_thread().name))

        async def write(self, batch: Sequence[Record]) -> None:
            """Accept."""

        async def close(self) -> None:
            """Note the thread it ran on."""
            ran_on.append(("close", threading.current_thread().name))

    spool = make_spool(WithOpenClose(), workers=1)
    spool.start()
    spool.put("x")
    assert spool.flush(10)
    runner = spool._pool.runner
    assert spool.stop()
    assert ran_on == [("open", "spoolkit-async-sink"), ("close", "spoolkit-async-sink")]
    assert runner is not None
    assert runner.loop.is_closed()
    assert not runner.thread.is_alive()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_delivers_on_a_fresh_loop(make_spool: Any, tmp_path: Path) -> None:
    """After fork, a running spool's async sink delivers the child's records on a new loop."""
    out = tmp_path / "out"
    out.mkdir()

    class ToFiles:
        async def write(self, batch: Sequence[Record]) -> None:
            """One file per record, named by the pid that delivered it."""
            for r in batch:
                (out / f"{os.getpid()}-{r.item}").write_text("")

    with make_spool(ToFiles(), workers=1) as spool:
        spool.put("parent")
        assert spool.flush(10)
        parent_loop = spool._pool.runner
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status only
            code = 1
            try:
                spool.put("child")
                fresh = spool.flush(10) and spool._pool.runner is not parent_loop
                code = 0 if fresh else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (out / f"{pid}-child").exists()
    assert (out / f"{os.getpid()}-parent").exists()
