"""Sinks against real local servers, side by side, and the OpenTelemetry wrapper's cost.

1. Delivered records/s through a Spool (put_many, then flush) for:
   - HttpSink (NDJSON, gzip) -> a local http.server that parses each body,
   - OtlpLogSink (protobuf, gzip) -> a local http.server that decodes each request with
     opentelemetry-proto,
   - SyslogSink (RFC 5424, octet counting) -> a real rsyslogd writing every message to a file
     (the clock stops once rsyslog has written them all, not when the sink returned).
   Both HTTP servers are the same Python http.server, so they cost the same per request.
2. The OTel wrapper: the time the SDK's batch processor waits in ``export`` for a batch of
   512 spans, bare OTLPSpanExporter (an HTTP round trip) against DurableSpanExporter (encode
   and store), and the wrapper's delivery cost per batch (rebuild the spans from the stored
   protobuf and export them) against the bare export.

Run: ``python benchmarks/sinks_bench.py`` (needs rsyslogd; ``--quick`` for a short run).
Writes benchmarks/results/sinks_bench.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from benchmarks._common import LOG_RECORD, Counter, save, table
from spoolkit import Spool
from spoolkit.otel import DurableSpanExporter
from spoolkit.sinks import HttpSink, OtlpLogSink, SyslogSink
from tests.services._common import destroy
from tests.services.rsyslog_server import start_rsyslog


def __init__(self) -> None:
    self.records = 0
    self.lock = threading.Lock()


def _server(counter: Counter) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            answer = b""
            if self.path == "/v1/logs":
                request = ExportLogsServiceRequest.FromString(body)
                n = sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
                answer = ExportLogsServiceResponse().SerializeToString()
            elif self.path == "/v1/traces":
                request2 = ExportTraceServiceRequest.FromString(body)
                n = sum(len(ss.spans) for rs in request2.resource_spans for ss in rs.scope_spans)
                answer = ExportTraceServiceResponse().SerializeToString()
            else:
                n = sum(1 for line in body.splitlines() if json.loads(line))
            with counter.lock:
                counter.records += n
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _through_spool(sink: Any, n: int, delivered: Callable[[], int]) -> float:
    """Records/s from the first put until the server has all ``n`` records."""
    items = [dict(LOG_RECORD, message=f"user logged in {i}") for i in range(n)]
    with tempfile.TemporaryDirectory() as d:
        spool = Spool(d, sink, workers=2, batch_size=500, batch_interval=0.05, serializer="json")
        with spool:
            start = time.perf_counter()
            spool.put_many(items)
            assert spool.flush(timeout=300)
            while delivered() < n:
                time.sleep(0.001)
            return n / (time.perf_counter() - start)


def sinks(n: int, runs: int) -> dict[str, float]:
    counter = Counter()
    server = _server(counter)
    port = server.server_address[1]
    rsyslog = start_rsyslog()
    try:
        results: dict[str, list[float]] = {"http": [], "otlp": [], "syslog": []}
        for _ in range(runs):  # interleaved, medians reported
            counter.records = 0
            http = HttpSink(f"http://127.0.0.1:{port}/ingest", format="ndjson", gzip=True)
            results["http"].append(_through_spool(http, n, lambda: counter.records))
            counter.records = 0
            otlp = OtlpLogSink(f"http://127.0.0.1:{port}")
            results["otlp"].append(_through_spool(otlp, n, lambda: counter.records))
            rsyslog.clear()
            syslog = SyslogSink("127.0.0.1", rsyslog.port, app_name="bench")
            results["syslog"].append(_through_spool(syslog, n, lambda: _lines(rsyslog.output)))
        return {k: statistics.median(v) for k, v in results.items()}
    finally:
        server.shutdown()
        server.server_close()
        destroy(rsyslog)


def _lines(path: Any) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def _spans(count: int) -> list[Any]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    for i in range(count):
        with tracer.start_as_current_span(f"GET /items/{i}") as span:
            span.set_attributes({"http.method": "GET", "http.status_code": 200, "n": i})
            span.add_event("cache miss", {"key": f"k{i}"})
    return list(memory.get_finished_spans())


def _per_batch(export: Callable[[], Any], batches: int) -> float:
    start = time.perf_counter()
    for _ in range(batches):
        assert export() == SpanExportResult.SUCCESS
    return (time.perf_counter() - start) / batches * 1e6


class _Subclassed(OTLPSpanExporter):
    """Not the exact OTLP/HTTP class: the wrapper rebuilds spans and calls its export."""


def _durable(
    kind: type[OTLPSpanExporter], endpoint: str, spans: list[Any], batches: int, counter: Counter
) -> tuple[float, float]:
    """(µs per export call, µs per batch from the first export until all were received)."""
    with tempfile.TemporaryDirectory() as d:
        wrapped = DurableSpanExporter(kind(endpoint=endpoint), d, batch_size=1, batch_interval=0)
        counter.records = 0
        start = time.perf_counter()
        store = _per_batch(lambda: wrapped.export(spans), batches)
        assert wrapped.force_flush(300_000)
        while counter.records < batches * len(spans):
            time.sleep(0.001)
        through = (time.perf_counter() - start) / batches * 1e6
        wrapped.shutdown()
    return store, through


def wrapper(batches: int) -> dict[str, float]:
    """µs per 512-span batch: bare export, durable export (what the SDK waits for), and the
    time to delivered, for the raw path (OTLP/HTTP) and the rebuild path (other exporters);
    and one export call with the collector down (bare: the exporter's timeout)."""
    spans = _spans(512)
    counter = Counter()
    server = _server(counter)
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    try:
        bare = OTLPSpanExporter(endpoint=endpoint)
        bare_us = _per_batch(lambda: bare.export(spans), batches)
        bare.shutdown()
        raw_store, raw_through = _durable(OTLPSpanExporter, endpoint, spans, batches, counter)
        rebuild_store, rebuild_through = _durable(_Subclassed, endpoint, spans, batches, counter)
    finally:
        server.shutdown()
        server.server_close()
    port = server.server_address[1]  # closed now: connections are refused
    down = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=2)
    start = time.perf_counter()
    down.export(spans)
    bare_down_us = (time.perf_counter() - start) * 1e6
    with tempfile.TemporaryDirectory() as d:
        wrapped = DurableSpanExporter(down, d)
        durable_down_us = _per_batch(lambda: wrapped.export(spans), 5)
        wrapped.spool.stop(timeout=0)
    return {
        "bare_export_us": bare_us,
        "durable_export_us": raw_store,
        "durable_end_to_end_us": raw_through,
        "durable_rebuild_export_us": rebuild_store,
        "durable_rebuild_end_to_end_us": rebuild_through,
        "bare_export_collector_down_us": bare_down_us,
        "durable_export_collector_down_us": durable_down_us,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    args = parser.parse_args()
    n, runs, batches = (5_000, 1, 20) if args.quick else (20_000, 3, 100)
    rates = sinks(n, runs)
    cost = wrapper(batches)
    print(
        table(
            f"Sinks against local servers ({n:,} records, median of {runs})",
            ["sink", "server", "records/s", "vs HttpSink"],
            [
                [
                    "HttpSink (NDJSON, gzip)",
                    "Python http.server, parses JSON",
                    f"{rates['http']:,.0f}",
                    "1.00",
                ],
                [
                    "OtlpLogSink (protobuf, gzip)",
                    "Python http.server, decodes OTLP",
                    f"{rates['otlp']:,.0f}",
                    f"{rates['otlp'] / rates['http']:.2f}",
                ],
                [
                    "SyslogSink (RFC 5424, TCP)",
                    "rsyslogd imtcp -> file",
                    f"{rates['syslog']:,.0f}",
                    f"{rates['syslog'] / rates['http']:.2f}",
                ],
            ],
        )
    )
    print(
        table(
            f"OTel wrapper per batch of 512 spans ({batches} batches)",
            ["path", "µs per batch"],
            [
                [
                    "bare OTLPSpanExporter.export (encode + HTTP round trip)",
                    f"{cost['bare_export_us']:,.0f}",
                ],
                [
                    "DurableSpanExporter.export (encode + store: what the SDK waits for)",
                    f"{cost['durable_export_us']:,.0f}",
                ],
                [
                    "DurableSpanExporter: first export to all received (stored bytes posted)",
                    f"{cost['durable_end_to_end_us']:,.0f}",
                ],
                [
                    "around another exporter: DurableSpanExporter.export",
                    f"{cost['durable_rebuild_export_us']:,.0f}",
                ],
                [
                    "around another exporter: to all received (spans rebuilt, encoded again)",
                    f"{cost['durable_rebuild_end_to_end_us']:,.0f}",
                ],
                [
                    "collector down: bare export (timeout=2)",
                    f"{cost['bare_export_collector_down_us']:,.0f}",
                ],
                [
                    "collector down: DurableSpanExporter.export",
                    f"{cost['durable_export_collector_down_us']:,.0f}",
                ],
            ],
        )
    )
    command = "python benchmarks/sinks_bench.py" + (" --quick" if args.quick else "")
    print(
        save(
            "sinks_bench",
            {
                "command": command,
                "records": n,
                "runs": runs,
                "records_per_s": rates,
                "otel_us_per_512_span_batch": cost,
            },
        )
    )


if __name__ == "__main__":
    main()
