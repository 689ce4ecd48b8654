"""@spool.producer and @spool.deferred: enqueue return values, store calls to run later."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

import spoolkit
from spoolkit import DeferredHandle, RetryPolicy, Spool
from spoolkit.errors import ConfigError, SerializationError, TransientError
from spoolkit.testing import FakeClock, MemorySink
from tests.helpers import spool_factory

make_spool = pytest.fixture(name="make_spool")(spool_factory)


# -- producer -----------------------------------------------------------------------------------


def test_producer_enqueues_the_return_value(make_spool: Any) -> None:
    """The return value is put and still returned; None is not put."""
    sink = MemorySink()
    spool = make_spool(sink)

    @spool.producer
    def event(n: int) -> dict[str, int] | None:
        return {"n": n} if n else None

    assert event(1) == {"n": 1}
    assert event(0) is None
    assert event.__name__ == "event"
    with spool:
        assert spool.flush(10)
    assert sink.items == [{"n": 1}]


def test_producer_on_a_generator_puts_every_yielded_value(make_spool: Any) -> None:
    """Each yielded value is put as the caller iterates; send() and the return value pass."""
    sink = MemorySink()
    spool = make_spool(sink)

    @spool.producer
    def rows() -> Generator[int, int | None, str]:
        got = yield 1
        yield 10 * (got or 0)
        return "done"

    gen = rows()
    assert next(gen) == 1
    assert gen.send(5) == 50
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "done"
    with spool:
        assert spool.flush(10)
    assert sink.items == [1, 50]


def test_producer_on_a_method(make_spool: Any) -> None:
    """Decorating a method keeps self binding."""
    sink = MemorySink()
    spool = make_spool(sink)

    class Service:
        factor = 3

        @spool.producer
        def compute(self, x: int) -> int:
            return x * self.factor

    assert Service().compute(2) == 6
    with spool:
        assert spool.flush(10)
    assert sink.items == [6]


def test_producer_on_async_functions(make_spool: Any) -> None:
    """async def functions and async generators work too."""
    sink = MemorySink()
    spool = make_spool(sink)

    @spool.producer
    async def fetch(x: int) -> int:
        return x + 1

    @spool.producer
    async def stream() -> Any:
        for i in (7, 8):
            yield i

    async def main() -> list[int]:
        return [await fetch(1)] + [i async for i in stream()]

    assert asyncio.run(main()) == [2, 7, 8]
    with spool:
        assert spool.flush(10)
    assert sink.items == [2, 7, 8]


# -- deferred -----------------------------------------------------------------------------------


def test_deferred_call_returns_a_handle_and_runs_later(make_spool: Any) -> None:
    """Calling stores the call and returns at once; a worker runs the real function."""
    ran: list[tuple[Any, ...]] = []
    sink = MemorySink()
    spool = make_spool(sink)

    @spool.deferred
    def send_email(to: str, *, subject: str) -> None:
        ran.append((to, subject))

    handle = send_email("a@example.com", subject="hi")
    assert isinstance(handle, DeferredHandle)
    assert handle.name.endswith("send_email")
    assert handle.id.startswith(spool._backend.uid + "-")
    assert ran == []
    spool.put("data")
    with spool:
        assert spool.flush(10)
    assert ran == [("a@example.com", "hi")]
    assert sink.items == ["data"]  # the call never reaches the sink


def test_deferred_with_name_and_retry(make_spool: Any) -> None:
    """@spool.deferred(name=..., retry=...) retries the function with its own policy."""
    clock = FakeClock()
    spool = make_spool(MemorySink(), clock=clock)
    attempts: list[int] = []

    @spool.deferred(name="charge", retry=RetryPolicy(initial_wait=2, multiplier=1, jitter=0))
    def charge(amount: int) -> None:
        attempts.append(amount)
        if len(attempts) < 3:
            raise TransientError("gateway down")

    assert charge.name == "charge"
    assert charge(5).name == "charge"
    with spool:
        assert spool.flush(10)
    assert attempts == [5, 5, 5]
    assert clock.sleeps == [2, 2]


def test_deferred_survives_a_restart(make_spool: Any, tmp_path: Path) -> None:
    """A call stored by one spool runs in the next one, found by its registered name."""
    first = make_spool(MemorySink())

    @first.deferred(name="job")
    def job_v1(x: int) -> None:
        raise AssertionError("never runs here")

    job_v1(41)
    first.stop(drain=False)

    ran: list[int] = []
    second = make_spool(MemorySink())

    @second.deferred(name="job")
    def job_v2(x: int) -> None:
        ran.append(x + 1)

    with second:
        assert second.flush(10)
    assert ran == [42]


def test_unknown_deferred_name_is_dead_lettered(make_spool: Any) -> None:
    """A stored call whose name nobody registered goes to the dead letters with a clear error."""
    first = make_spool(MemorySink())
    handle = first.deferred(name="ghost")(lambda: None)()
    first.stop(drain=False)

    second = make_spool(MemorySink())
    with second:
        assert second.flush(10)
        [letter] = second.dead_letters.list()
        assert letter.id == handle.id
        assert letter.error.type == "spoolkit.errors.UnknownDeferredError"
        assert "'ghost'" in letter.error.message
        ran = threading.Event()
        second.deferred(name="ghost")(ran.set)
        assert second.dead_letters.requeue() == 1
        assert second.flush(10)
    assert ran.is_set()


def test_unserializable_arguments_raise_at_call_time(make_spool: Any) -> None:
    """Arguments the serializer refuses raise SerializationError; nothing is stored."""
    spool = make_spool(MemorySink(), serializer="json")

    @spool.deferred
    def work(x: Any) -> None:
        pass

    with pytest.raises(SerializationError):
        work(object())
    assert spool.stats().backlog == 0
    assert spool.stats().enqueued == 0


def test_deferred_with_the_json_serializer(make_spool: Any) -> None:
    """With serializer="json" calls travel as marked dicts and still run."""
    got: list[Any] = []
    sink = MemorySink()
    spool = make_spool(sink, serializer="json")

    @spool.deferred(name="j")
    def work(a: int, b: list[int]) -> None:
        got.append((a, b))

    work(1, [2, 3])
    spool.put({"plain": True})
    with spool:
        assert spool.flush(10)
    assert got == [(1, [2, 3])]
    assert sink.items == [{"plain": True}]


def test_async_deferred_function(make_spool: Any) -> None:
    """An async def deferred function is awaited by the worker."""
    done: list[int] = []
    spool = make_spool(MemorySink())

    @spool.deferred(name="a")
    async def work(x: int) -> None:
        await asyncio.sleep(0)
        done.append(x)

    work(3)
    with spool:
        assert spool.flush(10)
    assert done == [3]


def test_a_name_cannot_be_registered_twice(make_spool: Any) -> None:
    """Registering another function under a taken name raises ConfigError."""
    spool: Spool = make_spool(MemorySink())
    spool.deferred(name="x")(print)
    spool.deferred(name="x")(print)  # the same function again is fine
    with pytest.raises(ConfigError):
        spool.deferred(name="x")(len)


def test_deferred_function_can_still_be_called_directly(make_spool: Any) -> None:
    """.func is the undecorated function."""
    spool = make_spool(MemorySink())

    @spool.deferred
    def add(a: int, b: int) -> int:
        return a + b

    assert add.func(2, 3) == 5
    assert "add" in repr(add)


# -- current_record -------------------------------------------------------------------------------


def test_deferred_function_sees_its_record_id_and_attempt(make_spool: Any) -> None:
    """current_record() inside the call gives handle.id and the attempt number, each retry."""
    clock = FakeClock()
    spool = make_spool(MemorySink(), clock=clock, workers=1)
    seen: list[tuple[str, int]] = []

    @spool.deferred(name="notify", retry=RetryPolicy(initial_wait=1, multiplier=1, jitter=0))
    def notify(url: str) -> None:
        record = spoolkit.current_record()
        assert record is not None
        seen.append((record.id, record.attempts))
        if len(seen) < 3:
            raise TransientError("partner down")

    first, second = notify("https://a.example"), notify("https://b.example")
    with spool:
        assert spool.flush(10)
    assert seen[:3] == [(first.id, 1), (first.id, 2), (first.id, 3)]
    assert seen[3:] == [(second.id, 1)]


def test_async_deferred_function_sees_its_record(make_spool: Any) -> None:
    """An async def deferred function sees current_record() too."""
    spool = make_spool(MemorySink())
    seen: list[str | None] = []

    @spool.deferred(name="a")
    async def work() -> None:
        await asyncio.sleep(0)
        record = spoolkit.current_record()
        seen.append(record.id if record else None)

    handle = work()
    with spool:
        assert spool.flush(10)
    assert seen == [handle.id]


def test_current_record_is_none_outside_a_deferred_call(make_spool: Any) -> None:
    """None in the caller, in a direct call of .func and in a sink, before and after a run."""
    in_sink: list[object] = []
    spool = make_spool(lambda batch: in_sink.append(spoolkit.current_record()))

    @spool.deferred(name="d")
    def work() -> object:
        return spoolkit.current_record()

    assert spoolkit.current_record() is None
    assert work.func() is None
    work()
    spool.put("data")
    with spool:
        assert spool.flush(10)
    assert in_sink == [None]
    assert spoolkit.current_record() is None
