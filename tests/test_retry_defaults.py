"""Retry defaults that keep logs: an outage of any length dead-letters nothing, other errors are
tried UNKNOWN_ATTEMPTS times, PermanentError once; max_attempts and max_age opt in to giving up.
Every wait is on a FakeClock: no real sleep."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from spoolkit import RetryPolicy, Spool
from spoolkit.errors import PermanentError, TransientError
from spoolkit.retry import UNKNOWN_ATTEMPTS
from spoolkit.testing import FakeClock, MemorySink
from spoolkit.typing import Record

DEFAULT = RetryPolicy()
MAX_BACKOFF = DEFAULT.max_wait + DEFAULT.jitter  # the longest one wait may be by default


class Outage:
    """A sink that raises ``error`` until ``seconds`` of the clock's time have passed, then
    keeps what it is given. ``seconds=None``: down for ever."""

    def __init__(
        self, clock: FakeClock, seconds: float | None, error: Exception | None = None
    ) -> None:
        self.clock = clock
        self.until = float("inf") if seconds is None else clock.time() + seconds
        self.error = error if error is not None else TransientError("collector down")
        self.calls = 0
        self.inner = MemorySink()

    def write(self, batch: Sequence[Record]) -> None:
        """Fail while the outage lasts, else deliver."""
        self.calls += 1
        if self.clock.time() < self.until:
            raise self.error.with_traceback(None)
        self.inner.write(batch)


@pytest.fixture(name="run")
def fixture_run(tmp_path: Path) -> Iterator[Callable[..., Spool]]:
    """``run(sink, clock, items, **options)``: a started one-worker Spool on ``clock`` that was
    given ``items``, flushed; stopped after the test."""
    made: list[Spool] = []

    def run(sink: Any, clock: FakeClock, items: Sequence[Any], **options: Any) -> Spool:
        spool = Spool(tmp_path / "spool", sink, clock=clock, workers=1, batch_interval=0, **options)
        made.append(spool)
        spool.put_many(items)
        spool.start()
        assert spool.flush(60), "the spool did not settle every record"
        return spool

    yield run
    for spool in made:
        spool.stop(drain=False, timeout=5)


def test_the_default_policy_gives_up_on_no_passing_error() -> None:
    """RetryPolicy() sets no attempt limit and no age limit, and caps its waits at 30 s."""
    assert DEFAULT.max_attempts is None
    assert DEFAULT.max_age is None
    assert DEFAULT.max_wait == 30.0


@pytest.mark.parametrize("outage", [60.0, 3 * 3600.0, 24 * 3600.0], ids=["60 s", "3 h", "24 h"])
def test_an_outage_dead_letters_nothing_with_the_default_policy(
    run: Callable[..., Spool], outage: float
) -> None:
    """A sink down (TransientError) for 60 s, or for hours, of fake time with the default
    RetryPolicy: nothing is dead-lettered, every record is delivered, in order, once it ends,
    and no wait was longer than max_wait (+ jitter)."""
    clock = FakeClock()
    sink = Outage(clock, outage)
    spool = run(sink, clock, range(250), batch_size=100)
    stats = spool.stats()
    assert sink.inner.items == list(range(250))
    assert len(spool.dead_letters) == 0
    assert stats.dead_lettered == 0
    assert stats.delivered == 250
    assert sum(clock.sleeps) >= outage
    assert sink.calls > 5  # it did fail, again and again, before the end of the outage
    assert max(clock.sleeps) <= MAX_BACKOFF
    assert stats.retried > 0


def test_backoff_waits_grow_to_max_wait_and_stay_there(run: Callable[..., Spool]) -> None:
    """Over a long outage the waits double from initial_wait, reach max_wait, and never pass it
    (max_wait=5, no jitter: 1, 2, 4, then 5 s every time)."""
    clock = FakeClock()
    sink = Outage(clock, 600)
    retry = RetryPolicy(initial_wait=1, multiplier=2, max_wait=5, jitter=0)
    run(sink, clock, ["x"], retry=retry)
    assert clock.sleeps[:4] == [1, 2, 4, 5]
    assert set(clock.sleeps[3:]) == {5}
    assert len(clock.sleeps) >= 600 / 5
    assert sink.inner.items == ["x"]


def test_default_waits_are_capped_at_max_wait(run: Callable[..., Spool]) -> None:
    """With the default policy the waits of a long outage reach max_wait and stay at most
    max_wait + jitter."""
    clock = FakeClock()
    run(Outage(clock, 2 * 3600), clock, ["x"])
    late = clock.sleeps[10:]
    assert late
    assert all(DEFAULT.max_wait <= s <= MAX_BACKOFF for s in late)


@pytest.mark.parametrize("attempt", [1, 10, 1000, 1025, 5000, 10**6])
def test_waits_stay_capped_at_any_attempt_number(attempt: int) -> None:
    """wait_for(n) is at most max_wait + jitter for any attempt number, the thousandth and
    the millionth included (an outage of days makes that many attempts)."""
    assert 0 <= DEFAULT.wait_for(attempt) <= MAX_BACKOFF
    expected = min(DEFAULT.max_wait, 0.5 * 2.0 ** min(attempt - 1, 64))
    assert RetryPolicy(jitter=0).wait_for(attempt) == expected


def test_an_unknown_error_is_tried_unknown_attempts_times_then_dead_lettered(
    run: Callable[..., Spool],
) -> None:
    """An exception that is neither Transient nor Permanent (a bug in a sink) is tried
    UNKNOWN_ATTEMPTS times by default, then the batch is dead-lettered with that error."""
    clock = FakeClock()
    sink = Outage(clock, None, ValueError("a bug in the sink"))
    spool = run(sink, clock, ["a", "b"], batch_size=10)
    letters = spool.dead_letters.list()
    assert UNKNOWN_ATTEMPTS == 5
    assert sink.calls == UNKNOWN_ATTEMPTS
    assert len(clock.sleeps) == UNKNOWN_ATTEMPTS - 1
    assert sorted(d.record.item for d in letters) == ["a", "b"]
    assert {d.attempts for d in letters} == {UNKNOWN_ATTEMPTS}
    assert {d.error.type for d in letters} == {"ValueError"}
    assert spool.stats().dead_lettered == 2


def test_a_permanent_error_is_tried_once(run: Callable[..., Spool]) -> None:
    """PermanentError dead-letters the batch after one attempt, with no wait."""
    clock = FakeClock()
    sink = Outage(clock, None, PermanentError("malformed"))
    spool = run(sink, clock, ["a"])
    [letter] = spool.dead_letters.list()
    assert sink.calls == 1
    assert clock.sleeps == []
    assert letter.attempts == 1


@pytest.mark.parametrize(
    ("error", "max_attempts"),
    [
        (TransientError("down"), 3),
        (ValueError("bug"), 3),
        (ValueError("bug"), UNKNOWN_ATTEMPTS + 3),
    ],
    ids=["transient-3", "unknown-3", "unknown-8"],
)
def test_max_attempts_limits_every_error(
    run: Callable[..., Spool], error: Exception, max_attempts: int
) -> None:
    """An explicit max_attempts is the number of attempts for any error, TransientError
    included (no longer without limit), an unknown error too (more or fewer than 5)."""
    clock = FakeClock()
    sink = Outage(clock, None, error)
    spool = run(sink, clock, ["a"], retry=RetryPolicy(max_attempts=max_attempts))
    [letter] = spool.dead_letters.list()
    assert sink.calls == max_attempts
    assert letter.attempts == max_attempts
    assert sink.inner.records == []


# Records are stamped with the real time.time() when put; the clock starts there too, so that
# "seconds since the record was put" reads the same on both.


def test_max_age_dead_letters_a_batch_once_an_attempt_fails_past_it(
    run: Callable[..., Spool],
) -> None:
    """With max_age=120 and a sink down for good, the batch is retried until an attempt fails
    with its oldest record over 120 s old, then dead-lettered: not before, and not much after
    (one capped wait at most)."""
    clock = FakeClock(start=time.time())
    sink = Outage(clock, None)
    spool = run(sink, clock, ["a", "b"], batch_size=10, retry=RetryPolicy(max_age=120))
    letters = spool.dead_letters.list()
    assert sorted(d.record.item for d in letters) == ["a", "b"]
    oldest = min(d.record.enqueued_at for d in letters)
    for d in letters:
        assert 120 <= d.last_attempt_at - oldest <= 120 + MAX_BACKOFF + 1
    assert sum(clock.sleeps[:-1]) < 120  # the attempt before the last was still young enough
    assert sink.calls == len(clock.sleeps) + 1


def test_max_age_lets_an_old_record_through_when_its_attempt_succeeds(
    run: Callable[..., Spool],
) -> None:
    """max_age only ends retries: a record already 1000 s old under max_age=60 is still
    delivered when its first attempt succeeds."""
    clock = FakeClock(start=time.time())
    sink = Outage(clock, 0)
    clock.advance(1000)  # the clock reads 1000 s after the real time the record is put at
    spool = run(sink, clock, ["old"], retry=RetryPolicy(max_age=60))
    assert sink.inner.items == ["old"]
    assert len(spool.dead_letters) == 0


def test_max_age_gives_up_at_the_first_failure_of_a_record_already_too_old(
    run: Callable[..., Spool],
) -> None:
    """A record already 1000 s old whose first attempt fails is dead-lettered at once, with no
    wait, under max_age=60."""
    clock = FakeClock(start=time.time())
    sink = Outage(clock, None)
    clock.advance(1000)
    spool = run(sink, clock, ["stale"], retry=RetryPolicy(max_age=60))
    [letter] = spool.dead_letters.list()
    assert letter.attempts == 1
    assert sink.calls == 1
    assert clock.sleeps == []
