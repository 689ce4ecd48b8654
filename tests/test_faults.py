"""Faults injected into a Queue: a full disk, I/O errors, failing renames, a read-only directory.

Each fault surfaces as a typed error (``DiskFullError``/``StorageError``, both ``OSError``) or as
a logged, counted condition; nothing stored before is lost; the queue works again once the fault
clears. Real small filesystems and resource limits are used where the kernel allows it, the
fault-injecting wrapper of ``tests/helpers/faults.py`` elsewhere.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from spoolkit import Queue
from spoolkit.errors import DiskFullError, StorageError
from tests.helpers.faults import (
    EIO,
    ENOSPC,
    EROFS,
    Faults,
    LogEvents,
    creating,
    fill_until_full,
    log_events,
    needs_root,
    tmpfs,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Faults:
    """os calls that fail on demand under a directory."""
    return Faults(monkeypatch)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs, unmounted afterwards."""
    with tmpfs(tmp_path / "small", "256k") as mnt:
        yield mnt


@pytest.fixture
def events() -> Iterator[LogEvents]:
    """spoolkit's log events, as they are emitted."""
    with log_events() as handler:
        yield handler


def _drain(path: Path, **options: object) -> list[bytes]:
    with Queue(path, serializer="raw", **options) as q:  # type: ignore[arg-type]
        return [d.item for d in q.get_batch(1 << 20, timeout=0)]


# -- a full disk ---------------------------------------------------------------------------------


@needs_root
def test_full_tmpfs_put_raises_disk_full_error_and_keeps_every_record(small_fs: Path) -> None:
    """A real full tmpfs: put raises DiskFullError (ENOSPC); stored records stay; puts resume."""
    with Queue(small_fs / "q", serializer="raw", chunksize=50) as q:
        stored, error = fill_until_full(q.put, lambda i: os.urandom(1000))
        assert error.errno == errno.ENOSPC
        assert isinstance(error, OSError)
        assert "No space left" in str(error)
        assert "nothing of this call was stored" in str(error)
        assert error.path == q.path
        assert q.qsize() == len(stored)
        q.ack(*q.get_batch(100))  # frees the first two chunks
        q.sync()
        q.put(b"after")
    assert _drain(small_fs / "q", chunksize=50) == [*stored[100:], b"after"]


@needs_root
def test_put_many_on_a_full_tmpfs_says_how_many_items_were_stored(small_fs: Path) -> None:
    """put_many meeting ENOSPC raises DiskFullError whose .stored is the stored prefix."""
    items = [os.urandom(1000) for _ in range(400)]  # more than 256 KiB
    with Queue(small_fs / "q", serializer="raw", chunksize=20) as q:
        with pytest.raises(DiskFullError) as info:
            q.put_many(items)
        stored = info.value.stored
        assert stored is not None
        assert 0 < stored < len(items)
        assert f"the first {stored} of 400 items were stored" in str(info.value)
        assert q.qsize() == stored
    assert _drain(small_fs / "q", chunksize=20) == items[:stored]


_FSIZE_CHILD = """
import json, resource, signal, sys
from spoolkit import Queue
from spoolkit.errors import DiskFullError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))
n = 0
with Queue(sys.argv[1], serializer="raw", chunksize=1000) as q:
    try:
        while True:
            q.put(b"%06d" % n + b"x" * 994)
            n += 1
    except DiskFullError as exc:
        error = {"type": type(exc).__name__, "errno": exc.errno, "message": str(exc)}
    q.put_many([b"small"])  # the chunk still has room for what fits
print(json.dumps({"stored": n, "error": error}))
"""


def test_file_size_limit_is_a_disk_full_error_and_keeps_every_record(tmp_path: Path) -> None:
    """RLIMIT_FSIZE reached (EFBIG): put raises DiskFullError; the records put before remain."""
    run = subprocess.run(
        [sys.executable, "-c", _FSIZE_CHILD, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(run.stdout)
    assert out["error"]["type"] == "DiskFullError"
    assert out["error"]["errno"] == errno.EFBIG
    assert "EFBIG" in out["error"]["message"]
    n = out["stored"]
    assert n > 50
    expected = [b"%06d" % i + b"x" * 994 for i in range(n)] + [b"small"]
    assert _drain(tmp_path, chunksize=1000) == expected
    with Queue(tmp_path, serializer="raw", chunksize=1000) as q:  # no limit here: grows again
        q.put(b"y" * 300_000)


def test_enospc_reserving_a_new_chunk_is_a_disk_full_error(tmp_path: Path, faults: Faults) -> None:
    """ENOSPC writing out a new chunk at a rollover: DiskFullError, no stray file, puts resume."""
    with Queue(tmp_path, serializer="raw", chunksize=2) as q:
        q.put_many([b"a", b"b"])
        faults.fail("pwrite", ENOSPC, tmp_path)
        with pytest.raises(DiskFullError, match="No space left"):
            q.put(b"c")
        with pytest.raises(DiskFullError) as info:
            q.put_many([b"c", b"d"])
        assert info.value.stored == 0
        assert sorted(n for n in os.listdir(tmp_path) if n.startswith("q")) == ["q00000"]
        faults.clear()
        q.put(b"c")
    assert _drain(tmp_path, chunksize=2) == [b"a", b"b", b"c"]


@pytest.mark.parametrize(
    ("call", "size"),
    [("pwrite", 500_000), ("posix_fallocate", 2_000_000)],
    ids=["written-out", "fallocated"],
)
def test_eio_reserving_space_is_a_storage_error(
    tmp_path: Path, faults: Faults, call: str, size: int
) -> None:
    """Reserving a chunk's growth failing with EIO (written out up to WRITE_OUT bytes,
    fallocated past them): StorageError (not DiskFullError); nothing stored."""
    with Queue(tmp_path, serializer="raw", chunksize=1000) as q:
        q.put(b"before")
        faults.fail(call, EIO, tmp_path)
        with pytest.raises(StorageError) as info:
            q.put(b"x" * size)  # needs the chunk to grow
        assert not isinstance(info.value, DiskFullError)
        assert info.value.errno == errno.EIO
        assert q.qsize() == 1
        faults.clear()
        q.put(b"after")
    assert _drain(tmp_path, chunksize=1000) == [b"before", b"after"]


# -- fsync failures ------------------------------------------------------------------------------


def test_eio_from_fsync_on_put_says_the_record_is_stored(tmp_path: Path, faults: Faults) -> None:
    """fsync="always" and fsync EIO: put raises StorageError saying the record is stored."""
    with Queue(tmp_path, serializer="raw", fsync="always") as q:
        q.put(b"before")
        faults.fail("fsync", EIO, tmp_path)
        with pytest.raises(StorageError, match="stored and will be delivered") as info:
            q.put(b"unsynced")
        assert info.value.errno == errno.EIO
        with pytest.raises(StorageError, match="fsync failed"):
            q.put(b"unsynced too", durable=True)
        assert faults.hits["fsync"] >= 2
        faults.clear()
        q.put(b"after")  # the next fsync covers the records whose fsync failed
    assert _drain(tmp_path) == [b"before", b"unsynced", b"unsynced too", b"after"]


def test_eio_from_fsync_on_ack_keeps_the_ack(tmp_path: Path, faults: Faults) -> None:
    """fsync="always", fsync EIO on ack: StorageError; the record is acknowledged all the same."""
    with Queue(tmp_path, serializer="raw", fsync="always") as q:
        q.put_many([b"a", b"b"])
        first, second = q.get_batch(2)
        faults.fail("fsync", EIO, tmp_path)
        with pytest.raises(StorageError, match="acknowledgement is recorded"):
            q.ack(first)
        faults.clear()
        q.nack(second)
    assert _drain(tmp_path) == [b"b"]


def test_background_fsync_failure_is_logged_counted_and_retried(
    tmp_path: Path, faults: Faults, events: LogEvents
) -> None:
    """fsync="interval": a failing background fsync is logged, counted, and retried later."""
    failed = events.expect("background_fsync_failed")
    with Queue(tmp_path, serializer="raw", fsync_interval=0.01) as q:
        faults.fail("fsync", EIO, tmp_path)
        q.put(b"a")
        assert failed.wait(10)
        assert q.fsync_errors >= 1
        faults.clear()
        q.put(b"b")
        q.sync()  # what the failed fsyncs did not cover is fsynced now
    assert _drain(tmp_path) == [b"a", b"b"]


def test_fsync_failure_on_close_is_a_storage_error_and_loses_nothing(
    tmp_path: Path, faults: Faults
) -> None:
    """The final fsync of close failing: StorageError; the directory is released, records kept."""
    q = Queue(tmp_path, serializer="raw")
    q.put(b"a")
    faults.fail("fsync", EIO, tmp_path)
    with pytest.raises(StorageError, match="final fsync failed"):
        q.close()
    faults.clear()
    assert q.closed
    assert _drain(tmp_path) == [b"a"]


# -- meta.json replacement -----------------------------------------------------------------------


def _with_damaged_meta(path: Path) -> str:
    """A queue holding a, b whose meta.json is zeroed: the next open must rewrite it."""
    with Queue(path, serializer="raw") as q:
        q.put_many([b"a", b"b"])
        uid = q.uid
    meta = path / "meta.json"
    meta.write_bytes(bytes(meta.stat().st_size))
    return uid


@pytest.mark.parametrize(
    ("call", "code", "kind"),
    [
        ("replace", EIO, StorageError),
        ("replace", EROFS, StorageError),
        ("write", ENOSPC, DiskFullError),
        ("write", EIO, StorageError),
        ("fsync", EIO, StorageError),
    ],
)
def test_failing_metadata_replacement_on_open_loses_nothing(
    tmp_path: Path, faults: Faults, call: str, code: int, kind: type[StorageError]
) -> None:
    """meta.json cannot be replaced on open: a typed error, no temp file left, records kept."""
    uid = _with_damaged_meta(tmp_path)
    faults.fail(call, code, tmp_path)
    with pytest.raises(kind, match="cannot open") as info:
        Queue(tmp_path, serializer="raw")
    assert info.value.errno == code
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    faults.clear()
    with Queue(tmp_path, serializer="raw") as q:  # the lock was released; the rewrite works now
        assert q.uid == uid
        assert [d.item for d in q.get_batch(10, timeout=0)] == [b"a", b"b"]
    assert json.loads((tmp_path / "meta.json").read_bytes())["uid"] == uid


def test_failing_metadata_write_leaves_no_temp_file_in_tempdir(
    tmp_path: Path, faults: Faults
) -> None:
    """A failed meta.json write removes its temp file, also from a separate tempdir."""
    spool, tmp = tmp_path / "spool", tmp_path / "tmp"
    tmp.mkdir()
    faults.fail("write", ENOSPC, tmp)
    with pytest.raises(DiskFullError):
        Queue(spool, tempdir=str(tmp))
    assert os.listdir(tmp) == []
    faults.clear()
    with Queue(spool, tempdir=str(tmp)) as q:
        q.put(1)


def test_failing_metadata_write_on_a_fresh_directory(tmp_path: Path, faults: Faults) -> None:
    """Creating a spool whose meta.json cannot be written: StorageError; a later open works."""
    faults.fail("fsync", EIO, tmp_path)
    with pytest.raises(StorageError, match="cannot open"):
        Queue(tmp_path / "q")
    faults.clear()
    with Queue(tmp_path / "q") as q:
        q.put("x")
        assert q.get_nowait() == "x"


# -- a read-only directory -----------------------------------------------------------------------


def test_read_only_directory_after_open(tmp_path: Path, faults: Faults, events: LogEvents) -> None:
    """EROFS on create/rename/unlink: rollover puts fail typed, acks work, nothing is lost."""
    with Queue(tmp_path, serializer="raw", chunksize=2, fsync="always") as q:
        q.put_many([b"a", b"b", b"c", b"d"])  # q00000: a, b; q00001: c, d
        for call in ("rename", "unlink"):
            faults.fail(call, EROFS, tmp_path)
        faults.fail("open", EROFS, tmp_path, only=creating)
        with pytest.raises(StorageError, match="Read-only") as info:
            q.put(b"e")  # needs a new chunk file
        assert info.value.errno == errno.EROFS
        q.ack(*q.get_batch(2))  # q00000 can be neither retired nor removed: logged, not raised
        logged = {e["event"] for e in events.events}
        assert {"chunk_retire_failed", "chunk_unlink_failed"} <= logged
        faults.clear()
        q.put(b"e")
    assert _drain(tmp_path, chunksize=2) == [b"c", b"d", b"e"]


def test_read_only_directory_does_not_stop_background_fsync(
    tmp_path: Path, faults: Faults, events: LogEvents
) -> None:
    """fsync="interval": chunk files that cannot be removed leave the flusher running."""
    unlink_failed = events.expect("chunk_unlink_failed")
    with Queue(tmp_path, serializer="raw", chunksize=1, fsync_interval=0.01) as q:
        q.put_many([b"a", b"b", b"c"])
        faults.fail("rename", EROFS, tmp_path)  # no retiring: the chunk is deleted
        faults.fail("unlink", EROFS, tmp_path)
        q.ack(*q.get_batch(1))
        assert unlink_failed.wait(10)
        faults.clear()
        fsync_failed = events.expect("background_fsync_failed")
        faults.fail("fsync", EIO, tmp_path)
        # The flusher may have synced everything before the fault was armed: a new record
        # gives it something to fsync, so the failure proves it is still running.
        q.put(b"d")
        assert fsync_failed.wait(10)
        faults.clear()
    assert _drain(tmp_path, chunksize=1) == [b"b", b"c", b"d"]


_READ_ONLY_CHILD = """
import json, os, sys, tempfile
from spoolkit import Queue
from spoolkit.errors import StorageError
with tempfile.TemporaryDirectory() as warm:  # import everything lazily loaded, as root
    with Queue(warm, serializer="raw", chunksize=1, fsync="always") as q:
        q.put_many([b"x", b"y"])
        q.ack(*q.get_batch(2))
    try:
        Queue("/proc/spoolkit")
    except Exception:
        pass
os.setgroups([])
os.setgid(65534)
os.setuid(65534)  # from here on no privilege: permissions apply
path = sys.argv[1]
out = {}
with Queue(path, serializer="raw", chunksize=2, fsync="always") as q:
    q.put_many([b"a", b"b", b"c"])
    os.chmod(path, 0o500)  # read-only from here on
    try:
        q.put_many([b"d", b"e"])  # d fits in the open chunk; e needs a new file
    except StorageError as exc:
        out["put"] = [type(exc).__name__, exc.errno, exc.stored]
    q.ack(*q.get_batch(2))  # q00000 fully acknowledged: it cannot be renamed or removed
    out["ack"] = "ok"
    os.chmod(path, 0o700)
    q.put(b"f")
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_real_read_only_directory_as_an_unprivileged_user() -> None:
    """A real chmod 0500 spool directory (as uid 65534): typed error on put, acks work."""
    top = tempfile.mkdtemp(prefix="spoolkit-ro-")
    try:
        path = os.path.join(top, "q")
        os.chmod(top, 0o755)  # noqa: S103 - the unprivileged child must reach its directory
        os.mkdir(path, 0o700)
        os.chown(path, 65534, 65534)
        run = subprocess.run(
            [sys.executable, "-c", _READ_ONLY_CHILD, path],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            check=False,
        )
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        assert out == {"put": ["StorageError", errno.EACCES, 1], "ack": "ok"}
        assert _drain(Path(path), chunksize=2) == [b"c", b"d", b"f"]
    finally:
        shutil.rmtree(top)


@needs_root
@pytest.mark.parametrize("reopen", [False, True], ids=["same-queue", "reopened"])
def test_a_disk_full_episode_does_not_wedge_the_queue(tmp_path: Path, reopen: bool) -> None:
    """A real 8 MiB tmpfs filled by one large chunk, then drained: puts work again, at once and
    after a reopen (the grown chunk is rolled over, its space reclaimed, not grown further)."""
    record = b"r" * 8192
    with tmpfs(tmp_path / "small", "8m") as mnt:
        q = Queue(mnt / "q", serializer="raw", chunksize=1000)
        try:
            stored, _error = fill_until_full(q.put, lambda i: b"%06d" % i + record)
            assert len(stored) > 400  # one chunk grew to most of the disk
            got: list[bytes] = []
            while batch := q.get_batch(100, timeout=0):
                got += [d.item for d in batch]
                q.ack(*batch)
            assert got == stored
            if reopen:
                q.close()
                q = Queue(mnt / "q", serializer="raw", chunksize=1000)
            after = [b"after-%d" % i + record for i in range(50)]
            for item in after:
                q.put(item)  # DiskFullError here is the wedge
            assert [d.item for d in q.get_batch(100, timeout=0)] == after
        finally:
            q.close()


@needs_root
def test_a_nearly_full_disk_grows_a_chunk_by_what_the_record_needs(tmp_path: Path) -> None:
    """On a real 8 MiB tmpfs a chunk that cannot double still grows by one record's worth, so
    puts go on until the disk itself is full (not when half of it is)."""
    record = b"r" * 8192
    with (
        tmpfs(tmp_path / "small", "8m") as mnt,
        Queue(mnt / "q", serializer="raw", chunksize=1000) as q,
    ):
        q.put(b"x")  # the chunk file exists before the filler takes the rest
        filler = mnt / "filler"
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        filler.write_bytes(bytes(free - 3 * 1024 * 1024))  # about 3 MiB left for the queue
        stored, _error = fill_until_full(q.put, lambda i: b"%06d" % i + record)
        left = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        assert left < 64 * 1024 + len(record)  # the disk, not a doubling, was the limit
        assert [d.item for d in q.get_batch(1 << 20, timeout=0)] == [b"x", *stored]
