"""spoolkit.otel: durable span and log exporters, with the real OpenTelemetry SDK, the real
OTLP/HTTP exporters and a local receiver that decodes what it gets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    InMemoryLogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from spoolkit import RetryPolicy
from spoolkit.errors import ConfigError
from spoolkit.otel import DurableLogExporter, DurableSpanExporter, durable
from spoolkit.otel._exporters import raw_sender
from spoolkit.otel._rebuild import logs_from_request, spans_from_request
from tests.services.otlp_receiver import OtlpReceiver, start_receiver

FAST = RetryPolicy(initial_wait=0.02, max_wait=0.1, jitter=0)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A running OTLP/HTTP receiver on a free loopback port, stopped after the test."""
    server = start_receiver()
    yield server
    server.stop()


def _wait(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)  # polling with a deadline


def _rich_spans() -> list[Any]:
    """Spans with every field the OTLP encoder writes: parents local and remote, events,
    links, trace state, every attribute type, error status, kinds, and dropped counts."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource({"service.name": "svc", "n": 3}, "https://schema/1"),
        span_limits=SpanLimits(max_span_attributes=4, max_events=2, max_links=1),
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("scope.a", "1.2", "https://schema/s", {"sa": True})
    remote = SpanContext(
        0xABC,
        0xDEF,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "v1")]),
    )
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER) as root:
        root.set_attributes({"s": "é", "i": -7, "f": 1.5, "b": True, "seq": ["a", "b"], "x": 1})
        root.add_event("e1", {"k": 1})
        root.add_event("e2")
        root.add_event("e3", {"k": 3})
        root.set_status(Status(StatusCode.ERROR, "broken"))
        with provider.get_tracer("scope.b").start_as_current_span(
            "child", kind=SpanKind.CLIENT, links=[Link(remote, {"l": 1}), Link(remote)]
        ) as child:
            child.set_status(Status(StatusCode.OK))
    from opentelemetry import context, trace

    token = context.attach(trace.set_span_in_context(trace.NonRecordingSpan(remote)))
    try:
        tracer.start_span("remote-child", kind=SpanKind.CONSUMER).end()
    finally:
        context.detach(token)
    provider.shutdown()
    return list(memory.get_finished_spans())


def test_spans_round_trip_through_the_stored_protobuf_exactly() -> None:
    """Spans rebuilt from the stored OTLP bytes encode to the very same request."""
    spans = _rich_spans()
    stored = encode_spans(spans).SerializeToString()
    rebuilt = spans_from_request(type(encode_spans(spans)).FromString(stored))
    assert encode_spans(rebuilt) == encode_spans(spans)
    assert [s.dropped_attributes for s in rebuilt] == [s.dropped_attributes for s in spans]
    assert rebuilt[-1].parent is not None
    assert rebuilt[-1].parent.is_remote


def test_logs_round_trip_through_the_stored_protobuf_exactly() -> None:
    """Log records rebuilt from the stored OTLP bytes encode to the very same request."""
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource({"service.name": "svc"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("scope.l", "2.0")
    tracer_provider = TracerProvider()
    with tracer_provider.get_tracer("t").start_as_current_span("s"):
        logger.emit(
            LogRecord(
                timestamp=123,
                severity_text="WARN",
                severity_number=SeverityNumber.WARN,
                body={"msg": "ü", "list": [1, 2.5, None], "raw": b"\x00\x01"},
                attributes={"a": "b", "n": 1, "seq": [True, False]},
                event_name="ev",
            )
        )
    logger.emit(LogRecord(body="no trace"))
    records = list(memory.get_finished_logs())
    stored = encode_logs(records).SerializeToString()
    rebuilt = logs_from_request(type(encode_logs(records)).FromString(stored))
    assert encode_logs(rebuilt) == encode_logs(records)
    assert rebuilt[0].log_record.trace_id != 0
    assert rebuilt[1].log_record.trace_id == 0


def _flat(request: Any) -> list[tuple[bytes, bytes, str, str, bytes]]:
    """Every span of a request with its resource and scope (two requests holding the same
    spans split differently into ResourceSpans compare equal)."""
    return [
        (
            rs.resource.SerializeToString(deterministic=True),
            ss.scope.SerializeToString(deterministic=True),
            rs.schema_url,
            ss.schema_url,
            span.SerializeToString(deterministic=True),
        )
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]


class _SubclassedExporter(OTLPSpanExporter):
    """A subclass may change export: the wrapper must call its export, not post raw bytes."""


@pytest.mark.parametrize("kind", [OTLPSpanExporter, _SubclassedExporter])
def test_durable_span_exporter_sends_what_the_bare_exporter_sends(
    receiver: OtlpReceiver, tmp_path: Path, kind: type[OTLPSpanExporter]
) -> None:
    """Through the wrapper the collector receives the same request as from the bare exporter,
    whether the stored bytes are posted as they are or rebuilt into spans first."""
    spans = _rich_spans()
    endpoint = f"{receiver.endpoint}/v1/traces"
    bare = OTLPSpanExporter(endpoint=endpoint, timeout=5)
    assert bare.export(spans) == SpanExportResult.SUCCESS
    wrapped = DurableSpanExporter(kind(endpoint=endpoint, timeout=5), tmp_path / "s")
    assert (raw_sender(wrapped.exporter) is None) == (kind is _SubclassedExporter)
    assert wrapped.export(spans[:2]) == SpanExportResult.SUCCESS
    assert wrapped.export(spans[2:]) == SpanExportResult.SUCCESS
    assert wrapped.force_flush(10_000)
    wrapped.shutdown()
    bare.shutdown()
    assert len(receiver.traces) == 2  # the two stored batches went out as one request
    assert _flat(receiver.traces[0]) == _flat(receiver.traces[1])


def test_a_status_otlp_forbids_retrying_is_dead_lettered_at_once(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """A 400 from the collector dead-letters the stored batch at once; a 503 is retried."""
    receiver.status = 400
    exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces", timeout=2)
    wrapped = DurableSpanExporter(exporter, tmp_path / "s", retry=FAST)
    assert wrapped.export(_rich_spans()) == SpanExportResult.SUCCESS
    _wait(lambda: wrapped.spool.stats().dead_lettered == 1)
    assert "HTTP 400" in wrapped.spool.dead_letters.list()[0].error.message
    receiver.status = 503
    assert wrapped.export(_rich_spans()) == SpanExportResult.SUCCESS
    _wait(lambda: wrapped.spool.stats().retried > 0)
    receiver.status = 200
    assert wrapped.force_flush(10_000)
    assert wrapped.spool.stats().dead_lettered == 1
    wrapped.shutdown()


def test_collector_outage_loses_no_span(tmp_path: Path) -> None:
    """With the collector down, the SDK's batches are stored; once it is up all arrive."""
    receiver = OtlpReceiver()  # not started yet: connections are refused
    exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces", timeout=0.5)
    wrapped = DurableSpanExporter(exporter, tmp_path / "s", retry=FAST)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(wrapped, schedule_delay_millis=20))
    tracer = provider.get_tracer("outage")
    try:
        for i in range(40):
            tracer.start_span(f"span-{i}").end()
        _wait(lambda: wrapped.accepted == 40 and wrapped.spool.stats().retried > 0)
        assert receiver.spans() == []
        receiver.start()
        _wait(lambda: len({s.name for s in receiver.spans()}) == 40)
    finally:
        provider.shutdown()
        receiver.stop()
    assert {s.name for s in receiver.spans()} == {f"span-{i}" for i in range(40)}


def test_collector_outage_loses_no_log_record(tmp_path: Path) -> None:
    """Logs emitted through the SDK's BatchLogRecordProcessor survive a collector outage."""
    receiver = OtlpReceiver()
    exporter = OTLPLogExporter(endpoint=f"{receiver.endpoint}/v1/logs", timeout=0.5)
    wrapped = DurableLogExporter(exporter, tmp_path / "l", retry=FAST)
    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(wrapped, schedule_delay_millis=20))
    logger = provider.get_logger("test.otel.outage")
    try:
        for i in range(40):
            logger.emit(LogRecord(body=f"record {i}", severity_number=SeverityNumber.INFO))
        _wait(lambda: wrapped.accepted == 40 and wrapped.spool.stats().retried > 0)
        receiver.start()
        _wait(lambda: len({r.body.string_value for r in receiver.log_records()}) == 40)
    finally:
        provider.shutdown()
        receiver.stop()
    bodies = {r.body.string_value for r in receiver.log_records()}
    assert bodies == {f"record {i}" for i in range(40)}
    assert {r.severity_number for r in receiver.log_records()} == {9}


_CHILD = textwrap.dedent(
    """
    import sys, time
    from opentelemetry._logs import LogRecord
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from spoolkit import RetryPolicy
    from spoolkit.otel import DurableLogExporter

    path, endpoint, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    retry = RetryPolicy(initial_wait=0.05, max_wait=0.2)
    wrapped = DurableLogExporter(OTLPLogExporter(endpoint=endpoint, timeout=0.5), path, retry=retry)
    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(wrapped, schedule_delay_millis=20))
    log = provider.get_logger("child")
    for i in range(n):
        log.emit(LogRecord(body=f"crash {i}"))
    deadline = time.monotonic() + 20
    while wrapped.accepted < n and time.monotonic() < deadline:
        time.sleep(0.01)
    print("stored" if wrapped.accepted == n else "timeout", flush=True)
    time.sleep(600)
    """
)


def test_kill_9_after_success_loses_nothing(tmp_path: Path) -> None:
    """Records the durable exporter answered SUCCESS for reach the collector after the
    producing process is killed with SIGKILL and the exporter is opened again."""
    receiver = OtlpReceiver()  # down while the child runs
    endpoint = f"{receiver.endpoint}/v1/logs"
    path = tmp_path / "spool"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), endpoint, "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"stored"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]
    receiver.start()
    wrapped = DurableLogExporter(OTLPLogExporter(endpoint=endpoint, timeout=5), path, retry=FAST)
    try:
        _wait(lambda: len({r.body.string_value for r in receiver.log_records()}) == 50)
    finally:
        wrapped.shutdown()
        receiver.stop()
    assert {r.body.string_value for r in receiver.log_records()} == {
        f"crash {i}" for i in range(50)
    }


class _Flaky(SpanExporter):
    """Answers FAILURE ``failures`` times, then SUCCESS; keeps what it accepted."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.accepted: list[Any] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.calls += 1
        if self.calls <= self.failures:
            return SpanExportResult.FAILURE
        self.accepted.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def test_failure_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    """An exporter's FAILURE is retried with the spool's policy; past it, a dead letter."""
    spans = _rich_spans()
    flaky = _Flaky(failures=2)
    wrapped = DurableSpanExporter(flaky, tmp_path / "a", retry=FAST)
    assert wrapped.export(spans) == SpanExportResult.SUCCESS
    assert wrapped.force_flush(10_000)
    assert flaky.calls == 3
    assert encode_spans(flaky.accepted) == encode_spans(spans)
    wrapped.shutdown()

    never = _Flaky(failures=10**9)
    retry = RetryPolicy(max_attempts=2, initial_wait=0.01, jitter=0)
    stuck = DurableSpanExporter(never, tmp_path / "b", retry=retry)
    assert stuck.export(spans) == SpanExportResult.SUCCESS
    _wait(lambda: stuck.spool.stats().dead_lettered == 1)
    dead = stuck.spool.dead_letters.list()
    assert "returned" in dead[0].error.message
    assert dead[0].record.item == encode_spans(spans).SerializeToString()
    stuck.shutdown()


def test_shutdown_refuses_new_batches_and_durable_picks_the_kind(tmp_path: Path) -> None:
    """An empty batch stores nothing; after shutdown export answers FAILURE and force_flush
    False; durable() wraps by kind and refuses others."""
    spans = durable(InMemorySpanExporter(), tmp_path / "s")
    logs = durable(InMemoryLogRecordExporter(), tmp_path / "l")
    assert isinstance(spans, DurableSpanExporter)
    assert isinstance(logs, DurableLogExporter)
    assert spans.export([]) == SpanExportResult.SUCCESS  # nothing to store
    assert spans.spool.stats().enqueued == 0
    spans.shutdown()
    logs.shutdown()
    assert spans.export(_rich_spans()) == SpanExportResult.FAILURE
    assert logs.export([]) == LogRecordExportResult.FAILURE
    assert not spans.force_flush(1000)
    with pytest.raises(ConfigError, match="SpanExporter or a LogRecordExporter"):
        durable(object(), tmp_path / "x")  # type: ignore[arg-type]
