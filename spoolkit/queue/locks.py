"""The spool's lock files: POSIX record locks, which no forked process inherits.

Why record locks (``fcntl(F_SETLK)``, what :func:`fcntl.lockf` takes) and not ``flock``: an
``flock`` belongs to the open file, which ``fork()`` shares with the child. A holder that forks
a helper (a daemon, a ``multiprocessing`` child, or a C library calling ``fork()`` without
``exec``) and is then killed would leave the helper holding the spool, and nobody could open it
while the helper lives. Python-level forks can close the child's copy (``os.register_at_fork``),
but a ``fork()`` from C runs no Python hook. A record lock belongs to the *process*: a child
never holds its parent's, whichever way it was forked, and it goes when its process dies.

Their one trap: a process loses its record lock on a file as soon as it closes *any*
descriptor of that file. So this module is the only code that opens a lock file, and it keeps
a registry of the lock files this process holds: a question about one of those (is it locked,
by whom) is answered from the registry, without opening the file. Code outside spoolkit must
not open and close a spool's ``lock`` or ``consumers.lock`` in a process that holds the spool.

The kernel also names a record lock's holder (``F_GETLK``), so :class:`LockedError` names the
live holder's pid, read from the kernel at the moment the lock was refused: never a stale pid,
never an empty one while the winner is still writing its pid into the file.

Older spoolkit versions lock with ``flock`` only. So that a process of an older version and one
of this version never hold one lane at once (during a rolling upgrade), a holder also takes the
``flock``. An ``flock`` held without a record lock is either an older version's (the
directory is refused) or one that a dead holder of this version left to a child forked from C
(the pid in the file carries this version's mark and is dead: the directory is taken all the
same, with the record lock only).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import threading
import time

from spoolkit.errors import LockedError
from spoolkit.queue.safe_open import check_not_symlink, open_nofollow

__all__ = ["Held", "consumer_alive", "holder", "take", "take_shared"]

_BUSY = (errno.EACCES, errno.EAGAIN, errno.EWOULDBLOCK)
# struct flock on Linux (with 64-bit file offsets, as CPython builds): l_type, l_whence,
# l_start, l_len, l_pid; passed with room to spare for the C struct's trailing padding
_FLOCK = struct.Struct("@hhqqi")
_GUARD = threading.Lock()  # held around every open and close of a lock file in this process
_HELD: dict[tuple[int, int], Held] = {}  # (st_dev, st_ino) -> the lock this process holds
MARK = b" \n"
"""How a holder of this version ends the pid it writes (``"1234 \\n"``): an older spoolkit
reads the pid as before (it strips the blank), and this version tells its own lock files, whose
holder held a record lock too, from an older version's."""


class Held:
    """A lock file this process holds (shared holds of one file count as one ``Held``)."""

    __slots__ = ("count", "fd", "key")

    def __init__(self, fd: int, key: tuple[int, int]) -> None:
        self.fd = fd
        self.key = key
        self.count = 1

    def release(self) -> None:
        """Let go of this hold (idempotent per holder): the last one closes the file."""
        with _GUARD:
            if self.fd < 0:
                return
            self.count -= 1
            if self.count > 0:
                return
            if _HELD.get(self.key) is self:
                del _HELD[self.key]
            fd, self.fd = self.fd, -1
            os.close(fd)  # drops the record lock and the flock


def _key(path: str) -> tuple[int, int] | None:
    """The identity of the file at ``path`` (None when missing); a symlink is refused."""
    check_not_symlink(path)
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _posix_holder(fd: int) -> tuple[bool, int | None]:
    """Whether another process holds a record lock on ``fd``'s file, and its pid (from the
    kernel; None when it is in another pid namespace)."""
    query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0) + bytes(16)
    answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    kind, _whence, _start, _len, pid = _FLOCK.unpack_from(answer)
    if kind == fcntl.F_UNLCK:
        return False, None
    return True, pid if pid > 0 else None


def _recorded_pid(fd: int) -> int | None:
    """The pid written in the lock file (read through ``fd``, never by opening it again)."""
    try:
        return int(os.pread(fd, 32, 0).strip() or b"0") or None
    except (OSError, ValueError):
        return None


def _orphaned_flock(fd: int) -> bool:
    """Whether the ``flock`` on ``fd``'s file (held by someone, with no record lock) is one a
    dead holder of this version left to a forked child: the file ends with this version's
    mark (:data:`MARK`) after a pid no live process has. An older spoolkit writes no mark."""
    try:
        data = os.pread(fd, 32, 0)
    except OSError:
        return False
    pid = _recorded_pid(fd)
    return data.endswith(MARK) and pid is not None and not _alive(pid)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a killed process not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError), open(f"/proc/{pid}/stat", "rb") as f:
        if f.read().rpartition(b")")[2].split()[0] == b"Z":
            return False
    return True


def _try_take(path: str) -> Held | tuple[bool, int | None]:
    """One attempt (with :data:`_GUARD` held): the lock, or (whether the holder let go in the
    meantime, the holder's pid)."""
    key = _key(path)
    if key is not None and key in _HELD:
        return False, os.getpid()  # another store of this process holds it
    fd = open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        try:
            if exc.errno not in _BUSY:
                raise
            locked, pid = _posix_holder(fd)
            return not locked, pid or _recorded_pid(fd)
        finally:
            os.close(fd)  # this process holds no lock on the file: closing drops nothing
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what an older spoolkit checks
    except OSError as exc:
        if exc.errno not in _BUSY or not _orphaned_flock(fd):
            recorded = _recorded_pid(fd)
            os.close(fd)
            if exc.errno not in _BUSY:
                raise
            return False, recorded  # an older spoolkit's process holds it
        # else: a dead holder's forked child still has its flock: the directory is free
    # the pid is for people (cat lock) and older tools; a full disk must not stop an open
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.write(fd, b"%d%s" % (os.getpid(), MARK))  # a fresh descriptor: at offset 0
    st = os.fstat(fd)
    held = Held(fd, (st.st_dev, st.st_ino))
    _HELD[held.key] = held
    return held


def take(path: str, *, wait: float = 0.0, owner: str | None = None) -> Held:
    """Take the exclusive lock on the file ``path`` (created ``0600`` if missing).

    Args:
        path: the lock file.
        wait: seconds to wait for the holder to let go (polled every 5 ms); 0 refuses at once.
        owner: the directory named in :class:`LockedError` (default: ``path``'s).

    Raises:
        LockedError: another process (or another store of this one) holds it; ``pid`` is the
            live holder's.
        PathError: ``path`` is a symlink.
        OSError: the file could not be opened or locked.
    """
    deadline = time.monotonic() + wait
    let_go = 0
    while True:
        with _GUARD:
            got = _try_take(path)
        if isinstance(got, Held):
            return got
        freed, pid = got
        if freed and let_go < 1000:  # the holder let go between our two questions: again
            let_go += 1
            continue
        if time.monotonic() >= deadline:
            raise LockedError(owner or os.path.dirname(path), pid)
        time.sleep(0.005)  # another process's short hold (dead letters): poll for it


def take_shared(path: str) -> Held:
    """Take a shared lock on ``path`` (created ``0600`` if missing): one of many holders.

    Raises:
        PathError: ``path`` is a symlink.
        OSError: the file could not be opened or locked.
    """
    with _GUARD:
        key = _key(path)
        held = _HELD.get(key) if key is not None else None
        if held is not None:
            held.count += 1
            return held
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # nobody takes it exclusively
        except BaseException:
            os.close(fd)
            raise
        for _ in range(100):  # an older spoolkit's probe holds it exclusively for a moment
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except OSError:
                time.sleep(0.001)
        st = os.fstat(fd)
        held = Held(fd, (st.st_dev, st.st_ino))
        _HELD[held.key] = held
        return held


def holder(path: str, *, live_only: bool = False) -> tuple[bool, int | None]:
    """Whether some process holds the lock file ``path``, and its pid if known.

    Answered without taking the lock. With ``live_only``, an ``flock`` that a dead holder's
    forked child inherited does not count (the directory can be taken).
    """
    with _GUARD:
        try:
            key = _key(path)
        except OSError:  # a symlink: nobody holds it (opening the spool refuses it)
            return False, None
        if key is None:
            return False, None
        if key in _HELD:
            return True, os.getpid()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False, None
        try:  # this process holds no lock on the file: closing fd drops nothing
            return _probe(fd, live_only)
        finally:
            os.close(fd)


def _probe(fd: int, live_only: bool) -> tuple[bool, int | None]:
    locked, pid = _posix_holder(fd)
    if locked:
        return True, pid or _recorded_pid(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in _BUSY:
            raise
        if live_only and _orphaned_flock(fd):
            return False, None
        return True, _recorded_pid(fd)
    return False, None


def consumer_alive(path: str) -> bool:
    """Whether some process holds a shared lock on ``path`` (``consumers.lock``).

    Only record locks count: an ``flock`` there may be a dead consumer's forked child's.
    """
    with _GUARD:
        try:
            key = _key(path)
        except OSError:
            return False
        if key is None:
            return False
        if key in _HELD:
            return True
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            return _posix_holder(fd)[0]
        finally:
            os.close(fd)


def _before_fork() -> None:
    _GUARD.acquire()


def _after_fork_parent() -> None:
    _GUARD.release()


def _after_fork_child() -> None:
    """The child holds none of the parent's record locks: close its copies of the files
    (which also lets go of the ``flock`` the parent keeps), so that a child outliving its
    parent holds nothing, and nothing of the parent's is closed later by number."""
    for held in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(held.fd)
        held.fd = -1
    _HELD.clear()
    _GUARD.release()


# registered before the stores' hooks (this module is imported first), so its "before" runs
# after theirs: a store closing under its own lock takes _GUARD inside it, never the reverse
os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child
)
