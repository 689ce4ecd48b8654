"""File permissions: spool directories 0700 and their files 0600 whatever the umask."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from spoolkit import Queue, Spool
from spoolkit.errors import PermanentError
from spoolkit.queue import migrate
from spoolkit.sinks import JsonlSink
from spoolkit.typing import Record
from tests.helpers.pqueue_dirs import pqueue_dir

UMASKS = [0o000, 0o022, 0o077]


@pytest.fixture(params=UMASKS, ids=lambda m: f"umask{m:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under a process umask, restored afterwards."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path | str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _tree_modes(root: Path) -> dict[str, int]:
    """The mode of ``root`` and of everything under it, keyed by path relative to ``root``."""
    modes = {".": _mode(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            modes[str(full.relative_to(root))] = _mode(full)
    return modes


def _assert_private(root: Path) -> dict[str, int]:
    modes = _tree_modes(root)
    wrong = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o700 if (root / name).is_dir() else 0o600)
    }
    assert wrong == {}
    return modes


class _Refuse:
    """A sink that refuses every batch for good, so each record is dead-lettered."""

    def write(self, batch: list[Record]) -> None:
        raise PermanentError("refused", sink="refuse")


def test_queue_directory_and_files_are_private(tmp_path: Path, umask: int) -> None:
    """A new queue directory is 0700 and its chunks, metadata and lock are 0600."""
    root = tmp_path / "q"
    with Queue(root, chunksize=2, serializer="json") as q:
        for i in range(7):
            q.put(i)
        q.sync()
        modes = _assert_private(root)
    assert {"meta.json", "lock", "q00000", "q00003"} <= set(modes)


def test_recycled_chunk_files_stay_private(tmp_path: Path, umask: int) -> None:
    """Retired .free-N files, and the chunks they are renamed into, are 0600."""
    root = tmp_path / "q"
    with Queue(root, chunksize=2, serializer="json") as q:
        for i in range(6):
            q.put(i)
        q.ack(*q.get_batch(4))
        free = {p.name: p.stat().st_ino for p in root.iterdir() if p.name.startswith(".free-")}
        assert free
        _assert_private(root)
        for i in range(6):
            q.put(i)
        chunks = {p.stat().st_ino for p in root.iterdir() if p.name.startswith("q")}
        assert chunks & set(free.values())  # a retired file became a chunk again
        _assert_private(root)


def test_missing_parents_are_created_private(tmp_path: Path, umask: int) -> None:
    """Parents spoolkit has to create on the way to the spool directory are 0700 too."""
    root = tmp_path / "a" / "b" / "q"
    Queue(root).close()
    assert [_mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", root)] == [0o700] * 3


def test_metadata_temp_files_are_private(
    tmp_path: Path, umask: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temp file of an atomic metadata replacement is 0600 before it is renamed."""
    seen: list[int] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append(_mode(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    Queue(tmp_path / "q").close()
    assert seen
    assert set(seen) == {0o600}


@contextmanager
def _spool_with_one_dead_letter(root: Path) -> Iterator[Spool]:
    """A started spool at ``root`` that has dead-lettered its one record ``{"n": 1}``."""
    spool = Spool(root, sink=_Refuse(), serializer="json")
    spool.start()
    try:
        spool.put({"n": 1})
        spool.flush(timeout=10)
        yield spool
    finally:
        spool.stop()


def test_spool_and_dead_letters_are_private(tmp_path: Path, umask: int) -> None:
    """A spool's directory, its dead-letter directory and every file in both are private."""
    root = tmp_path / "s"
    with _spool_with_one_dead_letter(root) as spool:
        assert len(spool.dead_letters) == 1
        modes = _assert_private(root)
    assert {"dead", "dead/meta.json", "dead/lock"} <= set(modes)


def test_pqueue_migration_creates_private_files(
    tmp_path: Path, umask: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migrating a pqueue directory makes a 0700 backup directory and 0600 spoolkit files."""
    root = pqueue_dir("ints-5-chunksize-3", tmp_path / "q")  # 0, 1, 2, 3, 4
    root.chmod(0o700)
    monkeypatch.setattr(migrate, "finish", lambda path: None)  # keep the backup to look at
    with Queue(root) as q:
        assert q.qsize() == 5
        assert _mode(root / migrate.BACKUP) == 0o700
        ours = [p for p in root.iterdir() if p.name != migrate.BACKUP]
        assert {p.name: oct(_mode(p)) for p in ours} == {p.name: "0o600" for p in ours}


def test_jsonl_files_and_rotated_files_are_private(tmp_path: Path, umask: int) -> None:
    """JsonlSink creates its file 0600, and rotated files keep that mode."""
    sink = JsonlSink(tmp_path / "out.jsonl", max_bytes=64, keep=2)
    try:
        for i in range(6):
            sink.write([Record(str(i), {"n": i, "pad": "x" * 30}, 0.0)])
    finally:
        sink.close()
    modes = _tree_modes(tmp_path)
    assert {"out.jsonl", "out.jsonl.1", "out.jsonl.2"} <= set(modes)
    assert {name: mode for name, mode in modes.items() if name != "."} == dict.fromkeys(
        ["out.jsonl", "out.jsonl.1", "out.jsonl.2"], 0o600
    )


def test_existing_loose_directory_is_left_alone_and_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An existing group-accessible spool directory keeps its mode; a warning is logged."""
    root = tmp_path / "shared"
    root.mkdir()
    os.chmod(root, 0o775)  # noqa: S103 - the loose mode under test
    with caplog.at_level(logging.WARNING, logger="spoolkit"):
        Queue(root).close()
    assert _mode(root) == 0o775
    assert [r.spoolkit["mode"] for r in caplog.records] == ["0o775"]  # type: ignore[attr-defined]
    assert "spool_dir_permissions_loose" in caplog.text


def test_existing_private_directory_is_not_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Reopening a 0700 spool directory logs no permission warning."""
    Queue(tmp_path / "q").close()
    with caplog.at_level(logging.WARNING, logger="spoolkit"):
        Queue(tmp_path / "q").close()
    assert "spool_dir_permissions_loose" not in caplog.text


class _Plant:
    """Unpickling this calls ``open(path, "w")``: a stand-in for code an attacker would run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


class _AsIs:
    """Stores bytes as they are, under the dead-letter store's serializer name."""

    name = "pickle"

    def dumps(self, obj: bytes) -> bytes:
        return obj

    def loads(self, data: bytes) -> bytes:
        return data


def test_dead_letters_never_unpickle_objects(tmp_path: Path) -> None:
    """A pickle planted in <spool>/dead that names a callable is skipped, never run."""
    import pickle

    marker = tmp_path / "pwned"
    root = tmp_path / "s"
    with _spool_with_one_dead_letter(root):
        pass  # stopped: <spool>/dead holds the record {"n": 1}
    with Queue(root / "dead", serializer=_AsIs()) as dead:
        dead.put(pickle.dumps(_Plant(str(marker)), 5))
    spool = Spool(root, sink=_Refuse(), serializer="json")
    try:
        letters = spool.dead_letters.list()
    finally:
        spool.stop()
    assert [d.record.item for d in letters] == [{"n": 1}]
    assert not marker.exists()
