"""The dead-letter store: what it keeps, list/requeue/purge/len, persistence, crash safety."""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from spoolkit import DeadLetter, Record, RetryPolicy
from spoolkit.deadletter import DeadEntry, DeadError, DeadLetters
from spoolkit.errors import PermanentError, TransientError
from spoolkit.testing import FakeClock, FlakySink, MemorySink
from tests.helpers import EventLog, event_log_factory, spool_factory

make_spool = pytest.fixture(name="make_spool")(spool_factory)
event_log = pytest.fixture(name="event_log")(event_log_factory)


class Rejecting:
    """A sink that refuses items listed in `bad` permanently and keeps the others."""

    def __init__(self, bad: set[Any]) -> None:
        self.bad = bad
        self.inner = MemorySink()

    def write(self, batch: Sequence[Record]) -> None:
        """Reject the whole batch if it holds a bad item."""
        if any(r.item in self.bad for r in batch):
            raise PermanentError(f"rejected {[r.item for r in batch]}")
        self.inner.write(batch)


def _raise_value_error() -> None:
    raise ValueError("broken payload")


def test_dead_letter_keeps_record_error_attempts_and_times(make_spool: Any) -> None:
    """A dead letter has the record, the error type/message/traceback, attempts, times."""
    clock = FakeClock(start=1000.0)

    def write(batch: Sequence[Record]) -> None:
        _raise_value_error()

    retry = RetryPolicy(max_attempts=3, initial_wait=5, multiplier=1, jitter=0)
    with make_spool(write, clock=clock, retry=retry) as spool:
        spool.put({"k": 1})
        assert spool.flush(10)
        [letter] = spool.dead_letters.list()
    assert isinstance(letter, DeadLetter)
    assert letter.record.item == {"k": 1}
    assert letter.id == letter.record.id
    assert letter.error.type == "ValueError"
    assert letter.error.message == "broken payload"
    assert "_raise_value_error" in letter.error.traceback
    assert letter.attempts == 3
    assert (letter.first_attempt_at, letter.last_attempt_at) == (1000.0, 1010.0)


def test_len_list_and_purge(make_spool: Any) -> None:
    """len() counts, purge(ids) deletes those, purge() deletes all."""
    with make_spool(Rejecting({1, 2, 3}), batch_size=1, workers=1) as spool:
        spool.put_many([1, 2, 3, 4])
        assert spool.flush(10)
        dead = spool.dead_letters
        assert len(dead) == dead.len() == 3
        ids = [d.id for d in dead.list()]
        assert [d.record.item for d in dead.list()] == [1, 2, 3]
        assert dead.purge([ids[1]]) == 1
        assert [d.record.item for d in dead.list()] == [1, 3]
        assert dead.purge() == 2
        assert len(dead) == 0
        assert "len=0" in repr(dead)


def test_requeue_keeps_the_record_id(make_spool: Any) -> None:
    """requeue(ids) puts records back under their old ids; the sink then sees them."""
    sink = Rejecting({"a", "b"})
    with make_spool(sink, batch_size=1, workers=1) as spool:
        spool.put_many(["a", "b", "c"])
        assert spool.flush(10)
        letters = {d.record.item: d.id for d in spool.dead_letters.list()}
        sink.bad.clear()
        assert spool.dead_letters.requeue([letters["b"]]) == 1
        assert spool.flush(10)
        assert [d.record.item for d in spool.dead_letters.list()] == ["a"]
        assert spool.dead_letters.requeue() == 1
        assert spool.flush(10)
        assert len(spool.dead_letters) == 0
    by_item = {r.item: r.id for r in sink.inner.records}
    assert by_item["a"] == letters["a"]
    assert by_item["b"] == letters["b"]
    assert sorted(by_item) == ["a", "b", "c"]


def test_dead_letters_survive_a_restart(make_spool: Any) -> None:
    """Dead letters are on disk: a new spool on the path lists them."""
    with make_spool(Rejecting({"x"})) as spool:
        spool.put("x")
        assert spool.flush(10)
    again = make_spool(MemorySink())
    [letter] = again.dead_letters.list()
    assert letter.record.item == "x"
    assert letter.error.type == "spoolkit.errors.PermanentError"
    assert os.path.isdir(os.path.join(again.path, "dead"))


def test_dead_letter_is_stored_before_the_record_is_acknowledged(
    make_spool: Any, event_log: EventLog
) -> None:
    """If storing the dead letter fails, the record is not acknowledged: nothing is lost."""
    spool = make_spool(Rejecting({"x"}), workers=1)

    def broken_add(entries: Sequence[DeadEntry]) -> None:
        raise OSError(28, "No space left on device")

    spool.dead_letters.add = broken_add  # type: ignore[method-assign]
    spool.start()
    spool.put("x")
    assert event_log.wait_for("worker_crashed")
    assert spool.stats().backlog == 1
    assert spool.stats().worker_restarts >= 1
    assert "No space left" in event_log.named("worker_crashed")[0]["error"]
    assert spool.stop(drain=False) is True
    assert make_spool(MemorySink()).stats().backlog == 1


def test_requeue_interrupted_half_way_loses_nothing(tmp_path: Path) -> None:
    """A requeue that fails after one record leaves the others in the dead letters."""
    restored: list[str] = []

    def restore(payload: bytes, record_id: str, enqueued_at: float) -> None:
        if restored:
            raise OSError("killed")
        restored.append(record_id)

    dead = DeadLetters(tmp_path / "dead", lambda b: b, restore)
    err = DeadError("E", "m", "")
    dead.add([DeadEntry(f"u-{i}", b"p%d" % i, 1.0, err, 1, 1.0, 2.0) for i in range(3)])
    with pytest.raises(OSError, match="killed"):
        dead.requeue()
    assert restored == ["u-0"]
    assert [d.id for d in dead.list()] == ["u-1", "u-2"]
    dead.close()
    reopened = DeadLetters(tmp_path / "dead", lambda b: b, restore)
    assert len(reopened) == 2
    reopened.close()


def test_an_undecodable_dead_letter_is_left_out_of_list_counted_and_kept(
    tmp_path: Path, event_log: EventLog
) -> None:
    """list() skips an entry whose item cannot be decoded (logging and counting it) instead
    of raising for every entry; requeue and purge still reach it by id."""
    restored: list[str] = []
    dead = DeadLetters(
        tmp_path / "dead", pickle.loads, lambda payload, rid, t: restored.append(rid)
    )
    err = DeadError("E", "m", "")
    payloads = [pickle.dumps("a"), b"\x80\x05not a pickle", pickle.dumps("c")]
    dead.add([DeadEntry(f"u-{i}", p, 1.0, err, 1, 1.0, 2.0) for i, p in enumerate(payloads)])
    assert [d.record.item for d in dead.list()] == ["a", "c"]
    assert dead.undecodable == 1
    assert [e["record_id"] for e in event_log.named("dead_letter_undecodable")] == ["u-1"]
    assert len(dead) == 3
    assert dead.requeue(["u-1"]) == 1
    assert restored == ["u-1"]
    assert [d.id for d in dead.list()] == ["u-0", "u-2"]
    assert dead.undecodable == 0
    dead.close()


def test_retry_exhaustion_and_permanent_errors_are_never_dropped(make_spool: Any) -> None:
    """Every record either reaches the sink or the dead letters."""
    sink = FlakySink(0.5, seed=9, error=TransientError("flaky"))
    retry = RetryPolicy(max_attempts=2, jitter=0)
    with make_spool(sink, clock=FakeClock(), retry=retry, batch_size=3) as spool:
        spool.put_many(range(300))
        assert spool.flush(20)
        dead = [d.record.item for d in spool.dead_letters.list()]
        stats = spool.stats()
    delivered = [r.item for r in sink.records]
    assert dead
    assert sorted(delivered + dead) == list(range(300))
    assert stats.delivered + stats.dead_lettered == 300
