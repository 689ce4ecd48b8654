"""RetryPolicy on tenacity, user-supplied Retrying objects, and how a spool waits and gives up."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import tenacity

from spoolkit import Record, RetryPolicy, Spool
from spoolkit.errors import ConfigError, PartialFailure, PermanentError, TransientError
from spoolkit.retry import Clock, SystemClock, to_retrying
from spoolkit.testing import FakeClock, FlakySink
from tests.helpers import spool_factory

make_spool = pytest.fixture(name="make_spool")(spool_factory)


def test_waits_grow_exponentially_up_to_max_wait() -> None:
    """Without jitter the waits are initial_wait * multiplier**n, capped at max_wait."""
    policy = RetryPolicy(initial_wait=1, multiplier=3, max_wait=20, jitter=0)
    assert [policy.wait_for(n) for n in range(1, 6)] == [1, 3, 9, 20, 20]


def test_jitter_stays_within_bounds() -> None:
    """Jitter adds between 0 and `jitter` seconds."""
    policy = RetryPolicy(initial_wait=1, multiplier=1, jitter=0.5)
    rng = random.Random(1)
    waits = [policy.wait_for(1, rng) for _ in range(200)]
    assert all(1 <= w <= 1.5 for w in waits)
    assert len(set(waits)) > 100


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"initial_wait": -1},
        {"max_wait": -1},
        {"jitter": -1},
        {"multiplier": 0.5},
    ],
)
def test_invalid_policies_raise_config_error(options: dict[str, Any]) -> None:
    """Impossible policies are refused at construction."""
    with pytest.raises(ConfigError):
        RetryPolicy(**options)


def test_build_returns_a_tenacity_retrying_that_stops_after_max_attempts() -> None:
    """The built Retrying makes max_attempts calls, sleeping the policy's waits in between."""
    sleeps: list[float] = []
    retrying = RetryPolicy(max_attempts=3, initial_wait=2, jitter=0).build(sleeps.append)
    assert isinstance(retrying, tenacity.Retrying)
    calls = []

    def fail() -> None:
        calls.append(1)
        raise TransientError("down")

    with pytest.raises(tenacity.RetryError):
        retrying(fail)
    assert len(calls) == 3
    assert sleeps == [2, 4]


def test_give_up_on_is_not_retried() -> None:
    """An error listed in give_up_on ends the retries at once (PermanentError by default)."""
    retrying = RetryPolicy().build(lambda s: None)
    calls = []

    def fail() -> None:
        calls.append(1)
        raise PermanentError("bad record")

    with pytest.raises(PermanentError):
        retrying(fail)
    assert len(calls) == 1


def test_retry_on_limits_what_is_retried() -> None:
    """Errors outside retry_on are not retried."""
    retrying = RetryPolicy(retry_on=(TransientError,)).build(lambda s: None)
    with pytest.raises(KeyError):
        retrying(lambda: {}["missing"])


def test_retry_after_is_honoured() -> None:
    """A TransientError's retry_after lengthens the wait."""
    sleeps: list[float] = []
    retrying = RetryPolicy(max_attempts=2, initial_wait=1, jitter=0).build(sleeps.append)
    with pytest.raises(tenacity.RetryError):
        retrying(lambda: (_ for _ in ()).throw(TransientError("busy", retry_after=30)))
    assert sleeps == [30]


def test_to_retrying_copies_a_user_retrying_with_our_sleep() -> None:
    """A user Retrying keeps its stop/wait but sleeps through spoolkit's sleep."""
    sleeps: list[float] = []
    user = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(2), wait=tenacity.wait_fixed(7), reraise=True
    )
    retrying = to_retrying(user, sleeps.append)
    with pytest.raises(tenacity.RetryError):
        retrying(lambda: 1 / 0)
    assert sleeps == [7]
    with pytest.raises(ConfigError):
        to_retrying("twice", sleeps.append)  # type: ignore[arg-type]


def test_system_clock_is_a_clock() -> None:
    """SystemClock and FakeClock satisfy the Clock protocol."""
    assert isinstance(SystemClock(), Clock)
    assert isinstance(FakeClock(), Clock)
    assert abs(SystemClock().time() - time.time()) < 5


def test_spool_waits_the_policy_backoff_on_its_clock(make_spool: Any) -> None:
    """A failing batch is retried after the policy's waits, taken on the injected clock."""
    clock = FakeClock()
    sink = FlakySink(pattern=[True, True, True])
    retry = RetryPolicy(max_attempts=5, initial_wait=1, multiplier=2, jitter=0)
    with make_spool(sink, clock=clock, retry=retry, workers=1) as spool:
        spool.put("x")
        assert spool.flush(10)
    assert clock.sleeps == [1, 2, 4]
    assert [r.attempts for r in sink.records] == [4]


def test_spool_accepts_a_tenacity_retrying(make_spool: Any) -> None:
    """Spool(retry=tenacity.Retrying(...)) uses its stop and wait."""
    clock = FakeClock()
    sink = FlakySink(pattern=[True, True, True])
    retry = tenacity.Retrying(stop=tenacity.stop_after_attempt(2), wait=tenacity.wait_fixed(3))
    with make_spool(sink, clock=clock, retry=retry) as spool:
        spool.put("x")
        assert spool.flush(10)
        [letter] = spool.dead_letters.list()
    assert clock.sleeps == [3]
    assert letter.attempts == 2


def test_dead_lettered_after_the_last_attempt(make_spool: Any) -> None:
    """After max_attempts failures the batch is dead-lettered with the last error."""
    sink = FlakySink(1.0, error=TransientError("still down"))
    retry = RetryPolicy(max_attempts=3, jitter=0)
    with make_spool(sink, clock=FakeClock(), retry=retry, batch_size=10) as spool:
        spool.put_many(["a", "b"])
        assert spool.flush(10)
        letters = spool.dead_letters.list()
        stats = spool.stats()
    assert sorted(d.record.item for d in letters) == ["a", "b"]
    assert {d.attempts for d in letters} == {3}
    assert {d.error.message for d in letters} == {"still down"}
    assert stats.dead_lettered == 2
    assert stats.delivered == 0
    assert sink.calls == 3


def test_permanent_error_dead_letters_at_once(make_spool: Any) -> None:
    """PermanentError skips the retries."""
    clock = FakeClock()
    sink = FlakySink(pattern=[PermanentError("malformed")])
    with make_spool(sink, clock=clock) as spool:
        spool.put("x")
        assert spool.flush(10)
        assert len(spool.dead_letters) == 1
    assert clock.sleeps == []
    assert sink.calls == 1


def test_partial_failure_retries_only_the_failed_records(make_spool: Any) -> None:
    """PartialFailure acknowledges the rest of the batch and retries only what it names."""
    calls: list[list[Any]] = []

    def write(batch: Sequence[Record]) -> None:
        calls.append([r.item for r in batch])
        if len(calls) == 1:
            raise PartialFailure([r for r in batch if r.item % 2])

    with make_spool(write, clock=FakeClock(), batch_size=10, workers=1) as spool:
        spool.put_many(range(6))
        assert spool.flush(10)
        stats = spool.stats()
    assert calls == [[0, 1, 2, 3, 4, 5], [1, 3, 5]]
    assert stats.delivered == 6
    assert stats.retried == 3


def test_partial_failure_naming_ids_as_strings(make_spool: Any) -> None:
    """PartialFailure accepts record ids as well as records."""
    calls: list[list[Any]] = []

    def write(batch: Sequence[Record]) -> None:
        calls.append([r.item for r in batch])
        if len(calls) == 1:
            raise PartialFailure([batch[0].id])

    with make_spool(write, clock=FakeClock(), batch_size=10, workers=1) as spool:
        spool.put_many(["a", "b"])
        assert spool.flush(10)
    assert calls == [["a", "b"], ["a"]]


def test_stop_never_waits_out_a_backoff(make_spool: Any, tmp_path: Path) -> None:
    """stop() cuts an hour-long backoff short; the batch stays in the spool, not dead-lettered."""
    failed = threading.Event()

    def write(batch: Sequence[Record]) -> None:
        failed.set()
        raise TransientError("down")

    retry = RetryPolicy(initial_wait=3600, jitter=0)
    spool = make_spool(write, retry=retry, workers=1)
    spool.start()
    spool.put("x")
    assert failed.wait(10)
    started = time.monotonic()
    spool.stop(drain=False, timeout=30)
    assert time.monotonic() - started < 10
    assert spool.stats().dead_lettered == 0
    again = make_spool(lambda batch: None)
    assert again.stats().backlog == 1
    assert len(again.dead_letters) == 0


def test_a_partial_failure_naming_no_record_of_the_batch_fails_the_whole_batch(
    tmp_path: Path,
) -> None:
    """A sink raising PartialFailure with ids not in its batch (a sink bug) does not get the
    batch acknowledged silently: it counts as an error and the batch is retried."""
    calls: list[int] = []

    def sink(batch: Sequence[Record]) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise PartialFailure(["not-an-id-of-this-batch"])

    with Spool(tmp_path, sink, batch_interval=0, clock=FakeClock()) as spool:
        spool.put("x")
        assert spool.flush(30)
        stats = spool.stats()
    assert calls == [1, 1]
    assert stats.delivered == 1
    assert stats.retried == 1
    assert stats.last_error is not None
