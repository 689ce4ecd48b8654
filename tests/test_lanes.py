"""Lanes: many processes on one spool path, adoption of lanes nobody holds, producer-only
handover, a Queue across os.fork, shared dead letters. Real child processes, killed for real."""

from __future__ import annotations

import functools
import gc
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spoolkit import Queue, Spool
from spoolkit.backends.lanes import LanesBackend
from spoolkit.errors import ClosedError, PermanentError
from spoolkit.queue.meta import is_locked, read_meta
from spoolkit.testing import MemorySink
from spoolkit.typing import Record

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "tests" / "apps_exit" / "lane_child.py"
DEADLINE = 60.0  # cross-process delivery on a busy 2-core machine
# Another process takes a lane (a plain Queue on its directory, waiting out a consumer's brief
# look at it) and prints how many records wait there.
TAKE_LANE = (
    "import sys; from spoolkit import Queue; "
    "q = Queue(sys.argv[1], lock_timeout=30); print(q.qsize()); q.close()"
)


def wait_for(predicate: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(0.02)
    return True


def lane(root: Path, n: int) -> str:
    """The path of lane ``n`` (0 is the spool directory itself), as LanesBackend names it."""
    real = os.path.realpath(root)
    return real if n == 0 else os.path.join(real, "lanes", str(n))


def own_lane(spool: Spool) -> str:
    """The lane ``spool`` writes to."""
    return held(spool)[0]


def held(spool: Spool) -> list[str]:
    """``spool.lanes_held()``."""
    return spool.lanes_held()


class Child:
    """``tests/apps_exit/lane_child.py`` in a real process, with a line reader on its stdout."""

    def __init__(self, *args: object) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))

    def line(self, timeout: float = DEADLINE) -> str:
        """The next line the child printed."""
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"child said nothing in {timeout} s: {self.stderr()}") from None

    def ready(self) -> str:
        """Wait for ``READY <lane>``; the lane."""
        word, _, path = self.line().partition(" ")
        assert word == "READY", f"{word} {path} {self.stderr()}"
        return path

    def tell(self, command: str) -> None:
        """Send one command line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def finish(self, command: str) -> None:
        """Send ``command`` (stop or exit) and wait for a clean exit."""
        self.tell(command)
        assert self.proc.wait(DEADLINE) == 0, self.stderr()
        assert "Traceback" not in self.stderr()

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(DEADLINE)

    def stderr(self) -> str:
        """What it wrote on stderr (only once it exited)."""
        if self.proc.poll() is None or self.proc.stderr is None:
            return "<still running>"
        return self.proc.stderr.read()


@pytest.fixture(name="spawn")
def fixture_spawn() -> Iterator[Callable[..., Child]]:
    """``spawn(*args)`` starts a lane child; every child is killed after the test."""
    children: list[Child] = []

    def spawn(*args: object) -> Child:
        child = Child(*args)
        children.append(child)
        return child

    yield spawn
    for child in children:
        child.kill()
        child.reader.join(DEADLINE)  # it reads until the end of the dead child's stdout
        for stream in (child.proc.stdin, child.proc.stdout, child.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(name="make_spool")
def fixture_make_spool(tmp_path: Path) -> Iterator[Callable[..., Spool]]:
    """``make_spool(sink, **options)``: a Spool on tmp_path/spool, stopped after the test."""
    made: list[Spool] = []

    def make(sink: Any, **options: Any) -> Spool:
        options.setdefault("batch_interval", 0)
        options.setdefault("workers", 1)
        spool = Spool(tmp_path / "spool", sink, **options)
        made.append(spool)
        return spool

    yield make
    for spool in made:
        spool.stop(drain=False, timeout=5)


def sink_lines(path: Path) -> list[tuple[str, str]]:
    """``(record id, item)`` of every line a child's FileSink appended."""
    if not path.exists():
        return []
    return [tuple(line.split(" ", 1)) for line in path.read_text().splitlines()]  # type: ignore[misc]


def items_in(path: Path) -> set[str]:
    """The items a child's FileSink delivered."""
    return {item for _, item in sink_lines(path)}


def names(prefix: str, count: int) -> set[str]:
    """The items a lane child puts."""
    return {f"{prefix}-{i}" for i in range(count)}


# -- a spool written before lanes existed ------------------------------------------------------


def test_a_spool_written_by_a_plain_queue_opens_as_lane_0_and_is_delivered(
    tmp_path: Path, make_spool: Callable[..., Spool]
) -> None:
    """Records a plain Queue left in the directory (one taken, never acknowledged) are lane 0's:
    a Spool counts them at open and delivers them under the queue's uid, no migration step."""
    path = tmp_path / "spool"
    q = Queue(path, chunksize=3)
    q.put_many([f"old-{i}" for i in range(10)])
    q.ack(*q.get_batch(2))
    q.get_batch(1)  # in flight when the queue closes: delivered again
    q.close()
    uid = read_meta(str(path))["uid"]  # type: ignore[index]

    sink = MemorySink()
    spool = make_spool(sink)
    assert held(spool) == [lane(path, 0)]
    assert spool.stats().backlog == 8
    spool.start()
    assert spool.flush(DEADLINE)
    assert sink.items == [f"old-{i}" for i in range(2, 10)]
    assert [r.id for r in sink.records] == [f"{uid}-{n}" for n in range(2, 10)]
    assert not (path / "lanes").exists()


def test_a_pqueue_directory_opens_as_lane_0_and_is_delivered(
    tmp_path: Path, make_spool: Callable[..., Spool]
) -> None:
    """A directory written by pqueue 0.1.7 itself (the oldest layout) is lane 0 of a Spool."""
    try:
        from tests.helpers.pqueue_dirs import pqueue_dir
    except ImportError:  # pragma: no cover - the pqueue fixtures are not in this checkout
        pytest.skip("tests/helpers/pqueue_dirs.py is not here")
    pqueue_dir("ints-12-taken-4", tmp_path / "spool")
    sink = MemorySink()
    spool = make_spool(sink)
    assert spool.stats().backlog == 8
    spool.start()
    assert spool.flush(DEADLINE)
    assert sink.items == list(range(4, 12))


# -- many writers ------------------------------------------------------------------------------


def test_two_spools_in_one_process_get_a_lane_each(make_spool: Callable[..., Spool]) -> None:
    """A second Spool on the same path in the same process takes lane 1 (the first is not
    taken over or refused); each delivers its own records, ids unique across the lanes."""
    first, second = MemorySink(), MemorySink()
    a = make_spool(first)
    b = make_spool(second)
    root = Path(a.path)
    assert held(a) == [lane(root, 0)]
    assert held(b) == [lane(root, 1)]
    a.start()
    b.start()
    a.put_many([f"a-{i}" for i in range(50)])
    b.put_many([f"b-{i}" for i in range(50)])
    assert a.flush(DEADLINE)
    assert b.flush(DEADLINE)
    assert first.items == [f"a-{i}" for i in range(50)]
    assert second.items == [f"b-{i}" for i in range(50)]
    ids = [r.id for r in first.records + second.records]
    assert len(set(ids)) == 100


def test_two_processes_and_this_one_write_one_spool_at_once(
    tmp_path: Path, spawn: Callable[..., Child], make_spool: Callable[..., Spool]
) -> None:
    """Two child processes and this one hold three different lanes of one path at the same
    time, none refused; everything is delivered and no record id repeats."""
    path = tmp_path / "spool"
    children = [spawn(path, tmp_path / f"sink{k}", "consume", 200, f"c{k}") for k in range(2)]
    child_lanes = [c.ready() for c in children]  # both alive now: neither has been told to end
    sink = MemorySink()
    spool = make_spool(sink)
    spool.start()
    spool.put_many([f"p-{i}" for i in range(200)])
    lanes = {*child_lanes, own_lane(spool)}
    assert len(lanes) == 3
    assert all(p == lane(path, 0) or p.startswith(lane(path, 0) + "/lanes/") for p in lanes)
    for child in children:
        child.finish("stop")
    assert spool.flush(DEADLINE)
    lines = sink_lines(tmp_path / "sink0") + sink_lines(tmp_path / "sink1")
    assert {item for _, item in lines} == names("c0", 200) | names("c1", 200)
    ids = [rid for rid, _ in lines] + [r.id for r in sink.records]
    assert len(ids) == 600
    assert len(set(ids)) == 600


# -- adoption ----------------------------------------------------------------------------------


@pytest.mark.parametrize("end", ["kill -9", "normal exit"])
def test_a_live_consumer_adopts_the_lane_of_a_process_that_ended(
    tmp_path: Path, spawn: Callable[..., Child], make_spool: Callable[..., Spool], end: str
) -> None:
    """A process whose sink was down ends (kill -9, or a normal exit that gives up after its
    exit_timeout) with records in its lane; a consuming Spool alive in this process adopts
    that lane, delivers every record, then lets the lane go, and another process can take it."""
    path = tmp_path / "spool"
    sink = MemorySink()
    spool = make_spool(sink)
    spool.start()
    (tmp_path / "sink.down").touch()
    child = spawn(path, tmp_path / "sink", "consume", 300, "dead", 0.5)
    child_lane = child.ready()
    assert child_lane != lane(path, 0)
    assert held(spool) == [lane(path, 0)]  # a lane held by a live process is not adopted
    if end == "kill -9":
        child.kill()
        assert child.proc.returncode == -signal.SIGKILL
    else:
        child.finish("exit")
    assert not items_in(tmp_path / "sink")

    assert wait_for(lambda: set(sink.items) >= names("dead", 300)), len(sink.items)
    assert set(sink.items) == names("dead", 300)
    assert spool.stats().dead_lettered == 0
    # once empty the adopted lane is let go: another process can take it
    assert wait_for(lambda: held(spool) == [lane(path, 0)], 20), held(spool)
    assert wait_for(lambda: not is_locked(child_lane), 20)
    taker = subprocess.run(
        [sys.executable, "-c", TAKE_LANE, child_lane],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert (taker.returncode, taker.stdout) == (0, "0\n"), taker.stderr


def test_a_spool_opened_later_adopts_lanes_nobody_holds_at_once(
    tmp_path: Path, spawn: Callable[..., Child], make_spool: Callable[..., Spool]
) -> None:
    """Two writers killed with -9 leave two lanes with records; a Spool opened afterwards holds
    both (its own lane is the first free one), counts their records in stats().backlog before
    it starts, and delivers them all."""
    path = tmp_path / "spool"
    children = []
    for k in range(2):  # one after the other: the first takes lane 0, the second lane 1
        children.append(spawn(path, tmp_path / f"sink{k}", "hold", 120, f"k{k}"))
        assert children[k].ready() == lane(path, k)
    for child in children:
        child.kill()

    sink = MemorySink()
    spool = make_spool(sink)
    assert held(spool) == [lane(path, 0), lane(path, 1)]
    assert spool.stats().backlog == 240
    spool.start()
    assert spool.flush(DEADLINE)
    assert sorted(sink.items) == sorted(names("k0", 120) | names("k1", 120))
    assert wait_for(lambda: held(spool) == [lane(path, 0)], 20), held(spool)


# -- producer-only -----------------------------------------------------------------------------


@pytest.fixture(name="no_auto_handoff")
def fixture_no_auto_handoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spools made in this test hand their lane over only when asked (flush, hand_over)."""
    monkeypatch.setattr(
        "spoolkit.backends.LanesBackend",
        functools.partial(LanesBackend, handoff_interval=3600.0),
    )


def workers_of(spool: Spool) -> int:
    """Worker threads the spool runs."""
    return len(spool._pool.slots) + spool._pool.live()


@pytest.mark.usefixtures("no_auto_handoff")
def test_producer_only_hands_its_lane_to_a_consumer_in_another_process(
    tmp_path: Path, spawn: Callable[..., Child], make_spool: Callable[..., Spool]
) -> None:
    """consume=False runs no worker; with a consumer alive in another process, flush() and
    hand_over() hand the lane over (True) and the producer writes to a fresh lane, while the
    consumer adopts the old one and delivers it."""
    path = tmp_path / "spool"
    consumer = spawn(path, tmp_path / "sink", "consume", 0, "none")
    assert consumer.ready() == lane(path, 0)
    mine = MemorySink()
    spool = make_spool(mine, consume=False)
    spool.start()
    assert workers_of(spool) == 0
    first = own_lane(spool)
    spool.put_many([f"first-{i}" for i in range(100)])
    assert spool.stats().backlog == 100

    assert spool.flush() is True
    second = own_lane(spool)
    assert second != first
    assert wait_for(lambda: items_in(tmp_path / "sink") >= names("first", 100))

    spool.put_many([f"second-{i}" for i in range(100)])
    backend = spool._backend
    assert isinstance(backend, LanesBackend)
    assert backend.hand_over() is True
    assert own_lane(spool) not in (second, lane(path, 0))
    assert wait_for(lambda: items_in(tmp_path / "sink") >= names("second", 100))
    assert items_in(tmp_path / "sink") == names("first", 100) | names("second", 100)
    assert backend.hand_over() is False  # nothing waits in the lane now: nothing to hand over
    assert mine.records == []
    assert workers_of(spool) == 0
    consumer.finish("stop")


def test_producer_only_hands_over_by_itself(
    tmp_path: Path, spawn: Callable[..., Child], make_spool: Callable[..., Spool]
) -> None:
    """Without flush(), a producer-only spool hands its lane over every handoff_interval while
    a consumer runs: the consumer delivers the records of a producer that keeps running."""
    path = tmp_path / "spool"
    consumer = spawn(path, tmp_path / "sink", "consume", 0, "none")
    consumer.ready()
    spool = make_spool(MemorySink(), consume=False)
    spool.start()
    spool.put_many([f"auto-{i}" for i in range(100)])
    assert wait_for(lambda: items_in(tmp_path / "sink") >= names("auto", 100))
    assert spool.stats().backlog == 0
    consumer.finish("stop")


@pytest.mark.usefixtures("no_auto_handoff")
def test_producer_only_keeps_its_lane_with_no_consumer_alive(
    make_spool: Callable[..., Spool],
) -> None:
    """With no consuming process, hand_over() and flush() return False, the lane stays held with
    its records, and no worker delivers anything; a consumer opened later delivers them."""
    sink = MemorySink()
    spool = make_spool(sink, consume=False)
    spool.start()
    spool.put_many(range(30))
    lane_before = held(spool)
    backend = spool._backend
    assert isinstance(backend, LanesBackend)
    assert backend.consumer_alive() is False
    assert backend.hand_over() is False
    assert spool.flush() is False
    assert held(spool) == lane_before
    assert spool.stats().backlog == 30
    assert workers_of(spool) == 0
    assert sink.records == []
    spool.stop()

    later = MemorySink()
    consumer = make_spool(later)
    consumer.start()
    assert consumer.flush(DEADLINE)
    assert later.items == list(range(30))


# -- os.fork and a plain Queue -----------------------------------------------------------------


def _snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def _in_child(work: Callable[[], dict[str, Any]], timeout: float = DEADLINE) -> dict[str, Any]:
    """Fork; run ``work`` in the child and return what it reported (JSON over a pipe)."""
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():  # 3.12+: a fork with threads running warns; it is the test
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_fd)
            os.write(write_fd, json.dumps(work()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    status = _reap(pid, timeout)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    assert status == 0, f"forked child failed (status {status})"
    return json.loads(data)  # type: ignore[no-any-return]


def _reap(pid: int, timeout: float) -> int:
    """Wait for child ``pid`` at most ``timeout`` s (then kill -9 it and fail); its exit code."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"forked child {pid} hung for {timeout} s")
        time.sleep(0.01)


def test_a_queue_in_a_forked_child_refuses_and_leaves_the_parents_files_alone(
    tmp_path: Path,
) -> None:
    """In a forked child a plain Queue's put and get raise ClosedError naming the parent pid;
    closing and collecting it there writes nothing; the parent's Queue keeps working and
    reopens with no damage."""
    path = tmp_path / "q"
    q = Queue(path, chunksize=4)
    q.put_many(range(10))
    q.ack(*q.get_batch(3))
    before = _snapshot(path)

    def child() -> dict[str, Any]:
        report = {}
        for name, call in (("put", lambda: q.put("from child")), ("get", lambda: q.get(False))):
            try:
                call()
                report[name] = "returned"
            except ClosedError as exc:
                report[name] = str(exc)
        q.close()
        gc.collect()
        return report

    report = _in_child(child)
    parent = str(os.getpid())
    for name in ("put", "get"):
        assert f"process {parent} " in report[name], report[name]
    assert _snapshot(path) == before
    q.put("parent")
    assert [d.item for d in q.get_batch(100)] == [3, 4, 5, 6, 7, 8, 9, "parent"]
    q.close()
    again = Queue(path, chunksize=4)
    assert again.recovery.damaged_regions == 0
    assert again.recovery.skipped_chunks == 0
    assert [d.item for d in again.get_batch(100)] == [3, 4, 5, 6, 7, 8, 9, "parent"]
    again.close()


def test_a_fork_while_another_thread_puts_never_deadlocks_the_child(tmp_path: Path) -> None:
    """Forking again and again while a thread puts and takes in a loop: every child gets a
    prompt ClosedError from the parent's Queue, can open a Queue of its own, and exits 0."""
    q = Queue(tmp_path / "q", chunksize=8)
    stop = threading.Event()
    done = [0]

    def churn() -> None:
        while not stop.is_set():
            q.put_many(range(5))
            q.put("x" * 3000)
            q.ack(*q.get_batch(6))
            done[0] += 1

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        for k in range(12):
            assert wait_for(lambda n=done[0]: done[0] > n, 30)  # type: ignore[misc]

            def child(k: int = k) -> dict[str, Any]:
                try:
                    q.put("from child")
                except ClosedError:
                    refused = True
                else:
                    refused = False
                mine = Queue(tmp_path / f"child{k}")
                mine.put(k)
                got = mine.get(timeout=5)
                mine.close()
                return {"refused": refused, "got": got}

            assert _in_child(child, timeout=30) == {"refused": True, "got": k}
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert q.qsize() == 0
    q.close()


# -- dead letters ------------------------------------------------------------------------------


class Refusing:
    """Refuses every record for good while ``refuse`` is set; keeps the others."""

    def __init__(self) -> None:
        self.refuse = True
        self.inner = MemorySink()

    def write(self, batch: list[Record]) -> None:
        if self.refuse:
            raise PermanentError("refused")
        self.inner.write(batch)


def test_dead_letters_are_shared_by_every_process_and_requeue_under_their_ids(
    tmp_path: Path, spawn: Callable[..., Child], make_spool: Callable[..., Spool]
) -> None:
    """Two processes dead-letter records into one spool; dead_letters.list() in either shows
    both's; requeue() puts them all back (the other process's into its lane, which this one
    adopts) under the same record ids, and they are delivered."""
    path = tmp_path / "spool"
    child = spawn(path, tmp_path / "sink", "dead", 20, "child")
    child.ready()
    sink = Refusing()
    spool = make_spool(sink)
    spool.start()
    spool.put_many([f"parent-{i}" for i in range(20)])
    assert spool.flush(DEADLINE)
    everything = names("child", 20) | names("parent", 20)

    letters = spool.dead_letters.list()
    assert {d.record.item for d in letters} == everything
    child.tell("list")
    word, _, data = child.line().partition(" ")
    assert word == "DEAD"
    assert sorted(map(tuple, json.loads(data))) == sorted((d.id, d.record.item) for d in letters)
    child.finish("exit")

    sink.refuse = False
    assert spool.dead_letters.requeue() == 40
    assert spool.flush(DEADLINE)
    assert wait_for(lambda: len(sink.inner.records) >= 40)
    assert {(r.id, r.item) for r in sink.inner.records} == {(d.id, d.record.item) for d in letters}
    assert len(spool.dead_letters) == 0


def test_wait_does_not_spin_once_its_own_lane_was_taken_over(tmp_path: Path) -> None:
    """A Queue in this process taking the backend's own lane over: wait() keeps its timeout and
    waits instead of calling the closed lane again and again (it spun at 100% CPU before)."""
    backend = LanesBackend(str(tmp_path / "s"))
    try:
        own = backend._own
        assert own is not None
        calls = 0
        real = own.wait

        def counting(timeout: float | None) -> bool:
            nonlocal calls
            calls += 1
            return real(timeout)

        own.wait = counting  # type: ignore[method-assign]
        with Queue(own.path):  # takes the lane over: the backend's copy is closed
            finished = threading.Event()
            result: list[bool] = []
            waiter = threading.Thread(
                target=lambda: (result.append(backend.wait(0.3)), finished.set()), daemon=True
            )
            waiter.start()
            assert finished.wait(30), "wait() ignored its timeout"
        assert result == [False]
        assert calls <= 3
    finally:
        backend.close()
