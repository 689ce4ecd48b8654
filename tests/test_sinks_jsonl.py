"""JsonlSink: appending, fsync per batch, rotation, concurrency and error mapping."""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spoolkit.errors import ConfigError, PartialFailure, PermanentError, TransientError
from spoolkit.sinks import JsonlSink
from spoolkit.typing import Record
from tests.helpers import closing_factory, errors_in_threads


def records(n: int, start: int = 0, pad: int = 0) -> list[Record]:
    return [
        Record(f"r{i}", {"n": i, "pad": "x" * pad}, 1700000000.0 + i)
        for i in range(start, start + n)
    ]


def lines_of(batch: list[Record]) -> list[dict[str, object]]:
    return [{"id": r.id, "enqueued_at": r.enqueued_at, "item": r.item} for r in batch]


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


MakeSink = Callable[..., JsonlSink]


@pytest.fixture
def sink_factory() -> Iterator[MakeSink]:
    """Build JsonlSinks that are closed after the test."""
    with closing_factory(JsonlSink) as make:
        yield make


def test_each_record_becomes_one_json_line(tmp_path: Path, sink_factory: MakeSink) -> None:
    """Records are appended as {id, enqueued_at, item} lines, batch after batch."""
    path = tmp_path / "out.jsonl"
    sink = sink_factory(path)
    sink.write(records(2))
    sink.write(records(1, start=2))
    assert lines(path) == [
        {"id": f"r{i}", "enqueued_at": 1700000000.0 + i, "item": {"n": i, "pad": ""}}
        for i in range(3)
    ]
    assert path.read_bytes().endswith(b"\n")


def test_to_json_and_unicode(tmp_path: Path, sink_factory: MakeSink) -> None:
    """to_json picks each line's value; non-ASCII text is written as UTF-8."""
    path = tmp_path / "u.jsonl"
    sink = sink_factory(path, to_json=lambda r: r.item)
    sink.write([Record("a", "héllo ✓", 1.0)])
    assert path.read_text(encoding="utf-8") == '"héllo ✓"\n'


def test_file_is_created_private(tmp_path: Path, sink_factory: MakeSink) -> None:
    """A new file gets mode 0600."""
    path = tmp_path / "p.jsonl"
    sink_factory(path).write(records(1))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_fsync_follows_every_batch_write(
    tmp_path: Path, sink_factory: MakeSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before write returns, the data file is fsynced holding the whole batch."""
    path = tmp_path / "f.jsonl"
    synced_sizes: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_ino == path.stat().st_ino:
            synced_sizes.append(st.st_size)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    sink = sink_factory(path)
    sink.write(records(3))
    first = path.stat().st_size
    sink.write(records(2, start=3))
    assert synced_sizes == [first, path.stat().st_size]


def test_size_rotation_keeps_only_keep_old_files(tmp_path: Path, sink_factory: MakeSink) -> None:
    """Past max_bytes the file rotates to .1, .2, ...; only `keep` old files remain."""
    path = tmp_path / "rot.jsonl"
    line = len(json.dumps(lines_of(records(1, start=10, pad=100))[0], separators=(",", ":"))) + 1
    sink = sink_factory(path, max_bytes=2 * line + line // 2, keep=2)  # two lines a file
    for i in range(10, 30):
        sink.write(records(1, start=i, pad=100))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["rot.jsonl", "rot.jsonl.1", "rot.jsonl.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size == 2 * line
    order = (tmp_path / "rot.jsonl.2", tmp_path / "rot.jsonl.1", path)
    assert [r["id"] for p in order for r in lines(p)] == [f"r{i}" for i in range(24, 30)]


def test_keep_zero_drops_the_full_file(tmp_path: Path, sink_factory: MakeSink) -> None:
    """keep=0 starts a fresh file and keeps no old one."""
    path = tmp_path / "k0.jsonl"
    sink = sink_factory(path, max_bytes=200, keep=0)
    for i in range(5):
        sink.write(records(1, start=i, pad=100))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k0.jsonl"]
    assert [r["id"] for r in lines(path)] == ["r4"]


def test_a_batch_is_never_split_across_files(tmp_path: Path, sink_factory: MakeSink) -> None:
    """A batch larger than max_bytes lands whole in one file."""
    path = tmp_path / "big.jsonl"
    sink = sink_factory(path, max_bytes=100, keep=3)
    sink.write(records(1))
    sink.write(records(10, start=1, pad=50))
    assert [r["id"] for r in lines(path)] == [f"r{i}" for i in range(1, 11)]
    assert [r["id"] for r in lines(tmp_path / "big.jsonl.1")] == ["r0"]


def test_concurrent_writers_never_interleave(tmp_path: Path, sink_factory: MakeSink) -> None:
    """Eight threads writing large batches leave only whole, valid lines, each id once."""
    path = tmp_path / "c.jsonl"
    sink = sink_factory(path, max_bytes=200_000, keep=50)

    def work(k: int) -> None:
        for j in range(10):
            sink.write(records(5, start=(k * 10 + j) * 5, pad=2000))

    assert errors_in_threads(8, work) == []
    ids: list[str] = []
    for p in tmp_path.iterdir():
        for row in lines(p):  # json.loads fails on a torn or interleaved line
            assert row["item"]["pad"] == "x" * 2000  # type: ignore[index]
            ids.append(str(row["id"]))
    assert sorted(ids) == sorted(f"r{i}" for i in range(8 * 10 * 5))
    assert len(list(tmp_path.iterdir())) > 1  # rotation happened under concurrency too


def test_failed_write_is_cut_back_and_transient(
    tmp_path: Path, sink_factory: MakeSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full half-way: TransientError, the partial batch is removed, a retry is clean."""
    path = tmp_path / "full.jsonl"
    sink = sink_factory(path)
    sink.write(records(1))
    real_write = os.write

    def half_then_enospc(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 10:
            return real_write(fd, bytes(data)[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(TransientError, match="No space left") as info:
        sink.write(records(2, start=1))
    assert isinstance(info.value.__cause__, OSError)
    assert [r["id"] for r in lines(path)] == ["r0"]
    monkeypatch.setattr(os, "write", real_write)
    sink.write(records(2, start=1))
    assert [r["id"] for r in lines(path)] == ["r0", "r1", "r2"]


def test_path_that_is_a_directory_is_permanent(tmp_path: Path, sink_factory: MakeSink) -> None:
    """A path naming a directory cannot be fixed by retrying: PermanentError."""
    sink = sink_factory(tmp_path)
    with pytest.raises(PermanentError, match=str(tmp_path)):
        sink.write(records(1))


def test_missing_directory_is_transient(tmp_path: Path, sink_factory: MakeSink) -> None:
    """A directory that does not exist yet (not mounted) is worth retrying."""
    sink = sink_factory(tmp_path / "later" / "x.jsonl")
    with pytest.raises(TransientError):
        sink.write(records(1))
    (tmp_path / "later").mkdir()
    sink.write(records(1))
    assert len(lines(tmp_path / "later" / "x.jsonl")) == 1


def test_open_tolerates_a_missing_directory_but_not_a_directory_path(
    tmp_path: Path, sink_factory: MakeSink
) -> None:
    """open() leaves a passing failure to the first write, but reports a path that is a dir."""
    sink_factory(tmp_path / "later" / "x.jsonl").open()
    with pytest.raises(PermanentError):
        sink_factory(tmp_path).open()


def test_file_moved_away_starts_a_new_file(tmp_path: Path, sink_factory: MakeSink) -> None:
    """After an outside tool renames the file, the next batch goes to a fresh file at path."""
    path = tmp_path / "m.jsonl"
    sink = sink_factory(path)
    sink.write(records(1))
    path.rename(tmp_path / "m.jsonl.old")
    sink.write(records(1, start=1))
    assert [r["id"] for r in lines(path)] == ["r1"]
    assert [r["id"] for r in lines(tmp_path / "m.jsonl.old")] == ["r0"]


def test_close_then_write_reopens(tmp_path: Path, sink_factory: MakeSink) -> None:
    """open() creates the file; close() releases it; a later write opens it again."""
    path = tmp_path / "o.jsonl"
    sink = sink_factory(path)
    sink.open()
    assert path.exists()
    sink.close()
    sink.write(records(1))
    assert len(lines(path)) == 1


def test_unencodable_items_fail_alone(tmp_path: Path, sink_factory: MakeSink) -> None:
    """Good records are written; bad ones are named in PartialFailure, alone they are permanent."""
    path = tmp_path / "b.jsonl"
    sink = sink_factory(path)
    bad = Record("nan", float("nan"), 1.0)
    with pytest.raises(PartialFailure) as info:
        sink.write([*records(2), bad])
    assert info.value.failed == ["nan"]
    assert [r["id"] for r in lines(path)] == ["r0", "r1"]
    with pytest.raises(PermanentError, match="'nan'"):
        sink.write([bad])


@pytest.mark.parametrize("kwargs", [{"max_bytes": 0}, {"max_bytes": -5}, {"keep": -1}])
def test_bad_options_are_config_errors(tmp_path: Path, kwargs: dict[str, int]) -> None:
    """max_bytes must be positive and keep non-negative."""
    with pytest.raises(ConfigError):
        JsonlSink(tmp_path / "x.jsonl", **kwargs)  # type: ignore[arg-type]
