"""Bad input and limits: typed errors that name the problem and change nothing stored."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from spoolkit import Full, Queue
from spoolkit.errors import (
    ConfigError,
    LockedError,
    PathError,
    RecordTooLargeError,
    SerializationError,
)
from spoolkit.queue import chunk
from spoolkit.queue.framing import FRAME_HEADER_SIZE
from tests.helpers.faults import needs_root

ROOT = Path(__file__).resolve().parent.parent


def test_unpicklable_item_raises_and_leaves_queue_unchanged(tmp_path: Path) -> None:
    """An item pickle cannot encode raises SerializationError; nothing is stored."""
    with Queue(tmp_path) as q:
        q.put("before")
        with pytest.raises(SerializationError, match="cannot serialize"):
            q.put(threading.Lock())
        with pytest.raises(SerializationError):
            q.put_many(["ok", threading.Lock()])
        assert q.qsize() == 1
        assert q.get_nowait() == "before"


def test_json_serializer_rejects_non_json(tmp_path: Path) -> None:
    """With serializer="json" a set is a SerializationError (also a TypeError)."""
    with Queue(tmp_path, serializer="json") as q:
        with pytest.raises(TypeError):
            q.put({1, 2})
        q.put({"a": [1, "b"]})
        assert q.get_nowait() == {"a": [1, "b"]}


def test_raw_serializer_takes_bytes_only(tmp_path: Path) -> None:
    """With serializer="raw" only bytes go in, and come out as they went in."""
    with Queue(tmp_path, serializer="raw") as q:
        with pytest.raises(SerializationError, match="bytes only"):
            q.put("text")
        q.put(b"\x00\x01")
        assert q.get_nowait() == b"\x00\x01"


def test_custom_serializer_object(tmp_path: Path) -> None:
    """Any object with dumps/loads is a serializer."""

    class Upper:
        def dumps(self, obj: str) -> bytes:
            return obj.upper().encode()

        def loads(self, data: bytes) -> str:
            return data.decode()

    with Queue(tmp_path, serializer=Upper()) as q:
        q.put("shout")
        assert q.get_nowait() == "SHOUT"


def test_unknown_serializer_name_is_a_config_error(tmp_path: Path) -> None:
    """An unknown serializer name raises ConfigError listing the choices."""
    with pytest.raises(ConfigError, match="pickle"):
        Queue(tmp_path, serializer="yaml")


def test_reopening_with_another_serializer_is_refused(tmp_path: Path) -> None:
    """A spool holding pickled records refuses to open as json, naming the right one."""
    with Queue(tmp_path) as q:
        q.put("x")
    with pytest.raises(ConfigError, match="serializer='pickle'"):
        Queue(tmp_path, serializer="json")
    with Queue(tmp_path) as q:
        assert q.get_nowait() == "x"


def test_record_over_max_record_bytes(tmp_path: Path) -> None:
    """A record over max_record_bytes raises RecordTooLargeError; nothing stored."""
    with Queue(tmp_path, serializer="raw", max_record_bytes=100) as q:
        with pytest.raises(RecordTooLargeError, match="max_record_bytes=100"):
            q.put(b"x" * 101)
        q.put(b"x" * 100)
        assert q.qsize() == 1


def test_max_bytes_makes_put_full(tmp_path: Path) -> None:
    """max_bytes caps disk use: put blocks, honours timeout, raises Full; ack frees room."""
    with Queue(tmp_path, serializer="raw", chunksize=2, max_bytes=600) as q:
        q.put_many([b"a" * 100] * 4)
        with pytest.raises(Full):
            q.put(b"b" * 100, block=False)
        with pytest.raises(Full):
            q.put(b"b" * 100, timeout=0.01)
        q.ack(*q.get_batch(2))  # the first chunk is now fully acknowledged: its bytes free
        q.put(b"b" * 100, timeout=0)
        assert q.qsize() == 3


def test_bytes_used_counts_the_frames_of_live_chunks(tmp_path: Path) -> None:
    """bytes_used (what max_bytes bounds) is the size of every frame in a chunk not yet
    deleted: through puts, put_many, chunk rolls, a chunk deleted by acks, and a reopen."""

    def frames(*items: bytes) -> int:
        return sum(FRAME_HEADER_SIZE + len(x) for x in items)

    first = [bytes(10 * i) for i in range(1, 6)]
    more = [bytes(7 * i) for i in range(1, 5)]
    with Queue(tmp_path, serializer="raw", chunksize=3) as q:
        assert q.bytes_used == 0
        for x in first:
            q.put(x)
        assert q.bytes_used == frames(*first)
        q.put_many(more)
        assert q.bytes_used == frames(*first, *more)
        q.ack(*q.get_batch(3))  # the whole first chunk: it is deleted
        assert q.bytes_used == frames(*first[3:], *more)
    with Queue(tmp_path, serializer="raw", chunksize=3) as q:
        assert q.bytes_used == frames(*first[3:], *more)
        q.put(b"x" * 99)
        assert q.bytes_used == frames(*first[3:], *more, b"x" * 99)


def test_record_larger_than_max_bytes_is_refused_not_blocked(tmp_path: Path) -> None:
    """A record that could never fit under max_bytes raises instead of blocking forever."""
    with Queue(tmp_path, serializer="raw", max_bytes=64) as q, pytest.raises(RecordTooLargeError):
        q.put(b"x" * 100)


def test_path_that_is_a_file(tmp_path: Path) -> None:
    """A path that is a regular file raises PathError naming it."""
    f = tmp_path / "file"
    f.write_text("hi")
    with pytest.raises(PathError, match="is a file") as info:
        Queue(f)
    assert info.value.path == str(f)


def test_unwritable_path(tmp_path: Path) -> None:
    """A directory this user cannot write raises PathError naming it."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() == 0:  # root writes anywhere but on a read-only filesystem
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(d)], check=True)
    else:  # pragma: no cover - the suite runs as root in CI
        d.chmod(0o500)
    try:
        with pytest.raises(PathError, match="not writable") as info:
            Queue(d)
        assert info.value.path == str(d)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(d)], check=True)


def test_second_process_gets_locked_error_with_pid(tmp_path: Path) -> None:
    """Another process holding the directory: LockedError naming its pid."""
    code = (
        "import sys, time\nfrom spoolkit import Queue\n"
        "q = Queue(sys.argv[1])\nprint('ready', flush=True)\nsys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(LockedError) as info:
            Queue(tmp_path)
        assert info.value.pid == holder.pid
        assert str(holder.pid) in str(info.value)
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdin is not None
        assert holder.stdout is not None
        holder.stdin.close()
        holder.stdout.close()
    with Queue(tmp_path) as q:  # the lock died with the process
        q.put(1)


def test_enospc_when_growing_a_chunk_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """posix_fallocate failing with ENOSPC: put raises it, stored records stay, later puts work."""
    with Queue(tmp_path, serializer="raw", chunksize=1000) as q:
        q.put_many([b"a" * 100] * 5)
        real = os.posix_fallocate

        def full(fd: int, off: int, length: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(chunk.os, "posix_fallocate", full)
        with pytest.raises(OSError, match="No space") as info:
            q.put(b"b" * 2_000_000)  # needs the chunk to grow
        assert info.value.errno == errno.ENOSPC
        assert q.qsize() == 5
        monkeypatch.setattr(chunk.os, "posix_fallocate", real)
        q.put(b"b" * 2_000_000)
        assert q.qsize() == 6
    with Queue(tmp_path, serializer="raw", chunksize=1000) as q:
        items = [d.item for d in q.get_batch(10)]
    assert items == [b"a" * 100] * 5 + [b"b" * 2_000_000]


@pytest.mark.parametrize("how", ["refused", "short", "nothing"])
def test_enospc_when_rolling_to_a_new_chunk_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A new chunk that cannot be written out whole (the write refused; cut short as a nearly
    full disk cuts it, then refused; or writing nothing) is removed again; the queue keeps
    working."""
    real = os.pwrite
    with Queue(tmp_path, serializer="raw", chunksize=2) as q:
        q.put_many([b"a", b"b"])
        calls: list[int] = []

        def full(fd: int, data: bytes, offset: int) -> int:
            calls.append(len(data))
            if how == "nothing":
                return 0
            if how == "refused" or len(calls) > 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd, data[: len(data) // 2], offset)

        _refused_at_rollover(q, tmp_path, monkeypatch, call="pwrite", fake=full, item=b"c")
        assert [d.item for d in q.get_batch(5)] == [b"a", b"b", b"c"]


def _refused_at_rollover(
    q: Queue,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    call: str,
    fake: Callable[..., Any],
    item: bytes,
) -> None:
    """With ``os.<call>`` replaced by ``fake``, putting ``item`` (which needs a new chunk)
    raises ENOSPC and leaves no new chunk file; with the call restored, the put works."""
    real = getattr(os, call)
    monkeypatch.setattr(chunk.os, call, fake)
    with pytest.raises(OSError, match="No space") as info:
        q.put(item)
    assert info.value.errno == errno.ENOSPC
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("q")) == ["q00000"]
    monkeypatch.setattr(chunk.os, call, real)
    q.put(item)


def test_a_large_new_chunk_is_reserved_whole_and_written_out_in_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new chunk over WRITE_OUT bytes is reserved whole (posix_fallocate) but written out only
    to WRITE_OUT bytes; records past that part are stored and come back all the same."""
    real = os.pwrite
    writes: list[int] = []

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        writes.append(len(data))
        return real(fd, data, offset)

    monkeypatch.setattr(chunk.os, "pwrite", pwrite)
    items = [b"%06d" % i + b"x" * 94 for i in range(9000)]  # 9000 frames: over 1 MiB
    with Queue(tmp_path, serializer="raw", chunksize=10_000) as q:
        assert writes == [chunk.WRITE_OUT]
        assert (tmp_path / "q00000").stat().st_size >= 10_000 * 256  # reserved whole
        q.put_many(items)
    with Queue(tmp_path, serializer="raw", chunksize=10_000) as q:
        assert [d.item for d in q.get_batch(10_000)] == items


def test_enospc_reserving_a_large_new_chunk_falls_back_to_a_small_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """posix_fallocate refusing a new chunk's full size (a nearly full disk): the chunk is
    created at the least size instead and grows per record, so the put is stored."""
    items = [b"a" * 100] * 10_000
    with Queue(tmp_path, serializer="raw", chunksize=10_000) as q:
        q.put_many(items)  # the next chunk (10,000 frames of 132 bytes, and a margin) is large

        def full(fd: int, off: int, length: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(chunk.os, "posix_fallocate", full)
        q.put(b"b")
        assert (tmp_path / "q00001").stat().st_size <= chunk.WRITE_OUT
    with Queue(tmp_path, serializer="raw", chunksize=10_000) as q:
        assert [d.item for d in q.get_batch(20_000)] == [*items, b"b"]


def test_a_grown_chunk_is_reserved_as_a_new_one_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Growing a chunk writes zeros over its new space (past its old end, nothing it holds),
    fallocating what lies past WRITE_OUT bytes of it; every record comes back."""
    calls: list[tuple[str, int, int]] = []
    real_pwrite, real_fallocate = os.pwrite, os.posix_fallocate

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        calls.append(("pwrite", offset, len(data)))
        return real_pwrite(fd, data, offset)

    def fallocate(fd: int, offset: int, length: int) -> None:
        calls.append(("fallocate", offset, length))
        real_fallocate(fd, offset, length)

    items = [b"a" * 100, b"b" * 30_000, b"c" * 3_000_000]
    with Queue(tmp_path, serializer="raw", chunksize=4) as q:
        q.put(items[0])
        old = (tmp_path / "q00000").stat().st_size
        monkeypatch.setattr(chunk.os, "pwrite", pwrite)
        monkeypatch.setattr(chunk.os, "posix_fallocate", fallocate)
        q.put(items[1])  # grows the chunk: written out
        mid = (tmp_path / "q00000").stat().st_size
        assert mid > old
        assert calls == [("pwrite", old, mid - old)]
        calls.clear()
        q.put(items[2])  # grows it past WRITE_OUT bytes more: fallocated, the first part written
        end = (tmp_path / "q00000").stat().st_size
        assert calls == [("fallocate", mid, end - mid), ("pwrite", mid, chunk.WRITE_OUT)]
    with Queue(tmp_path, serializer="raw", chunksize=4) as q:
        assert [d.item for d in q.get_batch(5)] == items


@needs_root
def test_real_full_filesystem(tmp_path: Path) -> None:
    """On a real 256 KiB tmpfs: puts fail with ENOSPC once full; earlier records all come back."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        stored = 0
        with Queue(mnt / "q", serializer="raw", chunksize=50) as q:
            error = None
            while error is None:
                try:
                    q.put(os.urandom(1000))
                    stored += 1
                except OSError as exc:
                    error = exc
            assert error.errno == errno.ENOSPC
            assert stored > 50
            assert q.qsize() == stored
            q.ack(*q.get_batch(100))  # frees the first chunks
            q.sync()
            q.put(b"after the disk had room again")
        with Queue(mnt / "q", serializer="raw", chunksize=50) as q:
            assert q.qsize() == stored - 100 + 1
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    """Invalid fsync mode, chunksize or max_bytes raise ConfigError (a ValueError)."""
    with pytest.raises(ConfigError, match="fsync"):
        Queue(tmp_path, fsync="sometimes")
    with pytest.raises(ValueError, match="chunksize"):
        Queue(tmp_path, chunksize=0)
    with pytest.raises(ConfigError, match="max_bytes"):
        Queue(tmp_path, max_bytes=0)


def test_tempdir_on_another_filesystem_is_refused(tmp_path: Path) -> None:
    """tempdir must be on the spool's filesystem (as pqueue requires)."""
    if os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is on the same filesystem here")
    with pytest.raises(PathError, match="another filesystem"):
        Queue(tmp_path, tempdir="/dev/shm")


@pytest.mark.parametrize(
    ("options", "setting"),
    [({"max_record_bytes": 200}, "max_record_bytes"), ({"max_bytes": 4096}, "max_bytes")],
)
def test_put_many_refuses_an_oversized_item_before_storing_any(
    tmp_path: Path, options: dict[str, int], setting: str
) -> None:
    """put_many with one item too large stores none of them, bounded queue or not."""
    with Queue(tmp_path / "q", **options) as q:
        with pytest.raises(RecordTooLargeError, match=setting) as info:
            q.put_many([b"a", b"b", b"x" * 5000, b"c"])
        assert info.value.setting == setting
        assert q.qsize() == 0
        q.put_many([b"a", b"b"])
        assert q.qsize() == 2
