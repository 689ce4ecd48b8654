"""SpoolProcessor in real structlog pipelines: pass-through, drop, context, exceptions, errors."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from freezegun import freeze_time

from spoolkit import Spool, SpoolProcessor
from spoolkit.errors import ConfigError, SpoolFull
from spoolkit.testing import MemorySink


class ListSpool:
    """A spool stand-in that keeps what is put."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def put(self, item: Any, *, timeout: float | None = None) -> None:
        self.items.append(item)


@pytest.fixture(name="out")
def fixture_out() -> Iterator[io.StringIO]:
    """The console the pipeline renders to; structlog's defaults restored afterwards."""
    buf = io.StringIO()
    yield buf
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def configure(out: io.StringIO, processor: SpoolProcessor, *tail: Any) -> None:
    """A typical production pipeline with ``processor`` before the JSON renderer."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            processor,
            *tail,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    """The JSON lines rendered so far."""
    return [json.loads(line) for line in out.getvalue().splitlines()]


@freeze_time("2024-05-01 12:00:00.123456")
def test_event_goes_to_spool_and_console(out: io.StringIO) -> None:
    """drop=False: the event is spooled and still rendered, identical, timestamp included."""
    spool = ListSpool()
    configure(out, SpoolProcessor(spool))
    structlog.get_logger().info("user_login", user="bob", attempt=2)
    expected = {
        "event": "user_login",
        "user": "bob",
        "attempt": 2,
        "level": "info",
        "timestamp": "2024-05-01T12:00:00.123456Z",
    }
    assert spool.items == [expected]
    assert lines(out) == [expected]


def test_drop_ends_the_event_in_the_spool(out: io.StringIO) -> None:
    """drop=True: the event is spooled and nothing reaches the renderer."""
    spool = ListSpool()
    configure(out, SpoolProcessor(spool, drop=True))
    structlog.get_logger().warning("quiet")
    assert [i["event"] for i in spool.items] == ["quiet"]
    assert out.getvalue() == ""


def test_bound_and_context_variables_arrive(out: io.StringIO) -> None:
    """Values bound on the logger and in contextvars are in the spooled event."""
    spool = ListSpool()
    configure(out, SpoolProcessor(spool))
    structlog.contextvars.bind_contextvars(request_id="r-1")
    log = structlog.get_logger().bind(user="bob", tags=["a", "b"], meta={"k": 1})
    log.info("did_it")
    [item] = spool.items
    assert item["request_id"] == "r-1"
    assert (item["user"], item["tags"], item["meta"]) == ("bob", ["a", "b"], {"k": 1})


def test_exception_text_arrives_after_format_exc_info(out: io.StringIO) -> None:
    """log.exception after format_exc_info spools the traceback text under 'exception'."""
    spool = ListSpool()
    configure(out, SpoolProcessor(spool))
    try:
        {}["missing"]
    except KeyError:
        structlog.get_logger().exception("lookup_failed")
    [item] = spool.items
    assert item["level"] == "error"
    assert "KeyError: 'missing'" in item["exception"]
    assert "exc_info" not in item
    assert lines(out)[0]["exception"] == item["exception"]


def test_exc_info_without_format_exc_info_is_formatted_in_the_copy() -> None:
    """An exc_info still in the event is spooled as text; the event passed on keeps it."""
    spool = ListSpool()
    processor = SpoolProcessor(spool)
    try:
        raise ValueError("bad")
    except ValueError as exc:
        event = {"event": "e", "exc_info": exc}
        passed = processor(None, "error", event)
    assert passed is event
    assert passed["exc_info"] is not None
    assert "ValueError: bad" in spool.items[0]["exception"]
    assert "exc_info" not in spool.items[0]


def test_later_processors_do_not_change_the_spooled_copy(out: io.StringIO) -> None:
    """The spooled event is a copy: a processor after it that edits the event changes nothing."""

    def scrub(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        event.pop("user")
        event["scrubbed"] = True
        return event

    spool = ListSpool()
    configure(out, SpoolProcessor(spool), scrub)
    structlog.get_logger().info("e", user="bob")
    assert spool.items[0]["user"] == "bob"
    assert "scrubbed" not in spool.items[0]
    assert lines(out)[0]["scrubbed"] is True


def test_values_json_cannot_hold_become_repr(out: io.StringIO) -> None:
    """Non-JSON values are spooled as their repr, so any serializer can store the event."""
    spool = ListSpool()
    configure(out, SpoolProcessor(spool, drop=True))
    path = Path("/tmp/x")
    structlog.get_logger().info("e", path=path, when={1, 2}, ratio=float("inf"))
    [item] = spool.items
    assert item["path"] == repr(path)
    assert item["when"] == "{1, 2}"
    assert item["ratio"] == "inf"
    json.dumps(item, allow_nan=False)


def test_real_spool_delivers_the_events(out: io.StringIO, tmp_path: Path) -> None:
    """Through a real spool, every event reaches the sink as the pipeline built it."""
    sink = MemorySink()
    with Spool(tmp_path / "s", sink, workers=1, batch_interval=0) as spool:
        configure(out, SpoolProcessor(spool))
        log = structlog.get_logger().bind(job="etl")
        for i in range(20):
            log.info("row", n=i)
        assert spool.flush(10)
    assert sorted(i["n"] for i in sink.items) == list(range(20))
    assert all(i["job"] == "etl" and i["level"] == "info" for i in sink.items)
    assert len(lines(out)) == 20


def test_a_failing_put_never_raises(out: io.StringIO, capsys: pytest.CaptureFixture[str]) -> None:
    """A put that raises is counted and reported on stderr; the event still goes on."""

    class Broken:
        def put(self, item: Any, *, timeout: float | None = None) -> None:
            raise OSError("disk on fire")

    processor = SpoolProcessor(Broken())
    configure(out, processor)
    structlog.get_logger().info("e")
    assert processor.errors == 1
    assert isinstance(processor.last_error, OSError)
    assert "disk on fire" in capsys.readouterr().err
    assert [line["event"] for line in lines(out)] == ["e"]


def test_a_full_spool_drops_and_counts(out: io.StringIO) -> None:
    """SpoolFull (no room within put_timeout) counts a drop; with drop=True the event still ends."""
    seen: list[float | None] = []

    class Full:
        def put(self, item: Any, *, timeout: float | None = None) -> None:
            seen.append(timeout)
            raise SpoolFull("full")

    processor = SpoolProcessor(Full(), drop=True, put_timeout=0.2)
    configure(out, processor)
    structlog.get_logger().info("e")
    assert (processor.dropped, processor.errors, seen) == (1, 0, [0.2])
    assert out.getvalue() == ""


def test_logging_from_inside_put_is_skipped(out: io.StringIO) -> None:
    """An event logged while the processor is putting (same thread) is not spooled again."""

    class Chatty(ListSpool):
        def put(self, item: Any, *, timeout: float | None = None) -> None:
            structlog.get_logger().info("from_inside")
            super().put(item, timeout=timeout)

    spool = Chatty()
    processor = SpoolProcessor(spool)
    configure(out, processor)
    structlog.get_logger().info("outer")
    assert [i["event"] for i in spool.items] == ["outer"]
    assert processor.skipped == 1
    assert [line["event"] for line in lines(out)] == ["from_inside", "outer"]


def test_works_in_a_stdlib_backed_pipeline() -> None:
    """With structlog.stdlib, the spooled event carries the logger name and level."""
    spool = ListSpool()
    structlog.configure(
        processors=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            SpoolProcessor(spool, drop=True),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    try:
        structlog.get_logger("svc").warning("careful", n=1)
    finally:
        structlog.reset_defaults()
    assert spool.items == [{"event": "careful", "n": 1, "logger": "svc", "level": "warning"}]
    assert logging.getLogger("svc").handlers == []


@pytest.mark.parametrize(
    ("spool", "kwargs", "match"),
    [(object(), {}, "with put"), (ListSpool(), {"put_timeout": -1}, "put_timeout")],
)
def test_bad_arguments_are_config_errors(spool: Any, kwargs: dict[str, Any], match: str) -> None:
    """A spool without put, or a negative put_timeout, is a ConfigError."""
    with pytest.raises(ConfigError, match=match):
        SpoolProcessor(spool, **kwargs)


_LATE_EVENT = """
import atexit, sys, structlog
log = structlog.get_logger()
atexit.register(lambda: log.info("late_event"))  # runs after spoolkit's exit hook (LIFO)
import spoolkit
from spoolkit.testing import MemorySink
spool = spoolkit.Spool(sys.argv[1], MemorySink(), serializer="json")
spool.start()
structlog.configure(processors=[spoolkit.SpoolProcessor(spool, drop=True)])
log.info("hello")
"""


def test_an_event_after_the_exit_hook_stopped_the_spool_prints_nothing(tmp_path: Path) -> None:
    """An event logged at exit after spoolkit's exit hook stopped the spool: no traceback."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _LATE_EVENT, str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
