"""fsync modes, durable=True and group commit, observed through the fsync calls made."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from spoolkit import Queue
from spoolkit.queue import chunk


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every fsync of a chunk file (by path)."""
    calls: list[str] = []
    real = chunk.Chunk.sync

    def spy(self: chunk.Chunk) -> None:
        calls.append(self.path)
        real(self)

    monkeypatch.setattr(chunk.Chunk, "sync", spy)
    return calls


def test_fsync_always_syncs_before_put_and_ack_return(tmp_path: Path, fsyncs: list[str]) -> None:
    """fsync="always": every put and every ack is followed by an fsync before returning."""
    with Queue(tmp_path, fsync="always") as q:
        fsyncs.clear()
        q.put(1)
        assert len(fsyncs) == 1
        (d,) = q.get_batch(1)
        q.ack(d)
        assert len(fsyncs) == 2


def test_fsync_never_and_interval_do_not_sync_on_put(tmp_path: Path, fsyncs: list[str]) -> None:
    """fsync="interval"/"never": put returns without an fsync."""
    for mode in ("interval", "never"):
        with Queue(tmp_path / mode, fsync=mode, fsync_interval=3600) as q:
            fsyncs.clear()
            q.put(1)
            q.put_many([2, 3])
            assert fsyncs == []


def test_durable_put_syncs_that_record(tmp_path: Path, fsyncs: list[str]) -> None:
    """put(durable=True) fsyncs before returning even when the queue default is "never"."""
    with Queue(tmp_path, fsync="never") as q:
        q.put("cheap")
        assert fsyncs == []
        q.put("payment", durable=True)
        assert len(fsyncs) == 1


def test_interval_mode_syncs_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync="interval": the background thread fsyncs what was written, before any close."""
    synced = threading.Event()
    real = chunk.Chunk.sync

    def spy(self: chunk.Chunk) -> None:
        real(self)
        if threading.current_thread().name == "spoolkit-fsync":
            synced.set()

    monkeypatch.setattr(chunk.Chunk, "sync", spy)
    with Queue(tmp_path, fsync="interval", fsync_interval=0.005) as q:
        q.put(1)  # the record the flusher must fsync (close, which fsyncs too, comes after)
        assert synced.wait(10), "the background thread never fsynced the put"


def test_clean_close_syncs_unless_never(tmp_path: Path, fsyncs: list[str]) -> None:
    """close() fsyncs pending writes in "interval" mode, not in "never" mode."""
    with Queue(tmp_path / "a", fsync="interval", fsync_interval=3600) as q:
        q.put(1)
    assert fsyncs
    fsyncs.clear()
    with Queue(tmp_path / "b", fsync="never") as q:
        q.put(1)
    assert fsyncs == []


def test_group_commit_shares_fsyncs_between_threads(tmp_path: Path, fsyncs: list[str]) -> None:
    """8 threads putting with fsync="always" need fewer fsyncs than puts (shared fsyncs)."""
    q = Queue(tmp_path, fsync="always", chunksize=10_000)
    fsyncs.clear()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for i in range(100):
            q.put(i)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert q.qsize() == 800
    assert len(fsyncs) < 800
    q.close()


def test_a_sync_covers_each_chunk_written_since_the_last(tmp_path: Path, fsyncs: list[str]) -> None:
    """Appends leave no dirty mark: a sync fsyncs the head chunk and each chunk rolled away
    since the last sync, and a sync with nothing written since fsyncs no chunk. A record stored
    under its own id and an acknowledgement count as written too."""

    def synced() -> list[str]:
        names = sorted(Path(p).name for p in fsyncs)
        fsyncs.clear()
        return names

    with Queue(tmp_path, chunksize=2, fsync="never") as q:
        for i in range(5):
            q.put(i)
        q.sync()
        assert synced() == ["q00000", "q00001", "q00002"]
        q.sync()
        assert synced() == []
        q.put(5)
        q.sync()
        assert synced() == ["q00002"]
        q.put(6)  # rolls: q00002 is full
        q.sync()
        assert synced() == ["q00003"]
        q.restore(q.encode(7), 1000, 0.0)  # under its own id, as a dead-letter requeue
        q.sync()
        assert synced() == ["q00003"]
        q.ack(*q.get_batch(1))  # the first record, in q00000
        q.sync()
        assert synced() == ["q00000"]
        q.put_many(range(8, 13))  # q00003 is full: q00004 and q00005, then q00006
        q.sync()
        assert synced() == ["q00004", "q00005", "q00006"]
