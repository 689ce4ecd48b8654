"""How a process ends: scripts that log or put and just end, SIGTERM with and without
exit_on_sigterm, logging from exit hooks and threads at shutdown. Real child processes and a
real HTTP collector on 127.0.0.1; assertions on their exit code, their stderr and what the
collector got."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from spoolkit import Spool
from spoolkit.sinks import from_url

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "tests" / "apps_exit"
DEADLINE = 60.0  # cross-process delivery on a busy 2-core machine
SLACK = 15.0  # interpreter start and end, on a busy machine


class Collector:
    """An HTTP log collector on 127.0.0.1: keeps the ndjson lines it is POSTed, or answers
    503 while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.lines: list[dict[str, Any]] = []
        self.refused = 0
        self._cond = threading.Condition()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector._take(body, self)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ingest?format=ndjson"

    def _take(self, body: bytes, request: BaseHTTPRequestHandler) -> None:
        with self._cond:
            if self.down:
                self.refused += 1
                status = 503
            else:
                self.lines.extend(json.loads(line) for line in body.splitlines() if line)
                self._cond.notify_all()
                status = 200
        request.send_response(status)
        request.send_header("Content-Length", "0")
        request.end_headers()

    def items(self) -> list[Any]:
        """The records' items received so far."""
        with self._cond:
            return [line["item"] for line in self.lines]

    def messages(self) -> list[str]:
        """The ``message`` of each log record received."""
        return [item["message"] for item in self.items()]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = DEADLINE) -> bool:
        """Wait until ``predicate()`` holds (checked on each POST); its last value."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(name="collector")
def fixture_collector() -> Iterator[Collector]:
    """A running collector, shut down after the test."""
    collector = Collector()
    yield collector
    collector.close()


class App:
    """A script of tests/apps_exit in a real process."""

    def __init__(self, script: str, *args: object) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(APPS / script), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.stdout = ""
        self.stderr = ""

    def expect(self, word: str) -> float:
        """Wait for the line ``word`` on stdout; the monotonic time it was read at."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != word:
            self.finish(DEADLINE)
            raise AssertionError(f"expected {word!r}, got {line!r}; stderr: {self.stderr}")
        return time.monotonic()

    def finish(self, timeout: float) -> int:
        """Wait for the end (kill -9 after ``timeout`` s and fail); the exit code."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"the process did not end in {timeout} s: {err}") from None
        self.stdout += out
        self.stderr += err
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9 if still running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture(name="run")
def fixture_run() -> Iterator[Callable[..., App]]:
    """``run(script, *args)`` starts an app; any still running after the test is killed."""
    apps: list[App] = []

    def run(script: str, *args: object) -> App:
        app = App(script, *args)
        apps.append(app)
        return app

    yield run
    for app in apps:
        app.kill()


def assert_clean(stderr: str) -> None:
    """No traceback and no logging error; any line is one of spoolkit's own stderr notes."""
    assert "Traceback" not in stderr, stderr
    assert "Logging error" not in stderr, stderr
    for line in stderr.splitlines():
        assert line.startswith(("spoolkit WARNING: ", "spoolkit ERROR: ")), stderr


def deliver_later(path: Path, collector: Collector, count: int) -> None:
    """A Spool opened afterwards on ``path`` delivers ``count`` records to ``collector``."""
    spool = Spool(path, from_url(collector.url), serializer="json", batch_interval=0)
    spool.start()
    try:
        assert spool.flush(DEADLINE)
    finally:
        spool.stop()
    assert collector.wait_for(lambda: len(collector.lines) >= count)


# -- a SpoolHandler, no close() ----------------------------------------------------------------


def test_a_script_that_logs_and_ends_delivers_everything_before_it_exits(
    tmp_path: Path, collector: Collector, run: Callable[..., App]
) -> None:
    """2,000 records logged through a dictConfig'd SpoolHandler by a script that ends without
    close(): all delivered before the process is gone (nothing left on disk), exit 0, stderr
    empty; the httpx lines the sink's client logs at INFO are not among them."""
    app = run("log_and_end.py", tmp_path / "spool", collector.url, 2000, 30)
    app.expect("LOGGED")
    assert app.finish(DEADLINE) == 0, app.stderr
    assert app.stderr == ""
    assert sorted(collector.messages()) == sorted(f"record {i}" for i in range(2000))
    assert {item["logger"] for item in collector.items()} == {"app"}
    leftover = Spool(tmp_path / "spool", None, serializer="json")
    assert leftover.stats().backlog == 0
    leftover.stop()


def test_a_script_that_logs_and_ends_with_the_sink_down_exits_within_close_timeout(
    tmp_path: Path, collector: Collector, run: Callable[..., App]
) -> None:
    """With the collector answering 503, the script still ends within close_timeout (+ slack)
    with exit 0 and no traceback; the 2,000 records stay on disk and a Spool opened later
    delivers every one of them."""
    collector.down = True
    close_timeout = 2.0
    app = run("log_and_end.py", tmp_path / "spool", collector.url, 2000, close_timeout)
    logged = app.expect("LOGGED")
    assert app.finish(close_timeout + SLACK + 30) == 0, app.stderr
    assert time.monotonic() - logged < close_timeout + SLACK
    assert_clean(app.stderr)
    assert collector.refused > 0
    assert collector.lines == []
    collector.down = False
    deliver_later(tmp_path / "spool", collector, 2000)
    assert sorted(collector.messages()) == sorted(f"record {i}" for i in range(2000))


# -- a plain Spool, no stop() ------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["lanes", "disk"])
def test_a_script_that_puts_and_ends_without_stop_delivers_within_exit_timeout(
    tmp_path: Path, collector: Collector, run: Callable[..., App], backend: str
) -> None:
    """A plain Spool (no handler) whose script ends without stop(): the exit hook delivers every
    record within exit_timeout, exit 0, stderr empty; also on an explicit DiskBackend, whose
    queue the exit must not close before the spool drained it."""
    app = run("spool_and_end.py", tmp_path / "spool", collector.url, 500, 20, backend)
    app.expect("PUT")
    assert app.finish(DEADLINE) == 0, app.stderr
    assert app.stderr == ""
    assert sorted(item["n"] for item in collector.items()) == list(range(500))


def test_a_script_that_puts_and_ends_with_the_sink_down_gives_up_after_exit_timeout(
    tmp_path: Path, collector: Collector, run: Callable[..., App]
) -> None:
    """With the collector down the exit hook gives up after exit_timeout (+ slack), exit 0 and
    no traceback; a Spool opened later delivers the records."""
    collector.down = True
    app = run("spool_and_end.py", tmp_path / "spool", collector.url, 500, 1)
    put = app.expect("PUT")
    assert app.finish(DEADLINE) == 0, app.stderr
    assert time.monotonic() - put < 1 + SLACK
    assert_clean(app.stderr)
    collector.down = False
    deliver_later(tmp_path / "spool", collector, 500)
    assert sorted(item["n"] for item in collector.items()) == list(range(500))


# -- SIGTERM -----------------------------------------------------------------------------------


def test_sigterm_with_exit_on_sigterm_exits_143_after_delivering(
    tmp_path: Path, collector: Collector, run: Callable[..., App]
) -> None:
    """With exit_on_sigterm() installed, SIGTERM ends the process with 143 after its spool
    delivered the records it held (a worker was waiting for its batch to fill)."""
    app = run("sigterm.py", tmp_path / "spool", collector.url, 300, 1)
    app.expect("READY")
    assert collector.lines == []  # held: the batch waits to fill for 600 s
    os.kill(app.proc.pid, signal.SIGTERM)
    assert app.finish(DEADLINE) == 143, app.stderr
    assert_clean(app.stderr)
    assert sorted(item["n"] for item in collector.items()) == list(range(300))


def test_sigterm_without_exit_on_sigterm_kills_and_the_records_wait_on_disk(
    tmp_path: Path, collector: Collector, run: Callable[..., App]
) -> None:
    """Without exit_on_sigterm(), SIGTERM kills the process at once (nothing delivered); the
    records it held stay on disk and a later opener delivers them all."""
    app = run("sigterm.py", tmp_path / "spool", collector.url, 300, 0)
    app.expect("READY")
    os.kill(app.proc.pid, signal.SIGTERM)
    assert app.finish(DEADLINE) == -signal.SIGTERM
    assert collector.lines == []
    deliver_later(tmp_path / "spool", collector, 300)
    assert sorted(item["n"] for item in collector.items()) == list(range(300))


# -- logging while the interpreter ends --------------------------------------------------------


def test_logging_from_exit_hooks_and_threads_at_shutdown_prints_nothing(
    tmp_path: Path, collector: Collector, run: Callable[..., App]
) -> None:
    """A record logged from an atexit hook registered after the handler is delivered; one logged
    after logging.shutdown (a hook registered before logging was imported), and a daemon
    thread logging in a loop through the end, print nothing: exit 0, stderr empty."""
    app = run("log_at_shutdown.py", tmp_path / "spool", collector.url)
    app.expect("DONE")
    assert app.finish(DEADLINE) == 0, app.stderr
    assert app.stderr == ""
    messages = collector.messages()
    assert "main done" in messages
    assert "from atexit" in messages
    assert "from thread 49" in messages
