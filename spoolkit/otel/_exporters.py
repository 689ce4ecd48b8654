"""Durable wrappers for OpenTelemetry span and log exporters."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from spoolkit.errors import ConfigError, PartialFailure, PermanentError, TransientError
from spoolkit.otel._rebuild import logs_from_request, spans_from_request
from spoolkit.retry import RetryPolicy
from spoolkit.spool.facade import Spool, WhenFull
from spoolkit.typing import Record

__all__ = ["DurableLogExporter", "DurableSpanExporter", "default_retry", "durable", "raw_sender"]

_log = logging.getLogger("spoolkit.otel")

T = TypeVar("T")  # the SDK's item: ReadableSpan or ReadableLogRecord


def default_retry() -> RetryPolicy:
    """The wrappers' retry policy: an exporter only says FAILURE, never why, so a batch is
    retried (backoff up to 60 s) for a day, then dead-lettered (``spoolkit dead requeue``)."""
    return RetryPolicy(max_age=86400.0, max_wait=60.0)


# OTLP/HTTP statuses worth another try (the specification's list); other 4xx/5xx are not.
_RETRYABLE = frozenset({429, 502, 503, 504})

RawSend = Callable[[bytes], Any]


def raw_sender(exporter: Any) -> RawSend | None:
    """For the OTLP/HTTP exporters of ``opentelemetry-exporter-otlp-proto-http``: the
    exporter's own HTTP client (its endpoint, headers, TLS, compression and retries), to post
    stored requests as they are, without rebuilding SDK objects and encoding them again.

    None for any other exporter (a subclass too: it may change ``export``), and for a release
    whose client does not look as expected: those go through ``exporter.export``.
    """
    try:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import (  # noqa: PLC0415
            OTLPLogExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
    except ImportError:  # pragma: no cover - the extra installs it
        return None
    if type(exporter) not in (OTLPSpanExporter, OTLPLogExporter):
        return None
    send = getattr(getattr(exporter, "_client", None), "export", None)
    return send if callable(send) else None


class _ExporterSink(Generic[T]):
    """Delivers stored OTLP requests through the wrapped exporter, one request per spool
    batch: the stored bytes as they are for the OTLP/HTTP exporters (protobuf messages
    concatenated are one message with the repeated fields of all), otherwise every stored
    request turned back into SDK objects and handed to ``exporter.export``."""

    def __init__(
        self,
        exporter: Any,
        decode: Callable[[bytes], list[T]],
        success: Any,
        description: str,
    ) -> None:
        self.exporter = exporter
        self.raw = raw_sender(exporter)
        self._decode = decode
        self._success = success
        self._description = description
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return self._description

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    def write(self, batch: Sequence[Record]) -> None:
        if self.raw is not None:
            self._post(b"".join(record.item for record in batch))
            return
        items: list[T] = []
        bad: list[tuple[Record, Exception]] = []
        for record in batch:
            try:
                items.extend(self._decode(record.item))
            except Exception as exc:  # protobuf's DecodeError, or bytes that are not a request
                bad.append((record, exc))
        if bad and len(bad) == len(batch):
            raise PermanentError(
                f"stored batch {bad[0][0].id!r} is not an OTLP request: {bad[0][1]!r}",
                sink=self._description,
            ) from bad[0][1]
        name = type(self.exporter).__name__
        with self._lock:  # SDK exporters expect one export call at a time
            try:
                result = self.exporter.export(items)
            except Exception as exc:
                raise TransientError(
                    f"{name}.export raised {exc!r}", sink=self._description
                ) from exc
        if result != self._success:
            raise TransientError(f"{name}.export returned {result!r}", sink=self._description)
        if bad:
            raise PartialFailure(
                [r.id for r, _ in bad],
                "stored batch(es) are not OTLP requests",
                cause=PermanentError(repr(bad[0][1])),
                sink=self._description,
            )

    def _post(self, data: bytes) -> None:
        assert self.raw is not None
        with self._lock:
            try:
                result = self.raw(data)
            except Exception as exc:
                raise TransientError(f"OTLP export raised {exc!r}", sink=self._description) from exc
        if getattr(result, "success", False) is True:
            return
        status = getattr(result, "status_code", None)
        detail = getattr(result, "reason", None) or getattr(result, "error", None) or "no answer"
        message = (
            f"OTLP export failed: HTTP {status}: {detail}"
            if status
            else f"OTLP export failed: {detail}"
        )
        if isinstance(status, int) and status >= 400 and status not in _RETRYABLE:
            raise PermanentError(message, sink=self._description)
        raise TransientError(message, sink=self._description)


class _Durable(Generic[T]):
    """What both wrappers share: a Spool in front of the wrapped exporter.

    A wrapper names its signal in class attributes: ``_kind`` ("Span", "Log"), ``_encode``
    (SDK items to an OTLP request), ``_decode`` (stored bytes back to SDK items) and the
    export results ``_success``/``_failure``.
    """

    _kind = ""
    _encode: Callable[[Sequence[T]], Any]
    _decode: Callable[[bytes], list[T]]
    _success: Any
    _failure: Any

    def __init__(
        self,
        exporter: Any,
        path: str | os.PathLike[str],
        *,
        retry: RetryPolicy | None = None,
        batch_size: int = 16,
        batch_interval: float = 0.2,
        fsync: str = "interval",
        max_bytes: int | None = None,
        when_full: WhenFull = "block",
        put_timeout: float = 1.0,
        shutdown_timeout: float = 10.0,
    ) -> None:
        if put_timeout < 0:
            raise ConfigError(f"put_timeout must be >= 0 seconds, not {put_timeout!r}")
        self.exporter = exporter
        self.put_timeout = put_timeout
        self.shutdown_timeout = shutdown_timeout
        self.accepted = 0
        """Items this exporter has stored and answered SUCCESS for (since it was made)."""
        description = f"Durable{self._kind}Exporter({type(exporter).__name__})"
        self._sink: _ExporterSink[T] = _ExporterSink(
            exporter, self._decode, self._success, description
        )
        self.spool = Spool(
            path,
            self._sink,
            workers=1,
            batch_size=batch_size,
            batch_interval=batch_interval,
            retry=retry if retry is not None else default_retry(),
            fsync=fsync,
            max_bytes=max_bytes,
            when_full=when_full,
            serializer="raw",
        )
        """The spool holding what was exported and not yet delivered."""
        self._count_lock = threading.Lock()
        self._shutdown = False
        self.spool.start()

    def __repr__(self) -> str:
        return f"Durable{self._kind}Exporter({self.exporter!r}, path={self.spool.path!r})"

    def export(self, batch: Sequence[T]) -> Any:
        """Store ``batch`` as one OTLP request; SUCCESS once it is in the spool.

        FAILURE (the SDK then drops the batch, as it would for any exporter) only when the
        exporter was shut down, the batch cannot be encoded, or the spool stays full for
        ``put_timeout`` seconds.
        """
        if self._shutdown:
            return self._failure
        if not batch:
            return self._success
        try:
            data = self._encode(batch).SerializeToString()
            self.spool.put(data, timeout=self.put_timeout)
        except Exception:
            _log.exception("otel_export_not_stored items=%d", len(batch))
            return self._failure
        with self._count_lock:
            self.accepted += len(batch)
        return self._success

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait up to ``timeout_millis`` for everything stored to be delivered; True if it was.

        What is not delivered in time stays on disk, retried as the retry policy says. False
        after ``shutdown()``.
        """
        if self._shutdown:
            return False
        return bool(self.spool.flush(timeout=timeout_millis / 1000))

    def shutdown(self, timeout_millis: int | None = None) -> None:
        """Refuse further batches, deliver what is stored for up to ``shutdown_timeout``
        seconds (or ``timeout_millis``), then shut the wrapped exporter down. What is left
        stays on disk: the next exporter opened on the same path delivers it."""
        if self._shutdown:
            return
        self._shutdown = True
        timeout = self.shutdown_timeout if timeout_millis is None else timeout_millis / 1000
        try:
            self.spool.stop(timeout=max(0.0, timeout))
        finally:
            self.exporter.shutdown()


def _spans(data: bytes) -> list[ReadableSpan]:
    return spans_from_request(ExportTraceServiceRequest.FromString(data))


def _logs(data: bytes) -> list[ReadableLogRecord]:
    return logs_from_request(ExportLogsServiceRequest.FromString(data))


class DurableSpanExporter(_Durable[ReadableSpan], SpanExporter):
    """A ``SpanExporter`` that stores each batch on disk and delivers it through ``exporter``.

    Put it where the exporter went: ``BatchSpanProcessor(DurableSpanExporter(OTLPSpanExporter(),
    "/var/spool/app-traces"))``. ``export`` encodes the batch as an OTLP
    ``ExportTraceServiceRequest`` (the exporter package's own encoder), stores the bytes in a
    :class:`~spoolkit.Spool` and answers SUCCESS. One worker thread delivers what is stored,
    merging up to ``batch_size`` stored requests per call: for the OTLP/HTTP exporters of
    ``opentelemetry-exporter-otlp-proto-http`` it posts the stored protobuf as it is through
    the exporter's own HTTP client (its endpoint, headers, TLS, compression); for any other
    exporter it turns the stored requests back into spans, identical field for field, and
    calls ``exporter.export``. A FAILURE (or an exception) is retried with ``retry``; a batch
    that never goes through is dead-lettered, and at once when the collector answers a
    status OTLP forbids retrying (400, 401, 403, 404, 413, 500...). A collector outage, a full
    SDK queue downstream or a kill -9 loses nothing that was answered SUCCESS (after a kill
    the next exporter opened on ``path`` delivers it; an OS crash can lose the last
    ``fsync="interval"`` second: pass ``fsync="always"`` to rule that out).

    Args:
        exporter: any ``SpanExporter`` (OTLP/HTTP or gRPC, Zipkin, the console...). It should
            fail fast: give it a short ``timeout``, spoolkit does the waiting.
        path: the spool directory (dead letters in ``<path>/dead``).
        retry: the retry policy (:func:`default_retry`: a day of retries, then a dead letter).
        batch_size: the most stored SDK batches merged into one ``exporter.export`` call.
        batch_interval: how long a delivery waits for more stored batches, in seconds.
        fsync: as for :class:`~spoolkit.Spool` (``"always"`` to survive power loss too).
        max_bytes: as for :class:`~spoolkit.Spool`: the spool's cap on disk.
        when_full: as for :class:`~spoolkit.Spool`: what ``export`` does at ``max_bytes``.
        put_timeout: the most seconds ``export`` waits for room in a full spool before
            answering FAILURE.
        shutdown_timeout: seconds ``shutdown()`` spends delivering what is stored.
    """

    _kind = "Span"

    _encode = staticmethod(encode_spans)
    _decode = staticmethod(_spans)
    _success = SpanExportResult.SUCCESS
    _failure = SpanExportResult.FAILURE

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result: SpanExportResult = super().export(spans)
        return result


class DurableLogExporter(_Durable[ReadableLogRecord], LogRecordExporter):
    """A ``LogRecordExporter`` that stores each batch on disk and delivers it through
    ``exporter``: :class:`DurableSpanExporter` for logs (``BatchLogRecordProcessor``), with
    batches stored as OTLP ``ExportLogsServiceRequest`` bytes. The arguments are the same.
    """

    _kind = "Log"

    _encode = staticmethod(encode_logs)
    _decode = staticmethod(_logs)
    _success = LogRecordExportResult.SUCCESS
    _failure = LogRecordExportResult.FAILURE

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        result: LogRecordExportResult = super().export(batch)
        return result


def durable(
    exporter: SpanExporter | LogRecordExporter, path: str | os.PathLike[str], **options: Any
) -> DurableSpanExporter | DurableLogExporter:
    """Wrap ``exporter`` in the durable exporter of its kind (spans or logs).

    Raises:
        ConfigError: ``exporter`` is neither a ``SpanExporter`` nor a ``LogRecordExporter``.
    """
    if isinstance(exporter, SpanExporter):
        return DurableSpanExporter(exporter, path, **options)
    if isinstance(exporter, LogRecordExporter):
        return DurableLogExporter(exporter, path, **options)
    raise ConfigError(
        f"durable() wraps a SpanExporter or a LogRecordExporter, not {type(exporter).__name__}"
    )
