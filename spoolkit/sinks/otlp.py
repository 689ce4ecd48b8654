"""OtlpLogSink: send log records to an OpenTelemetry collector over OTLP/HTTP (protobuf)."""

from __future__ import annotations

import calendar
import datetime as dt
import gzip as gzip_module
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from spoolkit._internal.redact import carry_secrets, redact_url, secrets_in_header, secrets_in_url
from spoolkit.errors import ConfigError, PartialFailure, PermanentError, SinkError, TransientError
from spoolkit.sinks._encode import Encoded
from spoolkit.typing import Record

try:
    import httpx
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    from spoolkit.otel._values import add_key_values, key_values, set_any_value
    from spoolkit.sinks.http import map_http_failure
except ImportError as exc:  # pragma: no cover - exercised only without the extras installed
    raise ImportError(
        "OtlpLogSink needs opentelemetry-proto and httpx: pip install 'spoolkit[otel]'"
    ) from exc

__all__ = ["URL_OPTIONS", "OtlpLogSink", "from_parsed_url", "to_log_record"]

_log = logging.getLogger("spoolkit.sinks.otlp")

# logging level names -> OTLP SeverityNumber (the mapping of the OpenTelemetry SDK's handler)
_SEVERITY = {
    "NOTSET": 0,
    "TRACE": 1,
    "DEBUG": 5,
    "INFO": 9,
    "NOTICE": 10,
    "WARNING": 13,
    "WARN": 13,
    "ERROR": 17,
    "CRITICAL": 21,
    "FATAL": 21,
}
# OTLP/HTTP: only these statuses may be retried; every other 4xx and 5xx must not be.
_RETRYABLE = frozenset({429, 502, 503, 504})
_HEX = re.compile(r"^[0-9a-fA-F]+$")
# Keys of a SpoolHandler dict that become fields of the LogRecord rather than attributes.
_HANDLER_KEYS = frozenset(
    {"timestamp", "level", "logger", "message", "event", "extra", "exception", "stack"}
)
_TRACE_KEYS = {
    "trace_id": ("trace_id", "otelTraceID"),
    "span_id": ("span_id", "otelSpanID"),
    "flags": ("trace_flags", "otelTraceSampled"),
}


def _nanos(stamp: Any) -> int | None:
    """Nanoseconds since the epoch from an ISO-8601 text (``...Z`` or an offset), or None."""
    if not isinstance(stamp, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    moment = moment.astimezone(dt.UTC)
    seconds = calendar.timegm(moment.timetuple())
    return seconds * 1_000_000_000 + moment.microsecond * 1000


def _hex_id(value: Any, size: int) -> bytes | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2 ** (8 * size):
        return value.to_bytes(size, "big")
    if isinstance(value, str) and len(value) == 2 * size and _HEX.match(value):
        raw = bytes.fromhex(value)
        return raw if any(raw) else None
    return None


def _take_trace(fields: dict[str, Any], log: LogRecord) -> None:
    """Move a trace context found in ``fields`` (``trace_id``/``span_id``/``trace_flags``, or
    the ``otelTraceID``/``otelSpanID``/``otelTraceSampled`` of OpenTelemetry's logging
    instrumentation) into ``log``; keys that are not valid ids stay attributes."""
    for key in _TRACE_KEYS["trace_id"]:
        trace_id = _hex_id(fields.get(key), 16)
        if trace_id is not None:
            log.trace_id = trace_id
            del fields[key]
            break
    for key in _TRACE_KEYS["span_id"]:
        span_id = _hex_id(fields.get(key), 8)
        if span_id is not None:
            log.span_id = span_id
            del fields[key]
            break
    if "trace_flags" in fields and isinstance(fields["trace_flags"], int):
        log.flags = fields.pop("trace_flags") & 0xFF
    elif "otelTraceSampled" in fields and isinstance(fields["otelTraceSampled"], bool):
        log.flags = 1 if fields.pop("otelTraceSampled") else 0


def to_log_record(record: Record) -> tuple[str, LogRecord]:
    """One record as an OTLP ``LogRecord``, with the name of its instrumentation scope.

    For a :class:`~spoolkit.SpoolHandler` dict (or a structlog event dict):

    - ``time_unix_nano`` from ``timestamp``; ``observed_time_unix_nano`` is when the record
      was put into the spool;
    - ``severity_number``/``severity_text`` from ``level``;
    - the body is ``message`` (structlog: ``event``);
    - the scope is the ``logger`` name (as the OpenTelemetry SDK's logging handler does);
    - attributes: ``log.record.uid`` (the record id, for de-duplication),
      ``code.function.name``, ``code.line.number``, ``code.module``, ``thread.id``,
      ``process.pid``, ``exception.type``/``exception.message``/``exception.stacktrace``
      from the exception text, ``code.stacktrace`` from ``stack``, then every ``extra``
      field (structlog: every other key) as it is;
    - trace context from ``trace_id``/``span_id``/``trace_flags`` (hex text or integers)
      or OpenTelemetry's ``otelTraceID``/``otelSpanID``/``otelTraceSampled`` fields.

    Any other item becomes the body as it is, with ``log.record.uid``.
    """
    item = record.item
    log = LogRecord(observed_time_unix_nano=int(record.enqueued_at * 1e9))
    attributes: dict[str, Any] = {"log.record.uid": record.id}
    scope = ""
    if isinstance(item, Mapping):
        data = dict(item)
        level = str(data.get("level") or "").upper()
        if level:
            log.severity_text = level
            log.severity_number = _SEVERITY.get(level, 0)  # type: ignore[assignment]
        log.time_unix_nano = _nanos(data.get("timestamp")) or log.observed_time_unix_nano
        body = data.get("message", data.get("event"))
        set_any_value(log.body, body)
        scope = str(data.get("logger") or "")
        std = {
            "code.function.name": data.get("function"),
            "code.line.number": data.get("line"),
            "code.module": data.get("module"),
            "thread.id": data.get("thread"),
            "process.pid": data.get("process"),
        }
        attributes.update({k: v for k, v in std.items() if v is not None})
        if isinstance(data.get("exception"), str):
            attributes.update(_exception(data["exception"]))
        if isinstance(data.get("stack"), str):
            attributes["code.stacktrace"] = data["stack"]
        extra = data.get("extra")
        if isinstance(extra, Mapping):
            fields = dict(extra)
        else:  # a structlog event: its other keys
            used = _HANDLER_KEYS | {"function", "line", "module", "thread", "process"}
            fields = {k: v for k, v in data.items() if k not in used}
        _take_trace(fields, log)
        attributes.update(fields)
    else:
        log.time_unix_nano = log.observed_time_unix_nano
        set_any_value(log.body, item)
    add_key_values(log.attributes, attributes.items())
    return scope, log


def _exception(text: str) -> dict[str, str]:
    """``exception.*`` attributes from a formatted traceback (its last line is ``Type: msg``)."""
    found = {"exception.stacktrace": text}
    last = text.rstrip().rsplit("\n", 1)[-1]
    kind, sep, message = last.partition(": ")
    if kind and " " not in kind:
        found["exception.type"] = kind
        if sep:
            found["exception.message"] = message
    return found


class OtlpLogSink:
    """Send log records to an OTLP/HTTP endpoint (``/v1/logs``) as protobuf.

    Each batch is one ``ExportLogsServiceRequest``: one resource (``service.name`` and the
    ``resource`` attributes), a scope per logger name, a ``LogRecord`` per record (see
    :func:`to_log_record`), gzip-compressed unless ``gzip=False``.

    How answers map, per the OTLP/HTTP specification:

    - 2xx with no ``partial_success``: accepted.
    - 2xx with ``partial_success.rejected_log_records`` = k > 0: OTLP does not say which k.
      If that is every record of the batch, :class:`PermanentError` (dead-lettered; OTLP
      forbids retrying rejected data). Otherwise the sink resends the batch's records one
      per request to learn which were rejected and raises :class:`PartialFailure` naming
      exactly those (the others are then acknowledged; they may reach the collector twice,
      with the same ``log.record.uid``). ``error_message`` is in the error.
    - 429, 502, 503, 504 and network errors: :class:`TransientError` (``Retry-After`` kept).
    - any other status: :class:`PermanentError` (the spec forbids retrying it).

    Args:
        endpoint: ``http(s)://host:4318`` (``/v1/logs`` is added when there is no path) or
            the full URL of the logs endpoint.
        service_name: the resource's ``service.name``; ``OTEL_SERVICE_NAME`` or
            ``unknown_service`` by default.
        resource: more resource attributes.
        headers: request headers (an API key); their values never appear in errors. When
            None, those of ``OTEL_EXPORTER_OTLP_LOGS_HEADERS`` or ``OTEL_EXPORTER_OTLP_HEADERS``
            (``key=value,key2=value2``, values percent-decoded), as OTLP exporters do.
        gzip: compress requests (``Content-Encoding: gzip``).
        timeout: seconds allowed to connect, and between bytes sent or received.
        transport: an ``httpx`` transport to send through instead of the network.

    Raises:
        ConfigError: a bad endpoint or timeout.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        service_name: str | None = None,
        resource: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        gzip: bool = True,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        shown = redact_url(endpoint) if isinstance(endpoint, str) else repr(endpoint)
        parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"OtlpLogSink needs an http:// or https:// endpoint: {shown!r}")
        if isinstance(timeout, bool) or not (isinstance(timeout, int | float) and timeout > 0):
            raise ConfigError(f"timeout must be a positive number of seconds, not {timeout!r}")
        path = parts.path if parts.path not in ("", "/") else "/v1/logs"
        self.endpoint = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
        self.gzip = gzip
        self.timeout = float(timeout)
        name = service_name or os.environ.get("OTEL_SERVICE_NAME") or "unknown_service"
        self._resource = Resource(
            attributes=key_values({"service.name": name, **dict(resource or {})}.items())
        )
        if headers is None:
            headers = _env_headers()
        self._headers = {"Content-Type": "application/x-protobuf", **dict(headers)}
        if gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._secrets = secrets_in_url(endpoint)
        for key, value in headers.items():
            self._secrets += secrets_in_header(key, value)
        self._transport = transport
        self._description = f"OtlpLogSink({redact_url(self.endpoint)!r})"
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return self._description

    @property
    def client(self) -> httpx.Client:
        """The shared ``httpx.Client``, created on first use."""
        with self._lock:
            if self._client is None or self._client.is_closed:
                self._client = httpx.Client(
                    timeout=self.timeout, follow_redirects=False, transport=self._transport
                )
            return self._client

    def open(self) -> None:
        """Create the connection pool now rather than at the first write."""
        _ = self.client

    def after_fork(self) -> None:
        """In a forked child: forget the parent's pool without closing it."""
        self._lock = threading.Lock()
        self._client = None

    def close(self) -> None:
        """Close the connection pool. A later ``write`` opens a new one."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def encode(self, batch: Sequence[Record]) -> tuple[ExportLogsServiceRequest, Encoded]:
        """The request for ``batch``, and which records could (not) be turned into logs."""
        scopes: dict[str, list[LogRecord]] = {}
        encoded = Encoded()
        for record in batch:
            try:
                scope, log = to_log_record(record)
            except Exception as exc:  # a value protobuf refuses (a lone surrogate in a key)
                encoded.bad.append((record, exc))
                continue
            scopes.setdefault(scope, []).append(log)
            encoded.ok.append((record, ""))
        resource_logs = ResourceLogs(
            resource=self._resource,
            scope_logs=[
                ScopeLogs(scope=InstrumentationScope(name=name), log_records=logs)
                for name, logs in scopes.items()
            ],
        )
        return ExportLogsServiceRequest(resource_logs=[resource_logs]), encoded

    def write(self, batch: Sequence[Record]) -> None:
        """Send the batch as one OTLP request and check the answer.

        Raises:
            TransientError: 429, 502, 503, 504 or a network error.
            PermanentError: any other status, every record rejected, or none encodable.
            PartialFailure: the collector rejected some records, or some could not be encoded.
        """
        if not batch:
            return
        request, encoded = self.encode(batch)
        encoded.raise_if_all_bad(self._description)
        sent = [record for record, _ in encoded.ok]
        rejected, message = self._send(request)
        if rejected:
            if rejected >= len(sent):
                raise PermanentError(
                    f"the collector rejected all {len(sent)} log record(s): {message}",
                    sink=self._description,
                )
            failed = [r.id for r in sent if self._send(self.encode([r])[0])[0]]
            cause = PermanentError(
                f"the collector rejected {rejected} of {len(sent)} log records: {message}",
                sink=self._description,
            )
            failed += [r.id for r, _ in encoded.bad]
            if failed:
                raise PartialFailure(failed, str(cause), cause=cause, sink=self._description)
        encoded.raise_if_some_bad(self._description)

    def _send(self, request: ExportLogsServiceRequest) -> tuple[int, str]:
        """POST one request; the number of records rejected and the collector's message."""
        content = request.SerializeToString()
        if self.gzip:
            content = gzip_module.compress(content, compresslevel=6, mtime=0)
        try:
            response = self.client.post(self.endpoint, content=content, headers=self._headers)
        except httpx.HTTPError as exc:
            raise map_http_failure(exc, self._description, self._secrets) from exc
        failure = map_http_failure(response, self._description, self._secrets)
        if failure is not None:
            raise _by_otlp_rules(failure, response.status_code, self._secrets)
        answer = ExportLogsServiceResponse()
        if response.content and "protobuf" in response.headers.get("content-type", ""):
            try:
                answer.ParseFromString(response.content)
            except Exception:  # protobuf's DecodeError (google.protobuf ships no types)
                _log.warning("otlp_bad_response sink=%s", self._description)
        partial = answer.partial_success
        if partial.error_message and not partial.rejected_log_records:
            _log.warning(
                "otlp_warning sink=%s message=%r", self._description, partial.error_message
            )
        return partial.rejected_log_records, partial.error_message or "(no message)"


def _env_headers() -> dict[str, str]:
    """Headers from ``OTEL_EXPORTER_OTLP_LOGS_HEADERS`` (else ``OTEL_EXPORTER_OTLP_HEADERS``):
    ``key=value`` pairs separated by commas, percent-decoded (the OpenTelemetry convention)."""
    raw = os.environ.get("OTEL_EXPORTER_OTLP_LOGS_HEADERS") or os.environ.get(
        "OTEL_EXPORTER_OTLP_HEADERS", ""
    )
    found: dict[str, str] = {}
    for pair in raw.split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            found[unquote(key.strip())] = unquote(value.strip())
    return found


def _by_otlp_rules(failure: SinkError, status: int, secrets: Sequence[str]) -> SinkError:
    """OTLP/HTTP retries 429, 502, 503 and 504 only: any other status is permanent."""
    if isinstance(failure, TransientError) and status not in _RETRYABLE:
        return carry_secrets(PermanentError(str(failure), sink=failure.sink), secrets)
    return failure


URL_OPTIONS = ("gzip", "timeout", "service_name")
"""Options ``otlp+http://`` URLs take in their query string."""


def from_parsed_url(url: str, options: Mapping[str, str], shown: str) -> OtlpLogSink:
    """Build an :class:`OtlpLogSink` from ``otlp+http://host:4318`` or ``otlp+https://...``.

    Args:
        url: the URL; its path (``/v1/logs`` when empty) and its query without ``options``
            make the endpoint.
        options: ``gzip`` (default true), ``timeout`` (seconds), ``service_name``.
        shown: the URL with credentials masked, for messages.

    Raises:
        ConfigError: another scheme, an unknown option or a bad value.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("otlp+http", "otlp+https"):
        raise ConfigError(f"{shown!r}: an OTLP URL is otlp+http:// or otlp+https://")
    unknown = sorted(set(options) - set(URL_OPTIONS))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(map(repr, unknown))} in {shown!r}; accepted: "
            + ", ".join(URL_OPTIONS)
        )
    use_gzip = options.get("gzip", "true").strip().lower()
    if use_gzip not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ConfigError(f"option gzip={options['gzip']!r} must be true or false")
    try:
        timeout = float(options.get("timeout", "10"))
    except ValueError:
        raise ConfigError(f"option timeout={options['timeout']!r} must be a number") from None
    query = "&".join(
        p for p in parts.query.split("&") if p and p.partition("=")[0] not in URL_OPTIONS
    )
    endpoint = urlunsplit((scheme.removeprefix("otlp+"), parts.netloc, parts.path, query, ""))
    return OtlpLogSink(
        endpoint,
        service_name=options.get("service_name") or None,
        gzip=use_gzip in ("1", "true", "yes", "on"),
        timeout=timeout,
    )
