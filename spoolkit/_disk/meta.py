"""The spool directory's small files: ``meta.json`` (replaced atomically) and ``lock``."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from typing import Any

from spoolkit.errors import LockedError

META = "meta.json"
LOCK = "lock"
IDLE_MARK = "idle"  # a lane let go empty; whoever opens the directory next removes it
TMP_SUFFIX = ".tmp"


def fsync_dir(path: str) -> None:
    """``fsync`` a directory so that names created, renamed or removed in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(directory: str, name: str, data: bytes, tempdir: str | None = None) -> None:
    """Replace ``directory/name`` with ``data``: temp file, fsync, rename, fsync the directory.

    A crash at any point leaves either the old file or the new one, never a mix.
    """
    tmp = os.path.join(tempdir or directory, f".{name}.{os.getpid()}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:  # the old file is untouched: leave no temp file behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def read_meta(directory: str) -> dict[str, Any] | None:
    """Return the parsed ``meta.json``, or None when it is missing or damaged."""
    try:
        with open(os.path.join(directory, META), "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_meta(directory: str, meta: dict[str, Any], tempdir: str | None = None) -> None:
    """Atomically replace ``meta.json``."""
    replace_atomically(directory, META, json.dumps(meta, sort_keys=True).encode(), tempdir)


class DirLock:
    """An exclusive ``flock`` on ``directory/lock`` holding the owner's pid.

    The kernel drops the lock when the process dies, however it dies.

    Args:
        directory: the spool directory.
        wait: seconds to wait for another process to release it (polled every 5 ms) before
            :class:`~spoolkit.errors.LockedError`; 0 refuses at once.
    """

    def __init__(self, directory: str, wait: float = 0.0) -> None:
        self.path = os.path.join(directory, LOCK)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockedError(directory, holder_pid(directory)) from None
            time.sleep(0.005)  # another process's short hold (dead letters): poll for it
        # the pid is for error messages only: a full disk must not stop an open (to drain)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def forget(self) -> None:
        """In a forked child: close this process's copy of the descriptor.

        ``flock`` locks belong to the open file, which parent and child share: closing the
        child's copy leaves the parent holding the lock, and a child that outlives its parent
        no longer keeps the directory locked.
        """
        self.release()


def holder_pid(directory: str) -> int | None:
    """The pid written in a spool's lock file, if any."""
    try:
        with open(os.path.join(directory, LOCK), "rb") as f:
            return int(f.read().strip() or b"0") or None
    except (OSError, ValueError):
        return None


def is_locked(directory: str) -> bool:
    """Whether some process holds the directory's lock (checked without taking it)."""
    try:
        fd = os.open(os.path.join(directory, LOCK), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
