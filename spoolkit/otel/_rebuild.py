"""OTLP protobuf requests back to the OpenTelemetry SDK's objects.

The durable exporters store each batch as the OTLP request the exporter package's encoder
makes (``encode_spans``/``encode_logs``). To hand a stored batch to *any* wrapped exporter
(OTLP/HTTP, OTLP/gRPC, the console, an in-memory one in tests) it is turned back into
``ReadableSpan``/``ReadableLogRecord`` objects: encoding those again gives the request that
was stored, field for field (dropped counts, remote parents, trace state and flags
included; a test holds the round trip to that).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope as PBScope
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PBResource
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PBSpan
from opentelemetry.proto.trace.v1.trace_pb2 import SpanFlags
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from spoolkit.otel._values import from_any_value

__all__ = ["logs_from_request", "spans_from_request"]

_KINDS = {
    PBSpan.SpanKind.SPAN_KIND_INTERNAL: SpanKind.INTERNAL,
    PBSpan.SpanKind.SPAN_KIND_SERVER: SpanKind.SERVER,
    PBSpan.SpanKind.SPAN_KIND_CLIENT: SpanKind.CLIENT,
    PBSpan.SpanKind.SPAN_KIND_PRODUCER: SpanKind.PRODUCER,
    PBSpan.SpanKind.SPAN_KIND_CONSUMER: SpanKind.CONSUMER,
}
_IS_REMOTE = SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK


def _attributes(pairs: Iterable[KeyValue], dropped: int = 0) -> BoundedAttributes:
    """Attributes as the SDK holds them, with the count it had dropped."""
    bounded = BoundedAttributes(
        maxlen=None, attributes={kv.key: from_any_value(kv.value) for kv in pairs}
    )
    bounded.dropped = dropped
    return bounded


def _resource(pb: PBResource, schema_url: str) -> Resource:
    return Resource({kv.key: from_any_value(kv.value) for kv in pb.attributes}, schema_url)


def _scope(pb: PBScope, present: bool, schema_url: str) -> InstrumentationScope | None:
    if not present:
        return None
    return InstrumentationScope(
        pb.name,
        pb.version or None,
        schema_url or None,
        {kv.key: from_any_value(kv.value) for kv in pb.attributes} or None,
    )


def _int_id(raw: bytes) -> int:
    return int.from_bytes(raw, "big") if raw else 0


def _context(trace_id: bytes, span_id: bytes, flags: int, state: str = "") -> SpanContext:
    return SpanContext(
        _int_id(trace_id),
        _int_id(span_id),
        is_remote=bool(flags & _IS_REMOTE),
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState.from_header([state]) if state else TraceState(),
    )


def _status(pb: Any) -> Status:
    code = StatusCode(pb.code)
    return Status(code, pb.message or None) if code is StatusCode.ERROR else Status(code)


def _span(pb: PBSpan, resource: Resource, scope: InstrumentationScope | None) -> ReadableSpan:
    parent = _context(pb.trace_id, pb.parent_span_id, pb.flags) if pb.parent_span_id else None
    events: BoundedList[Event] = BoundedList(None)
    events.extend(
        [
            Event(e.name, _attributes(e.attributes, e.dropped_attributes_count), e.time_unix_nano)
            for e in pb.events
        ]
    )
    events.dropped = pb.dropped_events_count
    links: BoundedList[Link] = BoundedList(None)
    links.extend(
        [
            Link(
                _context(link.trace_id, link.span_id, link.flags, link.trace_state),
                _attributes(link.attributes, link.dropped_attributes_count),
            )
            for link in pb.links
        ]
    )
    links.dropped = pb.dropped_links_count
    return ReadableSpan(
        name=pb.name,
        context=_context(pb.trace_id, pb.span_id, 0, pb.trace_state),
        parent=parent,
        resource=resource,
        attributes=_attributes(pb.attributes, pb.dropped_attributes_count),
        events=events,
        links=links,
        kind=_KINDS.get(pb.kind, SpanKind.INTERNAL),
        status=_status(pb.status),
        start_time=pb.start_time_unix_nano,
        end_time=pb.end_time_unix_nano,
        instrumentation_scope=scope,
    )


def spans_from_request(request: ExportTraceServiceRequest) -> list[ReadableSpan]:
    """The SDK spans an ``ExportTraceServiceRequest`` holds, in order."""
    spans: list[ReadableSpan] = []
    for rs in request.resource_spans:
        resource = _resource(rs.resource, rs.schema_url)
        for ss in rs.scope_spans:
            scope = _scope(ss.scope, ss.HasField("scope"), ss.schema_url)
            spans.extend(_span(pb, resource, scope) for pb in ss.spans)
    return spans


def logs_from_request(request: ExportLogsServiceRequest) -> list[ReadableLogRecord]:
    """The SDK log records an ``ExportLogsServiceRequest`` holds, in order."""
    records: list[ReadableLogRecord] = []
    for rl in request.resource_logs:
        resource = _resource(rl.resource, rl.schema_url)
        for sl in rl.scope_logs:
            scope = _scope(sl.scope, sl.HasField("scope"), sl.schema_url)
            for pb in sl.log_records:
                log = LogRecord(
                    timestamp=pb.time_unix_nano or None,
                    observed_timestamp=pb.observed_time_unix_nano,
                    context=Context(),
                    severity_text=pb.severity_text or None,
                    severity_number=SeverityNumber(pb.severity_number),
                    body=from_any_value(pb.body) if pb.HasField("body") else None,
                    attributes=_attributes(pb.attributes, pb.dropped_attributes_count),
                    event_name=pb.event_name or None,
                )
                # set after: LogRecord would take them from the current span otherwise
                log.trace_id = _int_id(pb.trace_id)
                log.span_id = _int_id(pb.span_id)
                log.trace_flags = TraceFlags(pb.flags & 0xFF)
                records.append(ReadableLogRecord(log, resource, scope))
    return records
