"""The pqueue behaviours, each as its own test, plus the stdlib queue.Queue API details."""

from __future__ import annotations

import os
import queue
import random
import threading
from pathlib import Path

import pytest

from spoolkit import Empty, Full, Queue


def test_one_item_survives_close_and_reopen(tmp_path: Path) -> None:
    """An item put before close() is there after reopening."""
    q = Queue(tmp_path)
    q.put("var1")
    q.close()
    q = Queue(tmp_path)
    assert q.qsize() == 1
    assert q.get() == "var1"
    q.task_done()
    q.close()


def test_thousand_items_survive_reopen_in_order_then_empty(tmp_path: Path) -> None:
    """1000 items come back in put order after a reopen, then the queue is empty."""
    q = Queue(tmp_path, chunksize=10)
    for i in range(1000):
        q.put(f"var{i}")
    assert q.qsize() == 1000
    del q
    q = Queue(tmp_path, chunksize=10)
    assert q.qsize() == 1000
    for i in range(1000):
        assert q.get() == f"var{i}"
        q.task_done()
    with pytest.raises(Empty):
        q.get_nowait()
    q.close()


def test_chunk_files_are_named_like_pqueue(tmp_path: Path) -> None:
    """Chunk files are q00000, q00001, ... holding chunksize records each."""
    with Queue(tmp_path, chunksize=5) as q:
        for i in range(12):
            q.put(i)
    names = sorted(n for n in os.listdir(tmp_path) if n.startswith("q"))
    assert names == ["q00000", "q00001", "q00002"]


def test_garbage_appended_to_head_chunk_is_discarded(tmp_path: Path) -> None:
    """Garbage appended to the head chunk after a reopen is dropped; new puts work after it."""
    q = Queue(tmp_path)
    for i in range(5):
        q.put(f"var{i}")
    q.close()
    head = sorted(p for p in tmp_path.iterdir() if p.name.startswith("q"))[-1]
    with head.open("ab") as f:
        f.write(b"garbage" * 100)
    q = Queue(tmp_path)
    assert q.recovery.damaged_regions == 1
    q.put("after")
    q.close()
    q = Queue(tmp_path)
    assert [q.get_nowait() for _ in range(6)] == [f"var{i}" for i in range(5)] + ["after"]
    with pytest.raises(Empty):
        q.get_nowait()
    q.close()


def test_torn_last_record_is_discarded_and_earlier_ones_kept(tmp_path: Path) -> None:
    """A partially written last record is dropped; every record before it is kept."""
    with Queue(tmp_path) as q:
        for i in range(10):
            q.put(f"var{i}" * 10)
    head = tmp_path / "q00000"
    data = bytearray(head.read_bytes())
    last = data.rfind(b"SPKR")
    # tear the last frame: its payload is half there
    data[last + 40 :] = bytes(len(data) - last - 40)
    head.write_bytes(bytes(data))
    with Queue(tmp_path) as q:
        assert q.qsize() == 9
        assert [q.get_nowait() for _ in range(9)] == [f"var{i}" * 10 for i in range(9)]
        q.put("next")
        assert q.get_nowait() == "next"


def test_random_interleaved_put_get_keeps_qsize_exact(tmp_path: Path) -> None:
    """Random interleavings of put and get keep qsize() equal to a model's length."""
    rng = random.Random(1234)
    q = Queue(tmp_path, chunksize=7)
    model: list[int] = []
    for step in range(3000):
        if model and rng.random() < 0.45:
            assert q.get_nowait() == model.pop(0)
            q.task_done()
        else:
            q.put(step)
            model.append(step)
        assert q.qsize() == len(model)
        if step % 500 == 0:
            q.close()
            q = Queue(tmp_path, chunksize=7)
            assert q.qsize() == len(model)
    q.close()


def test_one_producer_one_consumer_thread_move_1000_items(tmp_path: Path) -> None:
    """A producer thread and a consumer thread move 1000 items, none lost or repeated."""
    q = Queue(tmp_path, chunksize=10)
    got: list[int] = []

    def consume() -> None:
        for _ in range(1000):
            got.append(q.get(timeout=30))
            q.task_done()

    def produce() -> None:
        for i in range(1000):
            q.put(i)

    threads = [threading.Thread(target=consume), threading.Thread(target=produce)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q.join()
    assert got == list(range(1000))
    q.close()


def test_negative_timeouts_raise_value_error(tmp_path: Path) -> None:
    """get and put with a negative timeout raise ValueError, as the stdlib does."""
    with Queue(tmp_path, maxsize=1) as q:
        with pytest.raises(ValueError, match="non-negative"):
            q.get(timeout=-1)
        q.put(1)
        with pytest.raises(ValueError, match="non-negative"):
            q.put(2, timeout=-1)


def test_negative_timeouts_raise_even_when_no_wait_is_needed(tmp_path: Path) -> None:
    """As the stdlib: a negative timeout raises whether or not the call would have waited."""
    std: queue.Queue[int] = queue.Queue(maxsize=5)
    std.put(0)
    with Queue(tmp_path, maxsize=5) as q:
        q.put(0)
        for target in (std, q):
            with pytest.raises(ValueError, match="non-negative"):
                target.get(timeout=-1)  # an item is there
            with pytest.raises(ValueError, match="non-negative"):
                target.put(1, timeout=-1)  # there is room
            target.put(2, block=False, timeout=-1)  # not blocking: the timeout is ignored
        with pytest.raises(ValueError, match="non-negative"):
            q.get_batch(10, timeout=-1)


def test_too_many_task_done_raise_value_error(tmp_path: Path) -> None:
    """task_done() with nothing handed out raises ValueError, as the stdlib does."""
    with Queue(tmp_path) as q:
        q.put(1)
        q.get()
        q.task_done()
        with pytest.raises(ValueError, match="too many times"):
            q.task_done()


def test_maxsize_full_and_nowait(tmp_path: Path) -> None:
    """maxsize bounds the waiting records: full() is true and put_nowait raises Full."""
    with Queue(tmp_path, maxsize=2) as q:
        assert q.maxsize == 2
        q.put(1)
        q.put_nowait(2)
        assert q.full()
        with pytest.raises(Full):
            q.put_nowait(3)
        with pytest.raises(Full):
            q.put(3, timeout=0.01)
        assert q.get() == 1
        assert not q.full()
        q.put_nowait(3)


def test_get_timeout_raises_empty(tmp_path: Path) -> None:
    """get(timeout=...) on an empty queue raises Empty; empty() says so."""
    with Queue(tmp_path) as q:
        assert q.empty()
        with pytest.raises(Empty):
            q.get(timeout=0.01)


def test_join_returns_once_every_item_is_done(tmp_path: Path) -> None:
    """join() waits for task_done on every item a worker thread took."""
    q = Queue(tmp_path)
    for i in range(50):
        q.put(i)
    seen: list[int] = []

    def worker() -> None:
        while True:
            try:
                item = q.get(timeout=0)
            except Empty:
                return
            seen.append(item)
            q.task_done()

    t = threading.Thread(target=worker)
    t.start()
    q.join()
    t.join()
    assert sorted(seen) == list(range(50))
    assert q.unfinished_tasks == 0
    q.close()


def test_directory_is_created(tmp_path: Path) -> None:
    """A missing directory (and its parents) is created, mode 0700."""
    path = tmp_path / "a" / "b"
    with Queue(path) as q:
        q.put(1)
    assert path.is_dir()
    assert (path.stat().st_mode & 0o777) == 0o700


def test_reopen_after_del_without_close(tmp_path: Path) -> None:
    """Dropping the last reference releases the directory: the reopen idiom works."""
    q = Queue(tmp_path)
    q.put("x")
    del q
    q = Queue(tmp_path)
    assert q.get_nowait() == "x"
    q.close()


def test_background_thread_does_not_keep_queue_alive(tmp_path: Path) -> None:
    """The fsync thread holds no reference to the Queue: a dropped queue is collected."""
    import gc
    import weakref

    before = set(threading.enumerate())
    q = Queue(tmp_path, fsync="interval", fsync_interval=0.01)
    (flusher,) = set(threading.enumerate()) - before
    ref = weakref.ref(q)
    del q
    gc.collect()
    assert ref() is None
    assert not flusher.is_alive()
