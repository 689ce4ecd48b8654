"""A fork while another thread holds one of spoolkit's locks never leaves the child stuck."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from spoolkit import Queue, Spool
from spoolkit.backends import lanes
from spoolkit.errors import LockedError
from spoolkit.testing import MemorySink

CHILD = Path(__file__).with_name("_fork_lock_child.py")


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _reopen(kind: str, path: Path) -> int:
    """Open the spool in a new process; return its backlog (or fail with the error seen)."""
    code = (
        "import sys\n"
        "from spoolkit import Queue, Spool\n"
        "from spoolkit.testing import MemorySink\n"
        f"path = {str(path)!r}\n"
        "if sys.argv[1] == 'queue':\n"
        "    with Queue(path) as q: print(q.qsize())\n"
        "else:\n"
        "    s = Spool(path, MemorySink()); print(s.stats().backlog); s.stop(drain=False)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, kind], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.parametrize("kind", ["queue", "spool"])
@pytest.mark.parametrize(
    "how",
    [pytest.param("os", marks=pytest.mark.slow), "mp", "c"],  # os.fork is what mp does
)
def test_a_helper_forked_by_a_killed_holder_does_not_keep_the_spool(
    tmp_path: Path, kind: str, how: str
) -> None:
    """A holder forks a helper (os.fork, a multiprocessing 'fork' child, or fork() from C) that
    keeps running; the holder is killed -9: a third process opens the spool and finds its
    records while the helper still lives."""
    path = tmp_path / "s"
    r, w = os.pipe()
    holder = subprocess.Popen(
        [sys.executable, str(CHILD), kind, str(path), how, str(r)],
        pass_fds=(r,),
        stdout=subprocess.PIPE,
        text=True,
    )
    os.close(r)
    helper = 0
    try:
        assert holder.stdout is not None
        helper = int(holder.stdout.readline())
        holder.kill()  # SIGKILL
        holder.wait(30)
        assert _alive(helper)
        assert _reopen(kind, path) == 3
        assert _alive(helper)  # the open did not wait for the helper to go
    finally:
        os.close(w)  # the helper reads EOF and exits
        if holder.poll() is None:
            holder.kill()
            holder.wait(30)
        if holder.stdout is not None:
            holder.stdout.close()
        deadline = time.monotonic() + 30
        while helper and _alive(helper) and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the helper's exit (it is not our child to wait for)


def test_a_dead_consumers_forked_helper_does_not_count_as_a_consumer(tmp_path: Path) -> None:
    """A consuming process forks a helper from C and is killed -9: a producer-only process
    sees no consumer (it does not hand its lanes over to nobody) while the helper lives."""
    path = tmp_path / "s"
    r, w = os.pipe()
    holder = subprocess.Popen(
        [sys.executable, str(CHILD), "spool", str(path), "c", str(r)],
        pass_fds=(r,),
        stdout=subprocess.PIPE,
        text=True,
    )
    os.close(r)
    try:
        assert holder.stdout is not None
        helper = int(holder.stdout.readline())
        producer = lanes.LanesBackend(path, consume=False)
        try:
            assert producer.consumer_alive()  # the holder consumes
            holder.kill()
            holder.wait(30)
            assert _alive(helper)
            assert not producer.consumer_alive()
        finally:
            producer.close()
    finally:
        os.close(w)
        if holder.poll() is None:
            holder.kill()
            holder.wait(30)
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_consumer_in_this_process_is_seen_without_losing_its_lock(tmp_path: Path) -> None:
    """Asking whether a consumer lives, from the consuming process itself, says yes and
    leaves its lock held (a record lock would go with any descriptor of the file closed)."""
    consumer = lanes.LanesBackend(tmp_path, consume=True)
    producer = lanes.LanesBackend(tmp_path, consume=False)
    try:
        assert producer.consumer_alive()
        assert producer.consumer_alive()
        code = (
            "from spoolkit.backends.lanes import LanesBackend\n"
            f"b = LanesBackend({str(tmp_path)!r}, consume=False)\n"
            "print(b.consumer_alive()); b.close()\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        assert out.stdout.strip() == "True"
    finally:
        producer.close()
        consumer.close()


def test_asking_who_holds_a_queue_keeps_the_lock_held(tmp_path: Path) -> None:
    """is_locked and holder_pid on a directory this process holds answer this pid and leave
    the lock held: another process still gets LockedError naming this process."""
    from spoolkit.queue import meta

    with Queue(tmp_path) as q:
        assert meta.is_locked(q.path)
        assert meta.holder_pid(q.path) == os.getpid()
        code = (
            "from spoolkit import Queue\n"
            "from spoolkit.errors import LockedError\n"
            f"try: Queue({str(tmp_path)!r})\n"
            "except LockedError as e: print(e.pid)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        assert out.stdout.strip() == str(os.getpid())


STAMPEDE = """
import os, sys
from spoolkit import Queue
from spoolkit.errors import LockedError

path, n = sys.argv[1], int(sys.argv[2])
go_r, go_w = os.pipe()
end_r, end_w = os.pipe()
pids = []
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        os.close(go_w)
        os.close(end_w)
        os.read(go_r, 1)  # every child starts at once: when the parent closes go_w
        try:
            q = Queue(path)
        except LockedError as exc:
            os.write(1, f"lost {exc.pid} {exc}\\n".encode())
            os._exit(0)
        os.write(1, f"won {os.getpid()}\\n".encode())
        os.read(end_r, 1)  # holds the queue until every other child has tried
        q.close()
        os._exit(0)
    pids.append(pid)
os.close(go_w)
for _ in range(n - 1):
    os.waitpid(-1, 0)  # the n - 1 losers exit at once; the winner waits for end_w
os.close(end_w)
os.waitpid(-1, 0)
"""


def test_every_loser_of_simultaneous_opens_names_the_winner(tmp_path: Path) -> None:
    """50 processes open one queue at once, 3 times over: every loser's LockedError names the
    winner's pid (never no pid: the winner may not have written it into the file yet)."""
    for round_ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", STAMPEDE, str(tmp_path / str(round_)), "50"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.splitlines()
        won = [int(line.split()[1]) for line in out if line.startswith("won ")]
        lost = [line for line in out if line.startswith("lost ")]
        assert len(won) == 1, out
        assert len(lost) == 49, out
        for line in lost:
            assert line.split()[1] == str(won[0]), line
            assert f"in use by process {won[0]};" in line, line


CAUGHT_WRITING = """
import os, sys
from spoolkit import Queue

def stop_before_writing_the_pid(fd, length):
    print("locked", flush=True)  # the lock is taken, the file still empty
    sys.stdin.read()

os.ftruncate = stop_before_writing_the_pid
Queue(sys.argv[1])
"""


def test_a_holder_that_has_not_written_its_pid_yet_is_named(tmp_path: Path) -> None:
    """The holder took the lock and has not written its pid yet (empty lock file): the loser's
    LockedError still names it (the kernel's answer, not the file's)."""
    with subprocess.Popen(
        [sys.executable, "-c", CAUGHT_WRITING, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdin is not None
        try:
            assert holder.stdout.readline().strip() == "locked"
            assert (tmp_path / "lock").read_bytes() == b""
            with pytest.raises(LockedError) as caught:
                Queue(tmp_path)
            assert caught.value.pid == holder.pid
            assert f"in use by process {holder.pid};" in str(caught.value)
        finally:
            holder.stdin.close()
            holder.wait(30)
