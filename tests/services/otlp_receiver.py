"""A local OTLP/HTTP receiver for tests: decodes what it gets with opentelemetry-proto.

No collector binary is installable here, so this stands in for one: an ``http.server`` on a
free 127.0.0.1 port that accepts ``POST /v1/logs`` and ``POST /v1/traces`` (protobuf,
optionally gzip), keeps every decoded request, and answers as a test scripts it (a status, a
partial success, a rejection rule). ``stop()`` closes the listening socket (connections are
then refused) and ``start()`` opens it again on the same port.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from tests.services._common import free_port

Reject = Callable[[LogRecord], bool]


@dataclass
class OtlpReceiver:
    """Requests received, decoded; ``status`` and ``reject`` script the answers."""

    port: int = field(default_factory=free_port)
    logs: list[ExportLogsServiceRequest] = field(default_factory=list)
    traces: list[ExportTraceServiceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    status: int = 200
    retry_after: str | None = None
    reject: Reject | None = None
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.handle(self, body)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        answer: bytes = b""
        status = self.status
        with self._lock:
            self.headers.append(dict(request.headers))
            if status == 200 and request.path == "/v1/logs":
                decoded = ExportLogsServiceRequest.FromString(body)
                rejected = self._apply_reject(decoded)
                self.logs.append(decoded)
                partial = ExportLogsPartialSuccess(
                    rejected_log_records=rejected, error_message="too old" if rejected else ""
                )
                answer = ExportLogsServiceResponse(partial_success=partial).SerializeToString()
            elif status == 200 and request.path == "/v1/traces":
                self.traces.append(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
            elif status == 200:
                status = 404
        request.send_response(status)
        request.send_header("Content-Type", "application/x-protobuf")
        if self.retry_after is not None and status != 200:
            request.send_header("Retry-After", self.retry_after)
        request.send_header("Content-Length", str(len(answer)))
        request.end_headers()
        request.wfile.write(answer)

    def _apply_reject(self, decoded: ExportLogsServiceRequest) -> int:
        """Drop the records ``reject`` refuses from what is kept; return how many."""
        if self.reject is None:
            return 0
        rejected = 0
        for resource_logs in decoded.resource_logs:
            for scope_logs in resource_logs.scope_logs:
                keep = [r for r in scope_logs.log_records if not self.reject(r)]
                rejected += len(scope_logs.log_records) - len(keep)
                del scope_logs.log_records[:]
                scope_logs.log_records.extend(keep)
        return rejected

    def log_records(self) -> list[LogRecord]:
        with self._lock:
            return [
                r
                for req in self.logs
                for rl in req.resource_logs
                for sl in rl.scope_logs
                for r in sl.log_records
            ]

    def spans(self) -> list[Any]:
        with self._lock:
            return [
                s
                for req in self.traces
                for rs in req.resource_spans
                for ss in rs.scope_spans
                for s in ss.spans
            ]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Return once ``predicate()`` holds; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver condition unmet after {timeout}s")
            time.sleep(0.01)  # polling with a deadline


def start_receiver() -> OtlpReceiver:
    receiver = OtlpReceiver()
    receiver.start()
    return receiver
