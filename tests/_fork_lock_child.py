"""A holder for tests/test_fork_locks.py: open a spool, fork a helper, wait to be killed.

argv: kind ("queue" or "spool"), path, how the helper is forked ("os", "mp" or "c"), and the
number of a pipe's read end: the helper blocks reading it (it lives until the test closes the
write end). Prints the helper's pid once the helper runs and the spool holds 3 records.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import sys
import warnings

from spoolkit import Queue, Spool


def _helper(fd: int) -> None:
    os.read(fd, 1)  # lives until the test closes the pipe


def main() -> None:
    kind, path, how, fd = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    spool: Queue | Spool
    if kind == "queue":
        spool = Queue(path)
        spool.put_many(["a", "b", "c"])
    else:
        spool = Spool(path, None, consume=True)
        for item in ("a", "b", "c"):
            spool.put(item)
    warnings.simplefilter("ignore", DeprecationWarning)  # forking with threads: the point
    if how == "mp":
        proc = multiprocessing.get_context("fork").Process(target=_helper, args=(fd,))
        proc.start()
        pid = proc.pid
    else:
        pid = ctypes.CDLL(None).fork() if how == "c" else os.fork()
        if pid == 0:
            _helper(fd)
            os._exit(0)
    print(pid, flush=True)
    os.read(fd, 1)  # killed -9 meanwhile


if __name__ == "__main__":
    main()
