"""A symlink planted inside a spool never makes spoolkit write (or read) outside it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from spoolkit import Queue, Spool
from spoolkit.backends.lanes import LanesBackend
from spoolkit.errors import PathError
from spoolkit.queue import meta
from spoolkit.testing import MemorySink

SECRET = b"an outside file nobody may touch\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the spool, as an attacker would point a link at."""
    target = tmp_path / "outside" / "target"
    target.parent.mkdir()
    target.write_bytes(SECRET)
    return target


@pytest.fixture
def outside_dir(tmp_path: Path) -> Path:
    """An empty directory outside the spool, as an attacker would point a link at."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    return target


def _untouched(target: Path) -> None:
    assert target.read_bytes() == SECRET
    assert sorted(p.name for p in target.parent.iterdir()) == ["target"]


def _closed_queue(path: Path, n: int = 5) -> None:
    with Queue(path, chunksize=2) as q:  # chunks q00000.. q00002
        q.put_many(range(n))


@pytest.mark.parametrize(
    "name",
    [
        "lock",
        "meta.json",
        "q00003",  # the next chunk
        "q00001",  # an existing chunk
        f".meta.json.{os.getpid()}.tmp",
        ".free-0",
        "idle",
        "consumers.lock",
        "dead",
        "lanes",
        "pqueue-0.1",
        "info",
    ],
)
def test_a_link_planted_in_a_spools_place_is_refused(
    tmp_path: Path, outside: Path, name: str
) -> None:
    """Each name the spool uses, planted as a symlink to an outside file: opening refuses
    with PathError naming it, and the outside file is untouched."""
    spool = tmp_path / "spool"
    _closed_queue(spool)
    link = spool / name
    if link.exists():
        link.unlink()
    link.symlink_to(outside)
    with pytest.raises(PathError) as caught:
        Queue(spool, chunksize=2)
    assert str(link) in str(caught.value)
    assert "symbolic link" in str(caught.value)
    assert caught.value.path == str(link)
    _untouched(outside)


@pytest.mark.parametrize("name", ["lock", "consumers.lock", "meta.json"])
def test_a_spool_refuses_links_planted_in_its_directory(
    tmp_path: Path, outside: Path, name: str
) -> None:
    """The same for a Spool (lanes backend): refused, the outside file untouched."""
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / name).symlink_to(outside)
    with pytest.raises(PathError):
        Spool(spool, MemorySink())
    _untouched(outside)


@pytest.mark.parametrize("name", ["dead", "lanes", "lanes/1", "lanes/2"])
def test_a_spool_refuses_directories_planted_as_links(
    tmp_path: Path, outside_dir: Path, name: str
) -> None:
    """``dead``, ``lanes`` or a lane as a symlink to an empty outside directory: the spool
    refuses to open, naming it, and nothing is written there."""
    spool = tmp_path / "spool"
    (spool / "lanes" / "1").mkdir(parents=True)
    link = spool / name
    if link.exists():
        shutil.rmtree(link)
    link.symlink_to(outside_dir, target_is_directory=True)
    with pytest.raises(PathError) as caught:
        Spool(spool, MemorySink())
    assert str(link) in str(caught.value)
    assert list(outside_dir.iterdir()) == []


def test_dead_letters_never_go_through_a_planted_link(tmp_path: Path, outside_dir: Path) -> None:
    """``dead`` replaced by a link to an outside directory while the spool is open: the next
    dead-letter operation refuses, and nothing is written there."""
    spool = Spool(tmp_path / "spool", MemorySink())
    try:
        dead = tmp_path / "spool" / "dead"
        for child in dead.iterdir():
            child.unlink()
        dead.rmdir()
        dead.symlink_to(outside_dir, target_is_directory=True)
        with pytest.raises(PathError) as caught:
            len(spool.dead_letters)
        assert "symbolic link" in str(caught.value)
    finally:
        spool.stop(drain=False)
    assert list(outside_dir.iterdir()) == []


def test_the_next_chunk_planted_while_open_is_never_written(tmp_path: Path, outside: Path) -> None:
    """A link planted under the name of the chunk the queue creates next: the put that rolls
    fails, the outside file is untouched, and the records before it are kept."""
    path = tmp_path / "spool"
    q = Queue(path, chunksize=2)
    try:
        q.put_many([1, 2])
        (path / "q00001").symlink_to(outside)
        with pytest.raises(OSError):
            q.put(3)
    finally:
        q.close()
    _untouched(outside)
    (path / "q00001").unlink()
    with Queue(path, chunksize=2) as q:
        assert [q.get(timeout=0) for _ in range(2)] == [1, 2]


def test_a_temp_file_planted_while_open_is_replaced_not_followed(
    tmp_path: Path, outside: Path
) -> None:
    """``meta.json``'s temp file planted as a link just before metadata is rewritten: the link
    is removed and a file of spoolkit's own written; the outside file is untouched."""
    (tmp_path / "spool").mkdir()
    directory = str(tmp_path / "spool")
    link = tmp_path / "spool" / f".meta.json.{os.getpid()}.tmp"
    link.symlink_to(outside)
    meta.write_meta(directory, {"format": 1})
    assert meta.read_meta(directory) == {"format": 1}
    assert not link.exists()
    _untouched(outside)


def test_a_dangling_idle_link_creates_nothing_outside(tmp_path: Path) -> None:
    """An ``idle`` link to a missing outside path, planted in a lane let go empty: spoolkit
    does not create the file it points at."""
    target = tmp_path / "outside" / "created"
    target.parent.mkdir()
    backend = LanesBackend(tmp_path / "spool")
    (tmp_path / "spool" / "idle").symlink_to(target)
    backend.close()  # lets go of its empty lane, which marks it idle
    assert not target.exists()
    assert (tmp_path / "spool" / "idle").is_symlink()


def test_the_spool_root_may_be_a_link_made_by_the_operator(tmp_path: Path) -> None:
    """The spool root itself may be a symlink (the operator's choice): it is resolved once,
    and the spool lives in the directory it points at."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    with Queue(tmp_path / "link") as q:
        assert q.path == str(real)
        q.put(1)
    spool = Spool(tmp_path / "link", MemorySink())
    try:
        assert spool.stats().backlog == 1
    finally:
        spool.stop(drain=False)
    assert (real / "meta.json").is_file()


def test_a_lane_planted_while_consuming_is_not_adopted(tmp_path: Path, outside_dir: Path) -> None:
    """A link planted as ``lanes/<n>`` while a consumer runs: its scan adopts nothing through
    it (and does not fail), and nothing is written in the outside directory."""
    (outside_dir / "lock").touch()  # it looks like a lane nobody holds
    backend = LanesBackend(tmp_path / "spool")
    try:
        (tmp_path / "spool" / "lanes").mkdir(exist_ok=True)
        (tmp_path / "spool" / "lanes" / "5").symlink_to(outside_dir, target_is_directory=True)
        backend.adopt()
        assert backend.lanes_held() == [str(tmp_path / "spool")]
    finally:
        backend.close()
    assert [p.name for p in outside_dir.iterdir()] == ["lock"]
    assert (outside_dir / "lock").read_bytes() == b""


def test_the_inspector_never_reads_through_a_planted_chunk_link(tmp_path: Path) -> None:
    """A chunk name planted as a link to an outside file: inspect and fsck refuse it with
    PathError instead of reading (and printing) the outside file."""
    from spoolkit.tools.inspect import fsck, inspect_spool

    spool = tmp_path / "q"
    with Queue(spool, serializer="raw") as q:
        q.put(b"x")
    secret = tmp_path / "secret"
    secret.write_bytes(b"not for the spool's readers")
    (spool / "q00007").symlink_to(secret)
    for look in (inspect_spool, fsck):
        with pytest.raises(PathError, match="symbolic link"):
            look(str(spool))
