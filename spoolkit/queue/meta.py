"""The spool directory's small files: ``meta.json`` (replaced atomically) and ``lock``."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from spoolkit.errors import PathError
from spoolkit.queue import locks
from spoolkit.queue.safe_open import open_nofollow, refuse_planted_links

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
    with contextlib.suppress(FileNotFoundError):  # a crashed run's (same pid), or a link
        os.unlink(tmp)
    # a name planted between the two calls is refused, never followed or written through
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
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
    """Return the parsed ``meta.json``, or None when it is missing or damaged.

    Raises:
        PathError: ``meta.json`` is a symlink.
    """
    try:
        fd = open_nofollow(os.path.join(directory, META), os.O_RDONLY)
    except FileNotFoundError:
        return None
    except PathError:
        raise
    except OSError:
        return None
    try:
        with open(fd, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_meta(directory: str, meta: dict[str, Any], tempdir: str | None = None) -> None:
    """Atomically replace ``meta.json``."""
    replace_atomically(directory, META, json.dumps(meta, sort_keys=True).encode(), tempdir)


class DirLock:
    """The exclusive lock on ``directory/lock``, which holds the owner's pid.

    A POSIX record lock (see :mod:`spoolkit.queue.locks` for why not ``flock``): the kernel
    drops it when the process dies, however it dies, and no forked child ever holds it.

    Args:
        directory: the spool directory.
        wait: seconds to wait for another process to release it (polled every 5 ms) before
            :class:`~spoolkit.errors.LockedError`; 0 refuses at once.

    Raises:
        LockedError: another process holds it (its ``pid`` is the live holder's).
        PathError: ``lock``, or another of the spool's own names in the directory (a chunk,
            ``meta.json``, ``dead``, ``lanes``...), is a symlink.
    """

    def __init__(self, directory: str, wait: float = 0.0) -> None:
        self.path = os.path.join(directory, LOCK)
        self._held = locks.take(self.path, wait=wait, owner=directory)
        try:  # a link planted in place of a chunk, meta.json, dead/... is refused at once
            refuse_planted_links(directory)
        except BaseException:
            self._held.release()
            raise

    def release(self) -> None:
        """Release the lock (idempotent)."""
        self._held.release()

    def forget(self) -> None:
        """In a forked child: nothing to release (the child never held the record lock, and
        the fork hook of :mod:`spoolkit.queue.locks` closed its copy of the file)."""
        self._held.release()


def holder_pid(directory: str) -> int | None:
    """The pid of the process holding a spool's lock, if any (the kernel's answer, else the
    pid written in the lock file)."""
    return locks.holder(os.path.join(directory, LOCK))[1]


def is_locked(directory: str) -> bool:
    """Whether some process holds the directory's lock (checked without taking it)."""
    return locks.holder(os.path.join(directory, LOCK))[0]


def is_held_live(directory: str) -> bool:
    """Whether a live process holds the directory's lock: an ``flock`` a dead holder's forked
    child inherited does not count (:class:`DirLock` takes such a directory)."""
    return locks.holder(os.path.join(directory, LOCK), live_only=True)[0]
