"""Opening a directory written by the real pqueue package keeps its pending items.

The directories are what pqueue 0.1.7 wrote (``tests/helpers/pqueue_dirs.py``), so these tests
run without pqueue installed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from spoolkit import Empty, Queue
from spoolkit.errors import ConfigError
from tests.helpers.pqueue_dirs import GONE_MODEL, pqueue_dir


def test_pending_pqueue_items_are_kept_in_order(tmp_path: Path) -> None:
    """Items pqueue had not handed out come back from spoolkit, in order, then Empty."""
    d = tmp_path / "q"
    items: list[object] = [{"n": i} for i in range(23)]
    pqueue_dir("dicts-23-taken-7", d)
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
    pqueue_dir("ints-12-taken-2", d)
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
    pqueue_dir("a-b", d)
    with Queue(d) as q:
        assert q.get_nowait() == "a"
    with Queue(d) as q:
        assert [q.get_nowait(), q.get_nowait()] == ["a", "b"]


def test_items_whose_class_cannot_be_imported_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration never unpickles: an item whose class is not importable here survives it."""
    d = pqueue_dir("gone-model", tmp_path / "q")  # "a", Order(1), "b", Order(2), "c"
    assert "gone_model" not in sys.modules  # Order's module exists nowhere yet
    with Queue(d) as q:
        assert q.qsize() == 5
        assert [q.get_nowait() for _ in range(3)] == ["a", "b", "c"]
        assert q.undecodable == 2
    assert not (d / "pqueue-0.1").exists()
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "gone_model.py").write_text(GONE_MODEL)
    monkeypatch.syspath_prepend(str(pkg))  # the class is importable now: both come back
    try:
        import gone_model

        with Queue(d) as q:
            got = [q.get_nowait() for _ in range(q.qsize())]
            assert got[1:4:2] == [gone_model.Order(1), gone_model.Order(2)]
    finally:
        sys.modules.pop("gone_model", None)


def test_unreadable_info_keeps_every_item_of_the_chunk_files(tmp_path: Path) -> None:
    """A damaged pqueue info file: every item in the chunk files is kept (at-least-once)."""
    d = tmp_path / "q"
    pqueue_dir("ints-12-taken-4", d)
    (d / "info").write_bytes(b"\0" * 40)
    with Queue(d) as q:
        assert [q.get_nowait() for _ in range(12)] == list(range(12))


def test_torn_last_item_is_dropped_and_earlier_ones_kept(tmp_path: Path) -> None:
    """A torn last pqueue write is dropped, as pqueue drops it; the items before it are kept."""
    d = tmp_path / "q"
    pqueue_dir("long-strings-chunksize-10", d)
    with open(d / "q00000", "r+b") as f:
        f.truncate(os.path.getsize(d / "q00000") - 10)
    with Queue(d) as q:
        assert [q.get_nowait() for _ in range(q.qsize())] == ["x" * 50, "y" * 50]


def test_non_pickle_serializer_is_refused_before_anything_moves(tmp_path: Path) -> None:
    """A pqueue directory opened with json: a ConfigError, pqueue's files untouched."""
    d = tmp_path / "q"
    pqueue_dir("a-b", d)
    before = {name: (d / name).read_bytes() for name in os.listdir(d)}
    with pytest.raises(ConfigError, match="serializer='pickle'"):
        Queue(d, serializer="json")
    assert {name: (d / name).read_bytes() for name in before} == before
    assert not (d / "pqueue-0.1").exists()
    with Queue(d) as q:
        assert [q.get_nowait(), q.get_nowait()] == ["a", "b"]
