"""Opening a directory written by the real pqueue package keeps its pending items."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pqueue
import pytest

from spoolkit import Empty, Queue
from spoolkit.errors import ConfigError


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


def test_items_whose_class_cannot_be_imported_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration never unpickles: an item whose class is not importable here survives it."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "gone_model.py").write_text(
        "class Order:\n"
        "    def __init__(self, n):\n        self.n = n\n"
        "    def __eq__(self, other):\n        return self.n == other.n\n"
    )
    monkeypatch.syspath_prepend(str(pkg))
    import gone_model  # made on the fly above

    d = tmp_path / "q"
    _pqueue_dir(d, ["a", gone_model.Order(1), "b", gone_model.Order(2), "c"], consumed=0)
    monkeypatch.delitem(sys.modules, "gone_model")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(pkg)])
    with Queue(d) as q:
        assert q.qsize() == 5
        assert [q.get_nowait() for _ in range(3)] == ["a", "b", "c"]
        assert q.undecodable == 2
    assert not (d / "pqueue-0.1").exists()
    monkeypatch.syspath_prepend(str(pkg))  # the class is importable again: both come back
    with Queue(d) as q:
        got = [q.get_nowait() for _ in range(q.qsize())]
        assert got[1:4:2] == [gone_model.Order(1), gone_model.Order(2)]


def test_unreadable_info_keeps_every_item_of_the_chunk_files(tmp_path: Path) -> None:
    """A damaged pqueue info file: every item in the chunk files is kept (at-least-once)."""
    d = tmp_path / "q"
    _pqueue_dir(d, list(range(12)), consumed=4)
    (d / "info").write_bytes(b"\0" * 40)
    with Queue(d) as q:
        assert [q.get_nowait() for _ in range(12)] == list(range(12))


def test_torn_last_item_is_dropped_and_earlier_ones_kept(tmp_path: Path) -> None:
    """A torn last pqueue write is dropped, as pqueue drops it; the items before it are kept."""
    d = tmp_path / "q"
    _pqueue_dir(d, ["x" * 50, "y" * 50, "z" * 50], consumed=0, chunksize=10)
    with open(d / "q00000", "r+b") as f:
        f.truncate(os.path.getsize(d / "q00000") - 10)
    with Queue(d) as q:
        assert [q.get_nowait() for _ in range(q.qsize())] == ["x" * 50, "y" * 50]


def test_non_pickle_serializer_is_refused_before_anything_moves(tmp_path: Path) -> None:
    """A pqueue directory opened with json: a ConfigError, pqueue's files untouched."""
    d = tmp_path / "q"
    _pqueue_dir(d, ["a", "b"], consumed=0)
    before = {name: (d / name).read_bytes() for name in os.listdir(d)}
    with pytest.raises(ConfigError, match="serializer='pickle'"):
        Queue(d, serializer="json")
    assert {name: (d / name).read_bytes() for name in before} == before
    assert not (d / "pqueue-0.1").exists()
    with Queue(d) as q:
        assert [q.get_nowait(), q.get_nowait()] == ["a", "b"]
