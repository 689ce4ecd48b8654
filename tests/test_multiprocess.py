"""Many real processes on one spool: os.fork, multiprocessing (fork and spawn), independent
processes opening one path, a producer killed -9 while the sink is down, a producer-only
process shipped by a separate consumer. Records go to a real local HTTP collector
(tests/helpers/collector.py); the programs run are in tests/apps/.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from spoolkit.queue.lanes import lane_paths
from spoolkit.tools import inspect as _inspect
from tests.helpers.collector import Collector, collector_running, wait_for

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "tests" / "apps"
DEADLINE = 60.0  # seconds for cross-process delivery on a busy 2-core machine


@dataclass
class Child:
    """A program the test started; its stdout and stderr go to files."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def stdout(self) -> str:
        """What it printed so far."""
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        """What it wrote on stderr so far."""
        return self.err.read_text(errors="replace")

    def wait_printed(self, text: str, timeout: float = DEADLINE) -> None:
        """Wait until it printed ``text`` (fail if it exits or the time is up first)."""
        printed = wait_for(lambda: text in self.stdout() or self.proc.poll() is not None, timeout)
        assert printed, f"{self.proc.args} never printed {text!r} in {timeout} s"
        assert text in self.stdout(), (
            f"{self.proc.args} never printed {text!r}; exit {self.proc.poll()}\n"
            f"stdout: {self.stdout()[-2000:]}\nstderr: {self.stderr()[-3000:]}"
        )

    def send(self, line: str) -> None:
        """Write a line to its stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = DEADLINE) -> int:
        """Close its stdin (the programs end then) and wait for it to exit."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout)

    def assert_clean_stderr(self) -> None:
        """No traceback and no logging error on its stderr."""
        text = self.stderr()
        assert "Traceback" not in text, text[-5000:]
        assert "Logging error" not in text, text[-5000:]


Start = Callable[..., Child]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start a Python program (stdin a pipe, output to files); kill -9 what is left after."""
    started: list[Child] = []

    def run(*args: str) -> Child:
        n = len(started)
        out, err = tmp_path / f"proc{n}.out", tmp_path / f"proc{n}.err"
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(
                [sys.executable, *args], cwd=ROOT, stdin=subprocess.PIPE, stdout=o, stderr=e
            )
        child = Child(proc, out, err)
        started.append(child)
        return child

    yield run
    for child in started:
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait(30)
        if child.proc.stdin is not None:
            child.proc.stdin.close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    """A running collector on a free 127.0.0.1 port."""
    with collector_running() as c:
        yield c


def rids_of(collector: Collector) -> set[str]:
    """The ``rid`` of each log record the collector received."""
    return {item["extra"]["rid"] for item in collector.items()}


def keys_of(collector: Collector) -> set[str]:
    """``<src>-<n>`` of each spool_proc.py record the collector received."""
    return {f"{item['src']}-{item['n']}" for item in collector.items()}


def wait_delivered(
    collector: Collector, expected: set[str], keys: Callable[[Collector], set[str]]
) -> None:
    """Wait (with the deadline) until every expected key arrived; fail naming the missing."""
    arrived = collector.wait_for(lambda c: expected <= keys(c), DEADLINE)
    missing = expected - keys(collector)
    assert arrived, f"{len(missing)} of {len(expected)} never delivered: {sorted(missing)[:20]}"


def fsck_clean(spool: Path) -> None:
    """fsck (what ``spoolkit fsck`` reports) of the spool and of each of its lanes: no damage,
    nothing pending."""
    for lane in lane_paths(str(spool)):
        report = _inspect.fsck(lane)
        assert report.ok, report
        assert not report.damage, report
        assert report.pending == 0, report


# -- os.fork -----------------------------------------------------------------------------------


def run_fork(tmp_path: Path, start: Start, collector: Collector, count: int, children: int) -> None:
    spool = tmp_path / "spool"
    parent = start(
        str(APPS / "fork_children.py"),
        *(str(spool), collector.url(), str(count), str(children), str(tmp_path)),
    )
    parent.wait_printed("]")
    statuses = json.loads(parent.stdout())
    assert statuses == [0] * children, f"children exited {statuses}"
    expected = {"p-before", *(f"p-{i}" for i in range(count))}
    expected |= {f"c{c}-{i}" for c in range(children) for i in range(count)}
    wait_delivered(collector, expected, rids_of)
    assert parent.finish() == 0
    parent.assert_clean_stderr()
    for c in range(children):
        err = (tmp_path / f"child-{c}.err").read_text()
        assert "Logging error" not in err, err[-5000:]
        assert "Traceback" not in err, err[-5000:]
    assert rids_of(collector) == expected, "records nobody logged"
    fsck_clean(spool)


def test_fork_children_exit_normally_every_record_delivered(
    tmp_path: Path, start: Start, collector: Collector
) -> None:
    """A SpoolHandler made before os.fork(): 4 children log 1000 records each and sys.exit(0),
    the parent logs 1000: all delivered, no logging error, fsck clean with nothing pending."""
    run_fork(tmp_path, start, collector, count=1000, children=4)


@pytest.mark.slow
def test_fork_many_children_many_records(
    tmp_path: Path, start: Start, collector: Collector
) -> None:
    """As the short fork test, with 8 children of 5000 records each."""
    run_fork(tmp_path, start, collector, count=5000, children=8)


# -- multiprocessing -----------------------------------------------------------------------------


def run_pool(
    tmp_path: Path, start: Start, collector: Collector, method: str, *, tasks: int, count: int
) -> None:
    spool = tmp_path / "spool"
    parent = start(
        str(APPS / "mp_children.py"),
        *(method, str(spool), collector.url(), str(tasks), str(count)),
    )
    parent.wait_printed("]", timeout=120)
    workers = json.loads(parent.stdout())
    assert workers, "no pool worker ran a task"
    expected = {f"parent-{i}" for i in range(count)}
    expected |= {f"t{t}-{i}" for t in range(tasks) for i in range(count)}
    wait_delivered(collector, expected, rids_of)
    assert parent.finish() == 0
    parent.assert_clean_stderr()
    assert rids_of(collector) == expected, "records nobody logged"
    fsck_clean(spool)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_pool_workers_records_delivered(
    tmp_path: Path, start: Start, collector: Collector, method: str
) -> None:
    """multiprocessing Pool workers (fork: the parent's handler inherited; spawn: a handler
    made per worker on the same path) log 300 records per task and end with os._exit: what
    they left is adopted and every record is delivered."""
    run_pool(tmp_path, start, collector, method, tasks=6, count=300)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_pool_many_tasks(
    tmp_path: Path, start: Start, collector: Collector, method: str
) -> None:
    """As the short multiprocessing test, with 40 tasks of 1000 records each."""
    run_pool(tmp_path, start, collector, method, tasks=40, count=1000)


# -- independent processes -----------------------------------------------------------------------


def spool_proc(start: Start, spool: Path, url: str, *options: str) -> Child:
    """Start tests/apps/spool_proc.py on ``spool`` with ``options``."""
    return start(str(APPS / "spool_proc.py"), str(spool), url, *options)


def own_lane(child: Child) -> str:
    """The lane a spool_proc.py process writes (the first it printed as held at open)."""
    line = next(x for x in child.stdout().splitlines() if x.startswith("open "))
    return str(json.loads(line[5:])[0])


def run_four_at_once(tmp_path: Path, start: Start, collector: Collector, count: int) -> None:
    spool = tmp_path / "spool"
    procs = [
        spool_proc(
            start, spool, collector.url(), f"--name=w{n}", f"--count={count}", "--wait-go", "--hold"
        )
        for n in range(4)
    ]
    for p in procs:  # all four hold the spool open before any puts
        p.wait_printed("open ")
    assert len({own_lane(p) for p in procs}) == 4, "two processes share a lane"
    for p in procs:
        p.send("go")
    for p in procs:
        p.wait_printed("done")
    expected = {f"w{n}-{i}" for n in range(4) for i in range(count)}
    wait_delivered(collector, expected, keys_of)
    for p in procs:
        assert p.finish() == 0, p.stderr()
        p.assert_clean_stderr()
    assert keys_of(collector) == expected
    fsck_clean(spool)


def test_four_processes_open_one_spool_at_once(
    tmp_path: Path, start: Start, collector: Collector
) -> None:
    """Four processes open one spool path at once (none refused), each writes a lane of its
    own, and every record of each is delivered."""
    run_four_at_once(tmp_path, start, collector, count=500)


@pytest.mark.slow
def test_four_processes_many_records(tmp_path: Path, start: Start, collector: Collector) -> None:
    """As the short four-process test, with 20000 records per process."""
    run_four_at_once(tmp_path, start, collector, count=20_000)


def progress_of(path: Path) -> set[str]:
    """The record keys a spool_proc.py process wrote to its progress file (complete lines)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return set()
    return set(text.split("\n")[:-1])  # a torn last line: its put may not have returned


def run_kills(
    tmp_path: Path, start: Start, collector: Collector, *, survivors: int, victims: int
) -> None:
    """``survivors`` producers put 500 records each and stay; ``victims`` producers put
    without end and are killed -9, one after the other, all while the collector refuses
    connections. Then it is back: every record whose put returned must arrive, and fsck
    finds the spool clean with nothing pending."""
    spool = tmp_path / "spool"
    collector.down("refuse")
    progress = {
        name: tmp_path / f"{name}.progress"
        for name in [*(f"s{n}" for n in range(survivors)), *(f"v{n}" for n in range(victims))]
    }

    def producer(name: str, count: int, *options: str) -> Child:
        return spool_proc(
            start, spool, collector.url(), f"--name={name}", f"--count={count}",
            f"--progress={progress[name]}", *options,
        )  # fmt: skip

    alive = [producer(f"s{n}", 500, "--hold") for n in range(survivors)]
    killed = [producer(f"v{n}", 10_000_000) for n in range(victims)]
    for n, victim in enumerate(killed):
        mark, stored = progress[f"v{n}"], 2000 * (n + 1)  # each killed at another point
        assert wait_for(lambda f=mark, k=stored: len(progress_of(f)) >= k, DEADLINE)
        os.kill(victim.proc.pid, signal.SIGKILL)
        assert victim.proc.wait(30) == -signal.SIGKILL
    for p in alive:
        p.wait_printed("done")
    assert not collector.records(), "delivered while the collector was down"
    collector.up()
    expected = set().union(*(progress_of(path) for path in progress.values()))
    assert len(expected) >= 500 * survivors + 2000 * victims
    wait_delivered(collector, expected, keys_of)
    for p in alive:
        assert p.finish() == 0, p.stderr()
        p.assert_clean_stderr()
    fsck_clean(spool)  # the adopter's recovery zeroed any record the kill cut short


def test_killed_producer_records_delivered_by_others_after_outage(
    tmp_path: Path, start: Start, collector: Collector
) -> None:
    """While the collector refuses connections, one of three producers is killed -9 after it
    stored records; once the collector is back the other two deliver the dead one's records
    (every record whose put returned), and their own."""
    run_kills(tmp_path, start, collector, survivors=2, victims=1)


@pytest.mark.slow
def test_several_killed_producers_during_outage(
    tmp_path: Path, start: Start, collector: Collector
) -> None:
    """As the short kill test, with three producers killed -9 at different points, two left."""
    run_kills(tmp_path, start, collector, survivors=2, victims=3)


def test_producer_only_processes_shipped_by_a_consumer_process(
    tmp_path: Path, start: Start, collector: Collector
) -> None:
    """Producer-only processes (consume=False) never deliver: one that wrote and exited before
    any consumer ran, and one writing while a consumer runs, are both shipped by a separate
    consuming process, the live producer's records while it still runs."""
    spool = tmp_path / "spool"
    never = collector.url("/from-a-producer")  # a producer-only process must not post here
    early = spool_proc(start, spool, never, "--name=early", "--count=500", "--no-consume")
    assert early.proc.wait(DEADLINE) == 0, early.stderr()
    early.assert_clean_stderr()
    shipper = spool_proc(start, spool, collector.url(), "--hold")
    shipper.wait_printed("open ")
    live = spool_proc(start, spool, never, "--name=live", "--count=1000", "--no-consume", "--hold")
    live.wait_printed("done")
    expected = {f"early-{i}" for i in range(500)} | {f"live-{i}" for i in range(1000)}
    wait_delivered(collector, expected, keys_of)
    assert live.proc.poll() is None, "the producer exited: its lane was not handed over live"
    assert live.finish() == 0, live.stderr()
    assert shipper.finish() == 0, shipper.stderr()
    for p in (live, shipper):
        p.assert_clean_stderr()
    assert {r.path for r in collector.records()} == {"/ingest"}
    assert keys_of(collector) == expected
    fsck_clean(spool)
