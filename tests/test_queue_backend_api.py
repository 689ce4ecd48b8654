"""The methods a Queue offers the layers above it (a backend, the dead letters)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from queue import Full

import pytest

from spoolkit import Queue
from spoolkit.errors import ClosedError, SerializationError
from spoolkit.queue.opening import TAKEN_OVER
from spoolkit.serializers import JsonSerializer


def test_put_payload_returns_the_sequence_number_of_the_record(tmp_path: Path) -> None:
    """put_payload stores what encode made and returns the seq the delivery carries."""
    with Queue(tmp_path) as q:
        first = q.put_payload(q.encode("a"))
        second = q.put_payload(q.encode("b"), durable=True)
        assert second == first + 1
        batch = q.get_batch(2, 0)
        assert [(d.seq, d.item) for d in batch] == [(first, "a"), (second, "b")]
        assert batch[0].id == f"{q.uid}-{first}"


def test_put_payload_waits_for_room_as_put_does(tmp_path: Path) -> None:
    """On a full queue put_payload raises Full without blocking, or after its timeout."""
    with Queue(tmp_path, maxsize=1) as q:
        q.put_payload(q.encode(1))
        with pytest.raises(Full):
            q.put_payload(q.encode(2), False)
        with pytest.raises(Full):
            q.put_payload(q.encode(2), True, 0.01)
        assert q.qsize() == 1


def test_encode_raises_a_serialization_error_and_decode_inverts_it(tmp_path: Path) -> None:
    """encode refuses what the serializer cannot store with the typed error."""
    with Queue(tmp_path, serializer="json") as q:
        assert isinstance(q.serializer, JsonSerializer)
        assert q.decode(q.encode({"a": [1]})) == {"a": [1]}
        with pytest.raises(SerializationError):
            q.encode(object())


def test_restore_keeps_the_id_and_time_and_is_not_a_put(tmp_path: Path) -> None:
    """restore stores a record under its old seq and enqueued_at, not counted in puts."""
    with Queue(tmp_path) as q:
        q.put("x")
        [d] = q.get_batch(1, 0)
        q.ack(d)
        assert q.puts == 1
        q.restore(q.encode("x again"), d.seq, 123.0)
        assert q.puts == 1
        [again] = q.get_batch(1, 0)
        assert (again.seq, again.enqueued_at, again.item) == (d.seq, 123.0, "x again")


def test_restore_ignores_the_bounds(tmp_path: Path) -> None:
    """A dead-letter requeue goes in even when the queue is full."""
    with Queue(tmp_path, maxsize=1) as q:
        q.put(1)
        q.restore(q.encode(0), 7, 1.0)
        assert q.qsize() == 2


def test_puts_counts_the_records_stored_since_opened(tmp_path: Path) -> None:
    """puts counts put, put_many and put_payload of this instance, not earlier ones."""
    with Queue(tmp_path) as q:
        q.put(1)
    with Queue(tmp_path) as q:
        assert q.puts == 0
        q.put(2)
        q.put_many([3, 4])
        q.put_payload(q.encode(5))
        assert q.puts == 4


def test_wait_for_records_takes_nothing(tmp_path: Path) -> None:
    """wait_for_records returns True once a record waits, and leaves it waiting."""
    with Queue(tmp_path) as q:
        assert q.wait_for_records(0) is False
        assert q.wait_for_records(0.01) is False
        threading.Timer(0.05, q.put, ("late",)).start()
        assert q.wait_for_records(10) is True
        assert q.qsize() == 1
        with pytest.raises(ValueError, match="non-negative"):
            q.wait_for_records(-1)


def test_a_put_wakes_a_getter_waiting_in_get_batch(tmp_path: Path) -> None:
    """The queue counts its waiting getters itself: a put wakes the one waiting."""
    with Queue(tmp_path) as q:
        got: list[object] = []
        getter = threading.Thread(target=lambda: got.extend(q.get_batch(1, 30)))
        getter.start()
        deadline = time.monotonic() + 10
        while not q._waits.getters and time.monotonic() < deadline:
            time.sleep(0.001)
        started = time.monotonic()
        q.put("wake")
        getter.join(10)
        assert [d.item for d in got] == ["wake"]  # type: ignore[attr-defined]
        assert time.monotonic() - started < 5
        assert q._waits.getters == 0


def test_wait_for_records_raises_closed_error_when_closed_meanwhile(tmp_path: Path) -> None:
    """Closing the queue wakes a waiter with ClosedError."""
    q = Queue(tmp_path)
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            q.wait_for_records(30)
        except ClosedError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    q.close()
    waiter.join(10)
    assert len(errors) == 1


def test_closed_reason_says_why(tmp_path: Path) -> None:
    """closed_reason is "" while open, "closed" after close, TAKEN_OVER after a takeover."""
    q = Queue(tmp_path)
    assert q.closed_reason == ""
    newer = Queue(tmp_path)
    assert q.closed
    assert q.closed_reason == TAKEN_OVER
    newer.close()
    assert newer.closed_reason == "closed"


def test_fsync_says_the_mode(tmp_path: Path) -> None:
    """fsync is the mode the queue was opened with."""
    with Queue(tmp_path, fsync="always") as q:
        assert q.fsync == "always"


def test_leave_close_to_owner_keeps_the_exit_hook_away(tmp_path: Path) -> None:
    """After leave_close_to_owner the queue's finalizer does not run at interpreter exit."""
    with Queue(tmp_path) as q:
        assert q._finalizer.atexit is True
        q.leave_close_to_owner()
        assert q._finalizer.atexit is False
        q.put(1)
    assert q.closed


def test_putter_has_puts_outcomes(tmp_path: Path) -> None:
    """putter(block, timeout) stores as put does, raises Full on a full queue without
    blocking, and SerializationError for an item the serializer refuses (nothing stored)."""
    with Queue(tmp_path, maxsize=2, serializer="json") as q:
        put = q.putter()
        put({"n": 1})
        with pytest.raises(SerializationError):
            put({"n": object()})
        put({"n": 2})
        with pytest.raises(Full):
            q.putter(block=False)({"n": 3})
        assert [d.item for d in q.get_batch(5, 0)] == [{"n": 1}, {"n": 2}]
