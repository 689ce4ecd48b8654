"""OtlpLogSink against a local OTLP/HTTP receiver that decodes requests with opentelemetry-proto."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spoolkit import RetryPolicy, Spool, SpoolHandler
from spoolkit.errors import ConfigError, PartialFailure, PermanentError, TransientError
from spoolkit.otel._values import from_any_value
from spoolkit.sinks.otlp import OtlpLogSink, from_parsed_url
from spoolkit.typing import Record
from tests.services.otlp_receiver import OtlpReceiver, start_receiver


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A running receiver on a free loopback port, stopped after the test."""
    server = start_receiver()
    yield server
    server.stop()


def _attrs(log: Any) -> dict[str, Any]:
    return {kv.key: from_any_value(kv.value) for kv in log.attributes}


def test_handler_records_arrive_as_otlp_log_records(receiver: OtlpReceiver, tmp_path: Path) -> None:
    """A logging record reaches the receiver with severity, body, scope, attributes, trace
    context and the record id as log.record.uid, gzip-compressed protobuf."""
    sink = OtlpLogSink(receiver.endpoint, service_name="billing", resource={"env": "test"})
    options = {"batch_interval": 0, "workers": 1}  # one worker: the records arrive in order
    handler = SpoolHandler(str(tmp_path / "spool"), sink=sink, spool_options=options)
    logger = logging.getLogger("test.otlp.handler")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    trace = {"otelTraceID": "0af7651916cd43dd8448eb211c80319c", "otelSpanID": "b7ad6b7169203331"}
    try:
        logger.warning("paid %d ✓", 3, extra={"order": 17, "tags": ["a", "b"], **trace})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        handler.close()
    receiver.wait_for(lambda: len(receiver.log_records()) == 2)
    assert receiver.headers[0]["Content-Encoding"] == "gzip"
    assert receiver.headers[0]["Content-Type"] == "application/x-protobuf"
    request = receiver.logs[0]
    resource = {
        kv.key: from_any_value(kv.value) for kv in request.resource_logs[0].resource.attributes
    }
    assert resource == {"service.name": "billing", "env": "test"}
    assert request.resource_logs[0].scope_logs[0].scope.name == "test.otlp.handler"
    paid, failed = receiver.log_records()
    assert paid.severity_number == 13
    assert paid.severity_text == "WARNING"
    assert paid.body.string_value == "paid 3 ✓"
    assert paid.trace_id.hex() == trace["otelTraceID"]
    assert paid.span_id.hex() == trace["otelSpanID"]
    assert abs(paid.time_unix_nano / 1e9 - time.time()) < 60
    attrs = _attrs(paid)
    assert attrs["order"] == 17
    assert attrs["tags"] == ("a", "b")
    assert attrs["code.function.name"] == "test_handler_records_arrive_as_otlp_log_records"
    assert "otelTraceID" not in attrs
    assert attrs["log.record.uid"].endswith("-0")
    failed_attrs = _attrs(failed)
    assert failed.severity_number == 17
    assert failed_attrs["exception.type"] == "ValueError"
    assert failed_attrs["exception.message"] == "boom"
    assert "Traceback" in failed_attrs["exception.stacktrace"]
    assert failed.trace_id == b""


def test_structlog_dicts_and_plain_items() -> None:
    """A structlog event dict maps event/level/keys; a plain item becomes the body."""
    sink = OtlpLogSink("http://127.0.0.1:9")
    request, _ = sink.encode(
        [
            Record("a", {"event": "hi", "level": "info", "user": 3, "trace_id": "zz"}, 1.5),
            Record("b", [1, "x"], 2.0),
        ]
    )
    scope = request.resource_logs[0].scope_logs
    first, second = scope[0].log_records[0], scope[0].log_records[1]
    assert first.body.string_value == "hi"
    assert first.severity_number == 9
    assert _attrs(first) == {"log.record.uid": "a", "user": 3, "trace_id": "zz"}
    assert first.time_unix_nano == first.observed_time_unix_nano == 1_500_000_000
    assert from_any_value(second.body) == (1, "x")


def test_partial_success_names_exactly_the_rejected_records(receiver: OtlpReceiver) -> None:
    """rejected_log_records maps to a PartialFailure naming exactly the records refused."""
    receiver.reject = lambda log: log.body.string_value.startswith("old")
    sink = OtlpLogSink(receiver.endpoint)
    batch = [Record(f"r{i}", "old" if i % 3 == 0 else f"new {i}", 0.0) for i in range(7)]
    with pytest.raises(PartialFailure, match=r"rejected 3 of 7.*too old") as info:
        sink.write(batch)
    assert info.value.failed == ["r0", "r3", "r6"]
    assert isinstance(info.value.cause, PermanentError)
    with pytest.raises(PermanentError, match="rejected all 3"):
        sink.write([r for r in batch if r.id in info.value.failed])
    sink.close()


def test_partial_failure_through_a_spool_dead_letters_only_the_rejected(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """Through a Spool: accepted records are delivered, rejected ones end as dead letters."""
    receiver.reject = lambda log: log.body.string_value == "bad"
    retry = RetryPolicy(initial_wait=0.01, max_wait=0.01, jitter=0)
    sink = OtlpLogSink(receiver.endpoint)
    with Spool(tmp_path / "s", sink, batch_interval=0.2, retry=retry) as spool:
        spool.put_many(["good 1", "bad", "good 2"])
        assert spool.flush(timeout=10)
        dead = [entry.record.item for entry in spool.dead_letters.list()]
    assert dead == ["bad"]
    bodies = {r.body.string_value for r in receiver.log_records()}
    assert bodies == {"good 1", "good 2"}


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, TransientError),
        (503, TransientError),
        (502, TransientError),
        (500, PermanentError),
        (400, PermanentError),
        (401, PermanentError),
    ],
)
def test_statuses_map_per_the_otlp_spec(
    receiver: OtlpReceiver, status: int, kind: type[Exception]
) -> None:
    """429/502/503/504 are transient; every other error status is permanent (OTLP/HTTP spec)."""
    receiver.status = status
    receiver.retry_after = "7"
    sink = OtlpLogSink(receiver.endpoint, headers={"Authorization": "Bearer s3cret-token"})
    with pytest.raises(kind) as info:
        sink.write([Record("a", "x", 0.0)])
    assert type(info.value) is kind
    if kind is TransientError:
        assert info.value.retry_after == 7.0  # type: ignore[attr-defined]
    assert "s3cret-token" not in str(info.value)
    sink.close()


def test_receiver_down_is_transient() -> None:
    """A refused connection is a TransientError."""
    receiver = OtlpReceiver()  # never started: its port refuses
    sink = OtlpLogSink(receiver.endpoint, timeout=2)
    with pytest.raises(TransientError, match="ConnectError"):
        sink.write([Record("a", "x", 0.0)])
    sink.close()


def test_url_builds_the_endpoint_and_checks_options() -> None:
    """otlp+http:// takes gzip, timeout and service_name; /v1/logs is added to a bare host."""
    sink = from_parsed_url(
        "otlp+http://collector:4318?gzip=false&timeout=3&service_name=api",
        {"gzip": "false", "timeout": "3", "service_name": "api"},
        "s",
    )
    assert sink.endpoint == "http://collector:4318/v1/logs"
    assert (sink.gzip, sink.timeout) == (False, 3.0)
    assert (
        from_parsed_url("otlp+https://c/custom/logs", {}, "s").endpoint == "https://c/custom/logs"
    )
    with pytest.raises(ConfigError, match="'format'"):
        from_parsed_url("otlp+http://c", {"format": "json"}, "s")
    with pytest.raises(ConfigError, match="gzip"):
        from_parsed_url("otlp+http://c", {"gzip": "maybe"}, "s")
    with pytest.raises(ConfigError, match="http:// or https://"):
        OtlpLogSink("ftp://c")
    assert "s3cret" not in repr(OtlpLogSink("http://user:s3cret@c:4318?token=s3cret"))


def test_sinks_package_exports_the_new_sinks_lazily() -> None:
    """spoolkit.sinks exports OtlpLogSink and SyslogSink without importing OpenTelemetry."""
    from tests.helpers import python_stdout

    code = (
        "import sys, spoolkit.sinks as s\n"
        "print(sorted(m for m in ('opentelemetry', 'google.protobuf') if m in sys.modules))\n"
        "print(s.OtlpLogSink.__module__, s.SyslogSink.__module__)\n"
    )
    before, after = python_stdout(code).strip().splitlines()
    assert "opentelemetry" not in before
    assert "google.protobuf" not in before
    assert after == "spoolkit.sinks.otlp spoolkit.sinks.syslog"


@pytest.mark.parametrize(
    ("value", "back"),
    [
        ("é", "é"),
        (True, True),
        (-(2**63), -(2**63)),
        (2**64, str(2**64)),  # beyond int64: kept as text
        (1.5, 1.5),
        (b"\x00", b"\x00"),
        ([], ()),
        ({}, {}),
        ([1, [None, "x"], {"k": [True]}], (1, (None, "x"), {"k": (True,)})),
        (None, None),
        (object, str(object)),
    ],
)
def test_values_become_any_values_and_back(value: Any, back: Any) -> None:
    """Every JSON-ish value maps to an AnyValue and back (empty lists and dicts keep their kind)."""
    from spoolkit.otel._values import to_any_value

    assert from_any_value(to_any_value(value)) == back


def test_headers_come_from_the_otel_environment_variables(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without headers=, OTEL_EXPORTER_OTLP_LOGS_HEADERS (else _HEADERS) are sent, decoded."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-general=1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "api-key=a%20b%3Dc, x-team=t")
    sink = OtlpLogSink(receiver.endpoint)
    sink.write([Record("a", "x", 0.0)])
    sink.close()
    sent = {k.lower(): v for k, v in receiver.headers[0].items()}
    assert sent["api-key"] == "a b=c"
    assert sent["x-team"] == "t"
    assert "x-general" not in sent
    receiver.status = 401
    failing = OtlpLogSink(receiver.endpoint)
    with pytest.raises(PermanentError) as info:
        failing.write([Record("a", "x", 0.0)])
    failing.close()
    assert "a b=c" not in str(info.value)


def test_the_otlp_sink_does_not_need_the_sdk() -> None:
    """OtlpLogSink needs opentelemetry-proto only: importing it loads no OpenTelemetry SDK."""
    from tests.helpers import python_stdout

    code = "import sys, spoolkit.sinks.otlp\nprint('opentelemetry.sdk' in sys.modules)\n"
    assert python_stdout(code).strip() == "False"
