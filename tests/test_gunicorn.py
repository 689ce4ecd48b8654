"""gunicorn ``--preload`` with sync workers: a SpoolHandler made in the master before the fork.

Real gunicorn, real HTTP requests, a real collector (tests/helpers/collector.py), a worker
killed with -9 mid-run, a graceful stop (SIGTERM to the master). Every request that got a 200
answer logged its record before answering: that record must reach the collector.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from gunicorn.config import KNOWN_SETTINGS

from spoolkit.queue.lanes import lane_paths
from spoolkit.tools import inspect as _inspect
from tests.helpers.collector import Collector, collector_running, wait_for
from tests.helpers.procs import dying_with_this_process

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.gunicorn_app:app"
WORKERS = 3
DELIVERY_DEADLINE = 60.0  # seconds for cross-process delivery on a busy 2-core machine
STOP_DEADLINE = 45.0  # seconds for a graceful stop (the handlers' close_timeout is 5 s)
DUMP_SIGNAL = signal.SIGRTMIN + 3  # tests/apps/gunicorn_app.py dumps every thread's stack


def _quiet_flags() -> list[str]:
    """gunicorn options that keep it from writing outside the test (gunicorn 25+ opens a
    control socket in ~/.gunicorn, which concurrent test runs would share)."""
    flags = {flag for setting in KNOWN_SETTINGS for flag in setting.cli or ()}
    return ["--no-control-socket"] if "--no-control-socket" in flags else []


@pytest.fixture
def collector() -> Iterator[Collector]:
    """A running collector on a free 127.0.0.1 port."""
    with collector_running() as c:
        yield c


def children_of(pid: int) -> set[int]:
    """The live child processes of ``pid``, read from /proc (no zombies)."""
    found: set[int] = set()
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as f:
                found.update(int(p) for p in f.read().split())
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return {p for p in found if _state(p) not in ("Z", None)}


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return None


@dataclass
class Gunicorn:
    """A running gunicorn master and what the test learnt about it."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    spool: Path
    answered: dict[str, int] = field(default_factory=dict)  # request id -> worker pid
    failed: list[str] = field(default_factory=list)  # request ids without a 200 answer
    lock: threading.Lock = field(default_factory=threading.Lock)

    def workers(self) -> set[int]:
        """The master's live worker processes."""
        return children_of(self.proc.pid)

    def log_text(self) -> str:
        """gunicorn's log (its stdout and stderr) so far."""
        return self.log.read_text(errors="replace")

    def request(self, client: httpx.Client, rid: str) -> None:
        """GET ``/?rid``; note who answered 200, or that nobody did."""
        try:
            response = client.get(f"http://127.0.0.1:{self.port}/?{rid}")
        except httpx.TransportError:
            ok = False
        else:
            ok = response.status_code == 200
        with self.lock:
            if ok:
                echoed, pid = response.text.split()
                assert echoed == rid
                self.answered[rid] = int(pid)
            else:
                self.failed.append(rid)

    def drive(self, rids: Sequence[str], clients: int = 4) -> list[threading.Thread]:
        """Send the requests from ``clients`` threads at once; return the started threads."""

        def run(part: Sequence[str]) -> None:
            with httpx.Client(timeout=30) as client:
                for rid in part:
                    self.request(client, rid)

        threads = [
            threading.Thread(target=run, args=(rids[i::clients],), daemon=True)
            for i in range(clients)
        ]
        for t in threads:
            t.start()
        return threads

    def send(self, rids: Sequence[str], clients: int = 4) -> None:
        """Send the requests and wait for every answer."""
        for t in self.drive(rids, clients):
            t.join(120)
            assert not t.is_alive(), "a client thread hung"

    def kill_worker(self) -> int:
        """kill -9 one worker that answered requests; wait until gunicorn replaced it."""
        with self.lock:
            answered_by = set(self.answered.values())
        victims = sorted(answered_by & self.workers())
        assert victims, "no live worker has answered a request yet"
        victim = victims[0]
        os.kill(victim, signal.SIGKILL)
        respawned = wait_for(
            lambda: victim not in self.workers() and len(self.workers()) == WORKERS, 30
        )
        assert respawned, f"gunicorn did not replace worker {victim}: {self.workers()}"
        return victim

    def stop(self) -> None:
        """Graceful stop: SIGTERM to the master, wait for it and its workers to exit.

        A worker still there after STOP_DEADLINE is hung: its threads' stacks are dumped into
        gunicorn's log (tests/apps/gunicorn_app.py's DUMP_SIGNAL) and the test fails with them.
        """
        workers = self.workers()
        self.proc.send_signal(signal.SIGTERM)
        if not wait_for(lambda: self.proc.poll() is not None, STOP_DEADLINE):
            hung = self.workers() & workers
            for pid in hung:
                os.kill(pid, DUMP_SIGNAL)
            wait_for(lambda: self.log_text().count("most recent call first") >= len(hung), 10)
            pytest.fail(
                f"gunicorn did not stop in {STOP_DEADLINE} s; workers still there: {hung}\n"
                f"{self.log_text()[-20000:]}"
            )
        rc = self.proc.returncode
        assert rc == 0, f"gunicorn exited with {rc}:\n{self.log_text()[-3000:]}"


@contextmanager
def gunicorn(
    tmp_path: Path,
    sink_url: str,
    close_timeout: float | None = None,
    extra: Sequence[str] = (),
    *,
    producer_only: bool = False,
) -> Iterator[Gunicorn]:
    """gunicorn --preload with WORKERS sync workers serving the logging app on a free port."""
    spool = tmp_path / "spool"
    log = tmp_path / "gunicorn.log"
    env = {**os.environ, "SPOOLKIT_TEST_SPOOL": str(spool), "SPOOLKIT_TEST_SINK": sink_url}
    if close_timeout is not None:
        env["SPOOLKIT_TEST_CLOSE_TIMEOUT"] = str(close_timeout)
    if producer_only:
        env["SPOOLKIT_TEST_PRODUCER_ONLY"] = "1"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            dying_with_this_process(  # its workers follow it: they watch their parent
                [
                    *(sys.executable, "-m", "gunicorn", "--preload", "--workers", str(WORKERS)),
                    *("--worker-class", "sync", "--bind", "127.0.0.1:0", "--timeout", "60"),
                    *("--graceful-timeout", "60", *_quiet_flags(), *extra, APP),
                ]
            ),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Gunicorn(proc, 0, log, spool)
    try:
        listening = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
        assert wait_for(lambda: listening.search(server.log_text()) or proc.poll() is not None, 60)
        found = listening.search(server.log_text())
        assert found, f"gunicorn did not start:\n{server.log_text()}"
        server.port = int(found.group(1))
        assert wait_for(lambda: len(server.workers()) == WORKERS, 60), server.log_text()
        yield server
    finally:
        if proc.poll() is None:  # the test failed before its stop: leave nothing running
            for pid in server.workers():
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait(30)


def rids_of(collector: Collector) -> set[str]:
    """The request ids of the records the collector received."""
    return {item["extra"]["rid"] for item in collector.items()}


def assert_spool_clean(spool: Path) -> None:
    """fsck of every lane: no damage, nothing pending (all delivered and acknowledged)."""
    for lane in lane_paths(str(spool)):
        report = _inspect.fsck(lane)
        assert report.ok, report
        assert report.pending == 0, report


def assert_clean_log(server: Gunicorn) -> None:
    """No traceback and no logging error anywhere in gunicorn's output."""
    text = server.log_text()
    assert "Traceback" not in text, text[-5000:]
    assert "Logging error" not in text, text[-5000:]


def run_with_kill(
    tmp_path: Path, collector: Collector, requests: int, kills: int, extra: Sequence[str] = ()
) -> None:
    """Drive ``requests`` requests, killing ``kills`` workers mid-run, then stop gracefully."""
    rids = [f"r{i}" for i in range(requests)]
    with gunicorn(tmp_path, collector.url(), extra=extra) as server:
        step = requests // (kills + 2)
        server.send(rids[:step])  # every worker up and answering before the first kill
        victims = []
        for k in range(kills):
            part = rids[step * (k + 1) : step * (k + 2)]
            threads = server.drive(part)  # requests in flight while a worker dies
            victims.append(server.kill_worker())
            for t in threads:
                t.join(120)
        server.send(rids[step * (kills + 1) :])
        server.stop()
    assert_clean_log(server)
    answered = set(server.answered)
    assert len(answered) >= requests - 10 * kills, f"too many failed: {server.failed}"
    by_victims = {rid for rid, pid in server.answered.items() if pid in victims}
    assert by_victims, "the killed workers had answered nothing: the kill proved nothing"
    # A graceful stop delivers before it exits what was logged (the collector answers).
    got = rids_of(collector)
    missing = answered - got
    assert not missing, f"{len(missing)} answered requests never delivered: {sorted(missing)[:20]}"
    assert "import" in got  # logged in the master, before the fork
    assert got <= {*rids, "import"}, "records nobody logged"
    assert_spool_clean(server.spool)


def test_preload_workers_deliver_every_answered_request_despite_kill_9(
    tmp_path: Path, collector: Collector
) -> None:
    """--preload, 3 sync workers, 300 requests, one worker killed -9 mid-run, graceful stop:
    every answered request's record reaches the collector."""
    run_with_kill(tmp_path, collector, requests=300, kills=1)


@pytest.mark.slow
def test_preload_workers_many_requests_and_kills(tmp_path: Path, collector: Collector) -> None:
    """As the short test, with 3000 requests and three workers killed -9 at different times."""
    run_with_kill(tmp_path, collector, requests=3000, kills=3)


@pytest.mark.slow
def test_recycled_workers_deliver(tmp_path: Path, collector: Collector) -> None:
    """--max-requests 40: workers end normally and are replaced again and again during 2000
    requests (one also killed -9): every answered request's record reaches the collector."""
    run_with_kill(tmp_path, collector, requests=2000, kills=1, extra=["--max-requests", "40"])


def test_collector_outage_during_run_delivered_once_back(
    tmp_path: Path, collector: Collector
) -> None:
    """The collector answers 503 for part of the run: once it is back, every answered
    request's record arrives, none is dead-lettered, and the stop is clean."""
    rids = [f"r{i}" for i in range(300)]
    with gunicorn(tmp_path, collector.url()) as server:
        server.send(rids[:100])
        collector.down("503")
        server.send(rids[100:200])
        assert collector.wait_for(lambda c: c.rejected >= 2, DELIVERY_DEADLINE), (
            "nothing was refused: the outage was not tested"
        )
        collector.up()
        server.send(rids[200:])
        answered = set(server.answered)
        delivered = collector.wait_for(lambda c: answered <= rids_of(c), DELIVERY_DEADLINE)
        assert delivered, f"never delivered: {sorted(answered - rids_of(collector))[:20]}"
        server.stop()
    assert_clean_log(server)
    assert len(answered) == len(rids), f"requests failed: {server.failed}"
    assert _inspect.dead_letters(server.spool) == []
    assert_spool_clean(server.spool)


def test_collector_down_at_stop_next_opener_delivers(tmp_path: Path, collector: Collector) -> None:
    """The collector is down through the graceful stop: gunicorn still exits cleanly (the
    handlers give up after their close_timeout), the records stay on disk, and the next opener
    of the spool delivers every one once the collector is back."""
    rids = [f"r{i}" for i in range(150)]
    with gunicorn(tmp_path, collector.url(), close_timeout=1.0) as server:
        collector.down("503")
        server.send(rids)
        server.stop()
    assert_clean_log(server)
    assert len(server.answered) == len(rids), f"requests failed: {server.failed}"
    assert not set(server.answered) & rids_of(collector)
    collector.up()
    shipper = [sys.executable, str(ROOT / "tests/apps/spool_proc.py"), str(server.spool)]
    subprocess.run([*shipper, collector.url(), "--flush", "60"], check=True, timeout=120)
    missing = set(server.answered) - rids_of(collector)
    assert not missing, f"{len(missing)} records never delivered: {sorted(missing)[:20]}"
    assert_spool_clean(server.spool)


def test_producer_only_workers_shipped_by_spoolkit_ship(
    tmp_path: Path, collector: Collector
) -> None:
    """The shipper deployment: gunicorn's master and workers only write (consume=False) and
    one `spoolkit ship` process delivers; a worker killed -9 mid-run and the graceful stop lose
    nothing, and no gunicorn process posts anything itself."""
    spool = tmp_path / "spool"
    ship_log = tmp_path / "ship.log"
    with ship_log.open("wb") as out:
        shipper = subprocess.Popen(
            [sys.executable, "-m", "spoolkit", "ship", str(spool), "--to", collector.url()],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        started = wait_for(lambda: "shipping" in ship_log.read_text(), DELIVERY_DEADLINE)
        assert started, ship_log.read_text()
        rids = [f"r{i}" for i in range(300)]
        never = collector.url("/from-gunicorn")  # producer-only processes must not post
        with gunicorn(tmp_path, never, producer_only=True) as server:
            server.send(rids[:100])
            threads = server.drive(rids[100:200])
            victim = server.kill_worker()
            for t in threads:
                t.join(120)
            server.send(rids[200:])
            server.stop()
        assert_clean_log(server)
        assert any(pid == victim for pid in server.answered.values())
        answered = set(server.answered)
        assert len(answered) >= len(rids) - 10, f"too many failed: {server.failed}"
        delivered = collector.wait_for(
            lambda c: {*answered, "import"} <= rids_of(c), DELIVERY_DEADLINE
        )
        missing = {*answered, "import"} - rids_of(collector)
        assert delivered, f"{len(missing)} never delivered: {sorted(missing)[:20]}"
        shipper.send_signal(signal.SIGTERM)
        assert shipper.wait(60) == 0, ship_log.read_text()
    finally:
        if shipper.poll() is None:
            shipper.kill()
            shipper.wait(30)
    shipped = ship_log.read_text()
    assert "Traceback" not in shipped, shipped
    assert {r.path for r in collector.records()} == {"/ingest"}
    assert_spool_clean(spool)
