"""A local HTTP collector for tests: what spoolkit's ``HttpSink`` POSTs, recorded.

A real HTTP server (``ThreadingHTTPServer``) in a thread on 127.0.0.1, on a free port. It
accepts the bodies ``HttpSink`` sends (a JSON array, or NDJSON; gzip or not) whose elements are
``{"id": ..., "enqueued_at": ..., "item": ...}``, and keeps every element it got, duplicates
included (delivery is at least once). It can be taken down, answering ``503`` or refusing
connections (the listening socket is closed), and brought up again on the same port.
:meth:`Collector.wait_for` waits, with a deadline, until a predicate over what arrived holds.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

__all__ = ["Collector", "Received", "collector_running", "wait_for"]

Mode = Literal["up", "503", "refuse"]


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(interval)


@dataclass(frozen=True)
class Received:
    """One record as the collector got it."""

    id: str
    item: Any
    path: str  # the request path it was POSTed to


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    collector: Collector


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx uses it
    server: _Server

    def do_POST(self) -> None:
        """Record the batch (or refuse it, when the collector is down)."""
        collector = self.server.collector
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        mode = collector.mode
        if mode == "refuse":  # a connection opened before the listener closed: drop it
            self.close_connection = True
            self.connection.close()
            return
        if mode == "503":
            collector._count_rejected()
            self._answer(503, b"collector down for the test")
            return
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        text = body.decode("utf-8")
        if "ndjson" in (self.headers.get("Content-Type") or ""):
            elements = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            elements = json.loads(text)
        path = self.path.partition("?")[0]
        collector._add(Received(str(e["id"]), e.get("item"), path) for e in elements)
        self._answer(200, b"ok")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read what arrived, not an access log."""


class Collector:
    """An HTTP server recording every record spoolkit's ``HttpSink`` delivers to it.

    Args:
        mode: ``"up"`` (accept), ``"503"`` (answer 503) or ``"refuse"`` (no listener) at start.
    """

    def __init__(self, mode: Mode = "up") -> None:
        self._cond = threading.Condition()
        self._records: list[Received] = []
        self._rejected = 0
        self.mode: Mode = "up"
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self._listen()
        if mode != "up":
            self.down(mode)

    # -- the server ----------------------------------------------------------------------------

    def _listen(self) -> None:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.collector = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _unlisten(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(10)

    def url(self, path: str = "/ingest") -> str:
        """The URL to give ``HttpSink`` (or ``SpoolHandler(sink=...)``)."""
        return f"http://127.0.0.1:{self.port}{path}"

    def down(self, how: Literal["503", "refuse"] = "503") -> None:
        """Stop accepting: answer every POST with 503, or close the listener (refused)."""
        self.mode = how
        if how == "refuse":
            self._unlisten()

    def up(self) -> None:
        """Accept again (listening again on the same port if the listener was closed)."""
        if self._server is None:
            self._listen()
        self.mode = "up"

    def close(self) -> None:
        """Stop the server."""
        self._unlisten()

    # -- what arrived --------------------------------------------------------------------------

    def _add(self, received: Iterable[Received]) -> None:
        with self._cond:
            self._records.extend(received)
            self._cond.notify_all()

    def _count_rejected(self) -> None:
        with self._cond:
            self._rejected += 1

    @property
    def rejected(self) -> int:
        """POSTs answered with 503."""
        with self._cond:
            return self._rejected

    def records(self) -> list[Received]:
        """Every record received, in arrival order, duplicates included."""
        with self._cond:
            return list(self._records)

    def items(self) -> list[Any]:
        """The items received, in arrival order, duplicates included."""
        return [r.item for r in self.records()]

    def ids(self) -> Counter[str]:
        """How many times each record id was received."""
        return Counter(r.id for r in self.records())

    def wait_for(self, predicate: Callable[[Collector], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds (True), or ``timeout`` seconds (False).

        The predicate is checked at each arrival, and at least every 0.2 s.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True


@contextmanager
def collector_running(mode: Mode = "up") -> Iterator[Collector]:
    """A :class:`Collector` for the ``with`` block, closed after it."""
    collector = Collector(mode)
    try:
        yield collector
    finally:
        collector.close()
