"""spoolkit.testing: MemorySink, FlakySink and FakeClock behave as documented."""

from __future__ import annotations

import threading

import pytest

from spoolkit import Record, Sink
from spoolkit.errors import PermanentError, TransientError
from spoolkit.testing import FakeClock, FlakySink, MemorySink


def _batch(*items: object) -> list[Record]:
    return [Record(f"u-{i}", item, 0.0) for i, item in enumerate(items)]


def test_memory_sink_keeps_batches_in_order() -> None:
    """MemorySink keeps batches, flattens records and items, and counts open/close."""
    sink = MemorySink()
    assert isinstance(sink, Sink)
    sink.open()
    sink.write(_batch(1, 2))
    sink.write(_batch(3))
    sink.close()
    assert [[r.item for r in b] for b in sink.batches] == [[1, 2], [3]]
    assert sink.items == [1, 2, 3]
    assert (sink.opened, sink.closed) == (1, 1)
    sink.clear()
    assert sink.items == []


def test_memory_sink_wait_for_wakes_on_write() -> None:
    """wait_for returns once enough records arrived, and False on timeout."""
    sink = MemorySink()
    assert sink.wait_for(1, timeout=0.01) is False
    writer = threading.Thread(target=sink.write, args=(_batch("a", "b"),))
    writer.start()
    assert sink.wait_for(2, timeout=10)
    writer.join()


def test_flaky_sink_follows_its_pattern() -> None:
    """A pattern decides each call: True fails with `error`, an exception is raised as is."""
    sink = FlakySink(pattern=[True, None, PermanentError("no"), False])
    with pytest.raises(TransientError):
        sink.write(_batch(1))
    sink.write(_batch(2))
    with pytest.raises(PermanentError):
        sink.write(_batch(3))
    sink.write(_batch(4))
    sink.write(_batch(5))  # past the pattern: succeeds
    assert [r.item for r in sink.records] == [2, 4, 5]
    assert (sink.calls, sink.failures) == (5, 2)


def test_flaky_sink_rate_is_deterministic_with_a_seed() -> None:
    """The same seed fails the same calls; the share is about fail_rate."""

    def outcomes(seed: int) -> list[bool]:
        sink = FlakySink(0.3, seed=seed)
        result = []
        for i in range(1000):
            try:
                sink.write(_batch(i))
                result.append(True)
            except TransientError:
                result.append(False)
        return result

    assert outcomes(1) == outcomes(1)
    assert outcomes(1) != outcomes(2)
    assert 200 < outcomes(1).count(False) < 400
    with pytest.raises(ValueError, match="fail_rate"):
        FlakySink(1.5)


def test_fake_clock_sleeps_instantly_and_moves_time() -> None:
    """sleep() records the duration and advances time and monotonic; advance() does too."""
    clock = FakeClock(start=100.0)
    clock.sleep(2.5)
    clock.advance(1)
    assert clock.sleeps == [2.5]
    assert clock.time() == 103.5
    assert clock.monotonic() == 3.5


def test_flaky_sink_failures_do_not_pile_up_tracebacks() -> None:
    """Raising its one error 1000 times leaves a traceback of one call, not 1000 (no leak)."""
    sink = FlakySink(1.0)
    caught: list[BaseException] = []
    for _ in range(1000):
        try:
            sink.write(_batch(1))
        except TransientError as exc:
            caught.append(exc)
    assert caught[0] is caught[-1] is sink.error
    depth, tb = 0, caught[-1].__traceback__
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    assert depth <= 2
