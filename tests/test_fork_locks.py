"""A fork while another thread holds one of spoolkit's locks never leaves the child stuck."""

from __future__ import annotations

import os
import threading
import time
import warnings
from pathlib import Path

from spoolkit import Spool
from spoolkit.backends import lanes
from spoolkit.testing import MemorySink


def _child_puts_and_exits(spool: Spool) -> int:
    """Fork; the child puts one record and exits 0 (or 3 if the put raised); return its code,
    or -1 if it is still running 30 s later (it is then killed)."""
    with warnings.catch_warnings():  # 3.12+ warns about forking with threads: that is the test
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            spool.put("from the child")
        except BaseException:
            code = 3
        os._exit(code)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)  # polling a child's exit, not synchronising with it
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -1


def test_a_fork_while_a_thread_opens_a_lane_does_not_hang_the_child(tmp_path: Path) -> None:
    """A thread of the parent holds the lane-opening lock (as while adopting a lane) when the
    process forks: the fork waits for it, and the child's first put takes a lane and returns."""
    spool = Spool(tmp_path / "s", None, consume=False)  # nothing delivers the child's record
    spool.start()
    holding = threading.Event()

    def open_a_lane() -> None:
        with lanes._OPENING:
            holding.set()
            time.sleep(0.3)  # a lane being opened: the fork happens meanwhile

    opener = threading.Thread(target=open_a_lane)
    opener.start()
    try:
        assert holding.wait(10)
        assert _child_puts_and_exits(spool) == 0
    finally:
        opener.join()
        spool.stop()
    reopened = Spool(tmp_path / "s", MemorySink())
    try:
        assert reopened.stats().backlog == 1  # the child's record, in a lane of its own
    finally:
        reopened.stop(drain=False)
