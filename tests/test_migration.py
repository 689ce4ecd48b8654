"""Opening a directory written by the real pqueue package keeps its pending items."""

from __future__ import annotations

import os
from pathlib import Path

import pqueue
import pytest

from spoolkit import Empty, Queue


def _pqueue_dir(path: Path, items: list[object], consumed: int, chunksize: int = 5) -> None:
    path.mkdir()
    q = pqueue.Queue(str(path), chunksize=chunksize, tempdir=str(path.parent))
    for item in items:
        q.put(item)
    for _ in range(consumed):
        q.get()
        q.task_done()
    q.headf.close()  # pqueue never closes its files itself
    q.tailf.close()


def test_pending_pqueue_items_are_kept_in_order(tmp_path: Path) -> None:
    """Items pqueue had not handed out come back from spoolkit, in order, then Empty."""
    d = tmp_path / "q"
    items: list[object] = [{"n": i} for i in range(23)]
    _pqueue_dir(d, items, consumed=7)
    with Queue(d) as q:
        assert q.qsize() == 16
        assert [q.get_nowait() for _ in range(16)] == items[7:]
        with pytest.raises(Empty):
            q.get_nowait()
    assert not (d / "info").exists()
    assert not (d / "pqueue-0.1").exists()


def test_migration_interrupted_after_moving_files_is_redone(tmp_path: Path) -> None:
    """A crash mid-migration (pqueue files moved aside, nothing else): the next open redoes it."""
    d = tmp_path / "q"
    _pqueue_dir(d, list(range(12)), consumed=2)
    backup = d / "pqueue-0.1"
    backup.mkdir()
    for name in os.listdir(d):
        if name.startswith("q"):
            os.replace(d / name, backup / name)
    os.replace(d / "info", backup / "info")
    with Queue(d) as q:
        assert [q.get_nowait() for _ in range(10)] == list(range(2, 12))


def test_migrated_spool_reopens_as_spoolkit(tmp_path: Path) -> None:
    """After migration the directory is an ordinary spoolkit spool."""
    d = tmp_path / "q"
    _pqueue_dir(d, ["a", "b"], consumed=0)
    with Queue(d) as q:
        assert q.get_nowait() == "a"
    with Queue(d) as q:
        assert [q.get_nowait(), q.get_nowait()] == ["a", "b"]
