"""``spoolkit demo``: log records through a spool, kill the app with SIGKILL, lose nothing.

An app process (:mod:`spoolkit.tools.demo_app`) logs ``records`` log records through a
:class:`spoolkit.SpoolHandler`; its spool delivers them to a :class:`Collector`, a small HTTP
server on 127.0.0.1 that answers a share of requests with 503 on purpose. Half-way through
logging, the app is killed with ``SIGKILL``, with records on disk not yet delivered; a new app
process resumes logging where the killed one stopped and drains the spool. The collector counts
every record number it received: delivered (unique), duplicates and lost.

Nothing here fakes a number: every count comes from what the collector received.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from spoolkit.errors import ConfigError, PathError, SpoolError
from spoolkit.queue import meta
from spoolkit.tools import inspect as insp
from spoolkit.tools.demo_app import read_counter

__all__ = ["Collector", "DemoError", "DemoOptions", "DemoProgress", "DemoResult", "run"]


class DemoError(SpoolError):
    """The demo could not run to the end (an app process failed or it timed out)."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What to run.

    Attributes:
        records: how many records the app logs.
        failure_rate: the share of requests the collector answers with 503 (0 to 0.95).
        directory: where the spool (``spool/``), the app's counter and its log go.
        kill_at: the share of the records logged before the app is killed (0 to 1).
        timeout: the most seconds the whole demo may take.
        seed: seeds the collector's choice of requests to refuse.
    """

    records: int = 100_000
    failure_rate: float = 0.2
    directory: str = ".demo"
    kill_at: float = 0.5
    timeout: float = 600.0
    seed: int | None = None

    def check(self) -> None:
        """Raise :class:`ConfigError` for an option out of range."""
        if self.records < 1:
            raise ConfigError(f"records must be >= 1, got {self.records}")
        if not 0 <= self.failure_rate <= 0.95:
            raise ConfigError(
                f"the failure rate must be between 0 and 0.95, got {self.failure_rate}"
            )
        if not 0 < self.kill_at <= 1:
            raise ConfigError(f"kill_at must be in (0, 1], got {self.kill_at}")


@dataclass(frozen=True, slots=True)
class DemoProgress:
    """A progress snapshot, handed to the ``on_progress`` callback of :func:`run`."""

    phase: str
    logged: int
    delivered: int
    total: int


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What the demo measured.

    Attributes:
        produced: distinct records the app logged.
        delivered: distinct records the collector received.
        duplicates: records the collector received more than once (extra copies).
        lost: records logged and never received.
        requests: POST requests the collector answered.
        rejected: of those, the ones refused with 503 (each batch was retried).
        retried_records: records in refused requests (sent again later).
        killed_pid: the app process that was killed with SIGKILL.
        logged_at_kill: records logged when the kill landed.
        backlog_at_kill: records on disk, not yet acknowledged, right after the kill.
        dead_letters: records the spool gave up on (they count as lost).
        left_in_spool: records still in the spool at the end.
        unexpected: received records that were not the app's (should be 0).
        seconds: wall time from the first app start to the last record delivered.
        spool: the spool directory (left in place for ``spoolkit inspect``).
    """

    produced: int
    delivered: int
    duplicates: int
    lost: int
    requests: int
    rejected: int
    retried_records: int
    killed_pid: int
    logged_at_kill: int
    backlog_at_kill: int
    dead_letters: int
    left_in_spool: int
    unexpected: int
    seconds: float
    spool: str

    @property
    def records_per_second(self) -> float:
        """Distinct records delivered per second of the run."""
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """Whether every record logged was delivered."""
        return self.lost == 0 and self.produced > 0 and self.unexpected == 0


class Collector:
    """An HTTP server on 127.0.0.1 that receives batches and counts record numbers.

    Each POST body is a JSON array of ``{"id", "enqueued_at", "item"}`` (what
    :class:`spoolkit.sinks.HttpSink` sends); ``item["extra"]["seq"]`` is the record number.
    A share ``failure_rate`` of requests is answered with 503 without looking at the body.

    Args:
        expected: record numbers run from 0 to ``expected - 1``.
        failure_rate: the share of requests refused.
        seed: seeds which ones.
    """

    def __init__(self, expected: int, failure_rate: float, seed: int | None = None) -> None:
        self.expected = expected
        self.failure_rate = failure_rate
        self.counts = [0] * expected
        self.unique = 0
        self.duplicates = 0
        self.unexpected = 0
        self.requests = 0
        self.rejected = 0
        self.retried_records = 0
        self.changed = threading.Event()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)  # noqa: S311 - which requests fail, not cryptography
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="spoolkit-demo-collector", daemon=True
        )

    @property
    def url(self) -> str:
        """Where to POST batches."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/ingest"

    def start(self) -> None:
        """Start serving in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def refuse(self) -> bool:
        """Decide whether the next request is refused."""
        with self._lock:
            self.requests += 1
            if self._rng.random() < self.failure_rate:
                self.rejected += 1
                return True
            return False

    def accept(self, body: bytes) -> None:
        """Count the records of an accepted batch."""
        records = json.loads(body)
        with self._lock:
            for record in records:
                seq = _seq(record)
                if seq is None or not 0 <= seq < self.expected:
                    self.unexpected += 1
                    continue
                seen = self.counts[seq]
                self.counts[seq] = seen + 1
                if seen:
                    self.duplicates += 1
                else:
                    self.unique += 1
        self.changed.set()

    def count_refused(self, body: bytes) -> None:
        """Count the records of a refused batch (they will come again)."""
        with contextlib.suppress(ValueError):
            n = len(json.loads(body))
            with self._lock:
                self.retried_records += n

    def missing(self, below: int) -> list[int]:
        """The record numbers under ``below`` never received."""
        with self._lock:
            return [i for i, c in enumerate(self.counts[:below]) if not c]


class _Server(ThreadingHTTPServer):
    """The collector's server: quiet about a client that went away mid-answer (the demo kills
    its app with SIGKILL, or Ctrl-C ends it, while a batch is being answered)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def _seq(record: Any) -> int | None:
    try:
        seq = record["item"]["extra"]["seq"]
    except (KeyError, TypeError):
        return None
    return seq if isinstance(seq, int) else None


def _handler_for(collector: Collector) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "spoolkit-demo-collector"
        error_message_format: ClassVar[str] = ""  # type: ignore[misc]

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if collector.refuse():
                collector.count_refused(body)
                self._answer(503, b"try again later")
                return
            try:
                collector.accept(body)
            except ValueError:
                self._answer(400, b"not a JSON array of records")
                return
            self._answer(200, b"ok")

        def _answer(self, status: int, text: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the demo prints its own summary."""

    return Handler


# -- the run ---------------------------------------------------------------------------------


def _fresh_spool_dir(directory: str) -> str:
    """``<directory>/spool``, emptied if an earlier demo left one there."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    spool = os.path.join(os.path.abspath(directory), "spool")
    if os.path.exists(spool):
        try:
            insp.spool_dir(spool)
        except PathError:
            if os.listdir(spool) if os.path.isdir(spool) else True:
                raise ConfigError(
                    f"{spool} exists and is not a spool left by the demo; choose another --dir"
                ) from None
        if meta.is_locked(spool):
            raise ConfigError(f"{spool} is in use by process {meta.holder_pid(spool)}")
        shutil.rmtree(spool)
    for name in ("counter", "app.log"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
    return spool


@contextlib.contextmanager
def _app(
    spool: str, collector: Collector, options: DemoOptions, kill_at: int | None
) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str | None]]]:
    """An app process, with a thread reading its stdout lines into a queue (None at EOF)."""
    cmd = [
        sys.executable, "-m", "spoolkit.tools.demo_app", "--spool", spool, "--url", collector.url,
        "--records", str(options.records), "--timeout", str(options.timeout),
        "--counter", os.path.join(options.directory, "counter"),
    ]  # fmt: skip
    if kill_at is not None:
        cmd += ["--kill-at", str(kill_at)]
    with (
        open(os.path.join(options.directory, "app.log"), "a", encoding="utf-8") as log,
        subprocess.Popen(  # noqa: S603 - this Python, our module, our arguments
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        ) as proc,
    ):
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line.strip())
            lines.put(None)

        reader = threading.Thread(target=pump, name="spoolkit-demo-app-stdout", daemon=True)
        reader.start()
        try:
            yield proc, lines
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            reader.join()


def run(
    options: DemoOptions, on_progress: Callable[[DemoProgress], None] | None = None
) -> DemoResult:
    """Run the demo and return what the collector counted.

    Raises:
        ConfigError: an option is out of range, or the directory holds something else.
        DemoError: an app process failed (its log is ``<directory>/app.log``) or the demo
            ran past ``options.timeout``.
    """
    options.check()
    spool = _fresh_spool_dir(options.directory)
    counter_file = os.path.join(options.directory, "counter")
    collector = Collector(options.records, options.failure_rate, options.seed)
    collector.start()
    deadline = time.monotonic() + options.timeout
    report = on_progress or (lambda _p: None)

    def progress(phase: str) -> None:
        report(DemoProgress(phase, read_counter(counter_file), collector.unique, options.records))

    def next_line(lines: queue.Queue[str | None], phase: str) -> str | None:
        while True:
            if time.monotonic() > deadline:
                raise DemoError(f"the demo ran past its {options.timeout:.0f}s timeout")
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                progress(phase)
                continue
            progress(phase)
            return line

    started = time.perf_counter()
    kill_at = max(1, int(options.records * options.kill_at))
    try:
        with _app(spool, collector, options, kill_at) as (proc, lines):
            if next_line(lines, "logging") != "checkpoint":
                raise DemoError(_app_failed(options, proc))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = proc.pid
        logged_at_kill = read_counter(counter_file)
        backlog_at_kill = insp.inspect_spool(spool).backlog
        progress("killed")
        with _app(spool, collector, options, None) as (proc, lines):
            summary = next_line(lines, "restarted")
            if summary is None or proc.wait() != 0:
                raise DemoError(_app_failed(options, proc))
        seconds = time.perf_counter() - started
        progress("done")
    finally:
        collector.stop()
    final = insp.inspect_spool(spool)
    produced = read_counter(counter_file)
    missing = collector.missing(produced)
    return DemoResult(
        produced=produced,
        delivered=collector.unique,
        duplicates=collector.duplicates,
        lost=len(missing),
        requests=collector.requests,
        rejected=collector.rejected,
        retried_records=collector.retried_records,
        killed_pid=killed,
        logged_at_kill=logged_at_kill,
        backlog_at_kill=backlog_at_kill,
        dead_letters=final.dead_letters,
        left_in_spool=final.backlog,
        unexpected=collector.unexpected,
        seconds=seconds,
        spool=spool,
    )


def _app_failed(options: DemoOptions, proc: subprocess.Popen[str]) -> str:
    code = proc.poll()
    log = os.path.join(options.directory, "app.log")
    tail = ""
    with contextlib.suppress(OSError), open(log, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
        tail = f": {lines[-1]}" if lines else ""
    return f"the demo app exited with status {code} (see {log}){tail}"
