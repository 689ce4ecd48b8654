"""Explicit acknowledgement: get_batch / ack / nack / task_done and redelivery."""

from __future__ import annotations

import os
import pickle
import queue
import threading
from pathlib import Path
from typing import Any

import pytest

from spoolkit import Queue
from spoolkit.errors import ClosedError
from spoolkit.queue import store


def test_get_batch_returns_deliveries_with_ids_items_and_times(tmp_path: Path) -> None:
    """get_batch hands out Delivery objects carrying id, item and enqueued_at."""
    with Queue(tmp_path) as q:
        q.put_many(["a", "b", "c"])
        batch = q.get_batch(2)
        assert [d.item for d in batch] == ["a", "b"]
        assert batch[0].id != batch[1].id
        assert [d.id for d in batch] == [f"{q.uid}-{d.seq}" for d in batch]
        assert all(isinstance(d.seq, int) for d in batch)
        assert all(d.enqueued_at > 0 for d in batch)
        assert q.qsize() == 1
        assert q.unfinished_tasks == 3


def test_get_batch_timeout_returns_empty_list(tmp_path: Path) -> None:
    """get_batch on an empty queue returns [] after its timeout (0: at once)."""
    with Queue(tmp_path) as q:
        assert q.get_batch(10, timeout=0) == []
        assert q.get_batch(10, timeout=0.01) == []


def test_unacked_records_are_delivered_again_after_reopen(tmp_path: Path) -> None:
    """Records handed out but not acknowledged come back after a reopen, with the same ids."""
    q = Queue(tmp_path)
    q.put_many(range(10))
    first = q.get_batch(5)
    q.ack(*first[:2])
    ids = [d.id for d in first[2:]]
    q.close()
    q = Queue(tmp_path)
    again = q.get_batch(100)
    assert [d.item for d in again] == [2, 3, 4, 5, 6, 7, 8, 9]
    assert [d.id for d in again[:3]] == ids
    q.close()


def test_pqueue_bug_get_a_get_b_task_done_crash_keeps_b(tmp_path: Path) -> None:
    """get A, get B, task_done, crash: B is delivered again (pqueue loses it)."""
    q = Queue(tmp_path)
    q.put("A")
    q.put("B")
    assert q.get() == "A"
    assert q.get() == "B"
    q.task_done()
    del q
    q = Queue(tmp_path)
    assert q.get_nowait() == "B"
    q.close()


def test_pqueue_bug_get_x_put_z_crash_keeps_x(tmp_path: Path) -> None:
    """get X, put Z, crash: X is delivered again (pqueue loses it)."""
    q = Queue(tmp_path)
    q.put("X")
    assert q.get() == "X"
    q.put("Z")
    del q
    q = Queue(tmp_path)
    assert [q.get_nowait(), q.get_nowait()] == ["X", "Z"]
    q.close()


def test_acked_records_are_not_delivered_again(tmp_path: Path) -> None:
    """Records acknowledged (in or out of order) are not delivered after a reopen."""
    q = Queue(tmp_path, chunksize=3)
    q.put_many(range(9))
    batch = q.get_batch(9)
    q.ack(batch[0], batch[1], batch[5], batch[8])
    q.close()
    q = Queue(tmp_path, chunksize=3)
    assert [d.item for d in q.get_batch(100)] == [2, 3, 4, 6, 7]
    q.close()


def test_nack_hands_records_out_again_before_newer_ones(tmp_path: Path) -> None:
    """nack puts records back ahead of records never handed out."""
    with Queue(tmp_path) as q:
        q.put_many(range(6))
        first = q.get_batch(3)
        q.nack(first[2], first[0])
        assert q.qsize() == 5
        assert [d.item for d in q.get_batch(10)] == [0, 2, 3, 4, 5]


def test_double_ack_is_harmless(tmp_path: Path) -> None:
    """Acknowledging the same delivery twice changes nothing the second time."""
    with Queue(tmp_path) as q:
        q.put_many([1, 2])
        (d,) = q.get_batch(1)
        q.ack(d)
        q.ack(d)
        assert q.unfinished_tasks == 1


def test_task_done_acks_the_oldest_item_of_the_calling_thread(tmp_path: Path) -> None:
    """In a thread pool, each thread's task_done acknowledges what that thread took."""
    q = Queue(tmp_path)
    q.put_many(["t1", "t2"])
    took_t1 = threading.Event()
    main_done = threading.Event()

    def other() -> None:
        assert q.get() == "t1"
        took_t1.set()
        main_done.wait(10)  # hold "t1" unacknowledged while the main thread acks its own

    t = threading.Thread(target=other)
    t.start()
    took_t1.wait(10)
    assert q.get() == "t2"
    q.task_done()  # must acknowledge t2 (ours), not t1 (the other thread's, older)
    main_done.set()
    t.join()
    q.close()
    q = Queue(tmp_path)
    assert q.get_nowait() == "t1"
    assert q.qsize() == 0
    q.close()


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_consumed_chunks_are_deleted_once_fully_acked(tmp_path: Path, fsync: str) -> None:
    """A chunk file is removed once every record in it is acknowledged (at the next sync)."""

    def chunks() -> list[str]:
        return sorted(n for n in os.listdir(tmp_path) if n.startswith("q"))

    with Queue(tmp_path, chunksize=4, fsync=fsync) as q:
        q.put_many(range(12))
        batch = q.get_batch(12)
        q.ack(*batch[:3])
        q.sync()
        assert chunks() == ["q00000", "q00001", "q00002"]
        q.ack(batch[3])
        q.sync()
        assert chunks() == ["q00001", "q00002"]
        q.ack(*batch[4:8])
        q.sync()
        assert chunks() == ["q00002"]


def test_second_instance_in_process_takes_over(tmp_path: Path) -> None:
    """A second Queue on the same path closes the first; its deliveries come back."""
    q1 = Queue(tmp_path)
    q1.put_many(["a", "b"])
    (d,) = q1.get_batch(1)
    q2 = Queue(tmp_path)
    with pytest.raises(ClosedError, match="taken over"):
        q1.put("c")
    with pytest.raises(ClosedError):
        q2.ack(d)
    assert [x.item for x in q2.get_batch(5)] == ["a", "b"]
    q2.close()


def test_calls_after_close_raise_closed_error_but_sizes_still_answer(tmp_path: Path) -> None:
    """After close, put/get/ack/sync/join raise ClosedError; qsize/empty/full still answer."""
    q = Queue(tmp_path)
    q.put_many(["a", "b"])
    (d,) = q.get_batch(1)
    q.close()
    for call in (lambda: q.put("c"), q.get_nowait, lambda: q.ack(d), q.sync, q.join):
        with pytest.raises(ClosedError):
            call()
    assert (q.qsize(), q.empty(), q.full()) == (1, False, False)


def test_closing_wakes_blocked_getters(tmp_path: Path) -> None:
    """A thread blocked in get() gets ClosedError when the queue is closed."""
    q = Queue(tmp_path)
    errors: list[BaseException] = []
    waiting = threading.Event()

    def getter() -> None:
        waiting.set()
        try:
            q.get()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=getter)
    t.start()
    waiting.wait(10)
    while not q._store.not_empty._waiters:  # type: ignore[attr-defined]
        threading.Event().wait(0.001)
    q.close()
    t.join(10)
    assert len(errors) == 1
    assert isinstance(errors[0], ClosedError)


def test_record_ids_are_unique_across_reopen_even_when_all_consumed(tmp_path: Path) -> None:
    """Record ids never repeat in a directory, even after everything was consumed."""
    q = Queue(tmp_path, chunksize=2)
    q.put_many(range(5))
    first_ids = [d.id for d in q.get_batch(5)]
    q.ack(*q._outstanding.values())
    q.close()
    q = Queue(tmp_path, chunksize=2)
    q.put_many(range(5))
    second_ids = [d.id for d in q.get_batch(5)]
    q.close()
    assert not set(first_ids) & set(second_ids)


def test_late_ack_of_a_nacked_delivery_does_not_ack_its_redelivery(tmp_path: Path) -> None:
    """Acking a stale delivery (nacked, then handed out again) leaves the new copy pending."""
    with Queue(tmp_path) as q:
        q.put("x")
        (d1,) = q.get_batch(1, timeout=0)
        q.nack(d1)
        (d2,) = q.get_batch(1, timeout=0)
        q.ack(d1)
        assert q.unfinished_tasks == 1
        q.nack(d2)
        assert q.qsize() == 1


def test_acknowledged_chunk_files_are_reused_without_losing_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks freed by acks become new chunks: few files are created, every record in order."""
    from spoolkit.queue import chunk

    created: list[int] = []
    real = chunk.Chunk.create.__func__  # type: ignore[attr-defined]

    def counting(cls: type, directory: str, header: object, initial: int) -> object:
        created.append(1)
        return real(cls, directory, header, initial)

    monkeypatch.setattr(chunk.Chunk, "create", classmethod(counting))
    with Queue(tmp_path, chunksize=3, fsync="never") as q:
        got: list[int] = []
        for i in range(0, 60, 6):
            q.put_many(range(i, i + 6))
            batch = q.get_batch(6)
            got += [d.item for d in batch]
            q.ack(*batch)
            assert sorted(n for n in os.listdir(tmp_path) if n.startswith("q")) == [
                f"q{(i + 6) // 3 - 1:05d}"
            ]
        assert got == list(range(60))
    assert len(created) < 8  # 20 chunks were used, most of them recycled files
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".free-")]


def test_leftover_free_files_are_removed_on_open(tmp_path: Path) -> None:
    """A retired chunk file left by a crash (.free-N) is removed when the queue opens."""
    with Queue(tmp_path) as q:
        q.put("x")
    (tmp_path / ".free-7").write_bytes(b"\0" * 4096)
    with Queue(tmp_path) as q:
        assert q.get_nowait() == "x"
    assert not (tmp_path / ".free-7").exists()


class _RefusesBad:
    """Pickle, except that loads refuses the item ``"bad"`` (as a tampered record would be)."""

    name = "refuses-bad"

    def dumps(self, obj: object) -> bytes:
        return pickle.dumps(obj)

    def loads(self, data: bytes) -> object:
        item = pickle.loads(data)
        if item == "bad":
            raise ValueError("cannot read this one")
        return item


def test_get_hands_out_redeliveries_first_and_skips_undecodable_records(tmp_path: Path) -> None:
    """get() follows get_batch's order (handed-back records first, then in order) and skips a
    record it cannot decode, counting it, instead of returning or raising."""
    with Queue(tmp_path, serializer=_RefusesBad()) as q:
        q.put_many(["a", "bad", "b", "c"])
        taken = q.get_batch(1)
        assert q.get() == "b"  # "bad" skipped
        q.nack(*taken)
        assert [q.get(), q.get()] == ["a", "c"]
        assert q.undecodable == 1
        with pytest.raises(queue.Empty):
            q.get_nowait()


def test_get_waits_when_every_waiting_record_is_undecodable(tmp_path: Path) -> None:
    """With only undecodable records waiting, get() (no timeout) skips them and then waits
    for a new record, as on an empty queue, instead of raising Empty."""
    with Queue(tmp_path, serializer=_RefusesBad()) as q:
        q.put("bad")
        got: list[Any] = []
        getter = threading.Thread(target=lambda: got.append(q.get()))
        getter.start()
        waiting = threading.Event()
        for _ in range(2000):  # bounded: until the getter waits for a record, checked each 5 ms
            with q._lock:
                if q._not_empty._waiters:  # type: ignore[attr-defined]
                    break
            waiting.wait(0.005)
        assert getter.is_alive()
        assert got == []
        q.put("good")
        getter.join(10)
        assert got == ["good"]
        assert q.undecodable == 1


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_gets_without_task_done_keep_the_open_files_bounded(tmp_path: Path) -> None:
    """pqueue-style get() without task_done() over 400 chunks keeps few files open; task_done
    afterwards acknowledges every record (chunks closed early are opened again), and the queue
    ends empty with its chunk files gone."""
    with Queue(tmp_path, serializer="raw", chunksize=10) as q:
        q.put_many([b"%d" % i for i in range(4000)])
        before = _open_fds()
        got = [q.get() for _ in range(4000)]
        assert got == [b"%d" % i for i in range(4000)]
        assert _open_fds() - before <= 2 * (store.OPEN_HANDED_OUT + 2)  # a map dups its file's
        q.put(b"still writable")
        for _ in range(4000):
            q.task_done()
        assert _open_fds() - before <= 2 * (store.OPEN_HANDED_OUT + 2)  # a map dups its file's
        assert q.get() == b"still writable"
        q.task_done()
        assert q.unfinished_tasks == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("q")) <= ["q00400"]


def test_records_of_closed_chunks_are_redelivered_and_acked(tmp_path: Path) -> None:
    """Deliveries nacked from chunks closed to bound open files come back, in order, and ack."""
    with Queue(tmp_path, serializer="raw", chunksize=5) as q:
        q.put_many([b"%d" % i for i in range(1000)])
        batch = q.get_batch(1000)
        q.nack(*batch[:3])  # from the first chunks: long closed by now
        again = q.get_batch(3)
        assert [d.item for d in again] == [b"0", b"1", b"2"]
        q.ack(*again, *batch[3:])
        assert q.unfinished_tasks == 0
    with Queue(tmp_path, serializer="raw", chunksize=5) as q:
        assert q.get_batch(1, timeout=0) == []  # every ack reached the disk


def test_a_delivery_id_is_the_record_id_a_sink_and_the_dead_letters_see(tmp_path: Path) -> None:
    """One id form: Delivery.id of a Queue equals the Record.id a Spool's sink gets for the
    same record, and the id a dead letter keeps."""
    from spoolkit import Spool
    from spoolkit.testing import MemorySink

    with Queue(tmp_path / "q", serializer="raw") as q:
        q.put(b"x")
        delivery = q.get_batch(1)[0]
        assert delivery.id.startswith(q.uid + "-")
        assert repr(delivery).startswith(f"Delivery(id={delivery.id!r}")
    sink = MemorySink()
    with Spool(tmp_path / "s", sink, serializer="raw") as spool:
        spool.put(b"y")
        assert spool.flush(30)
    with Queue(tmp_path / "s", serializer="raw") as lane:
        lane.put(b"z")
        assert lane.get_batch(1)[0].id.split("-")[0] == sink.records[0].id.split("-")[0]
