"""SpoolHandler: record to dict, JSON safety, errors, full spools, loop guard, dictConfig, close."""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st

from spoolkit import RetryPolicy, Spool, SpoolHandler
from spoolkit.errors import ClosedError, ConfigError, SpoolFull
from spoolkit.producers.logging_handler import json_safe, record_to_dict, resolve_sink, utc_iso
from spoolkit.testing import FakeClock, FlakySink, MemorySink

KEYS = {
    "timestamp",
    "level",
    "logger",
    "message",
    "module",
    "function",
    "line",
    "process",
    "thread",
    "exception",
    "stack",
    "extra",
}

# dictConfig targets, imported by "tests.test_logging_handler:..." strings.
CONFIG_SINK = MemorySink()


def make_sink() -> MemorySink:
    """A sink factory for dictConfig."""
    return CONFIG_SINK


class ListSpool:
    """A spool stand-in that keeps what is put, and the timeouts it was given."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.timeouts: list[float | None] = []

    def put(self, item: Any, *, timeout: float | None = None) -> None:
        self.items.append(item)
        self.timeouts.append(timeout)


@pytest.fixture(name="logger")
def fixture_logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A non-propagating INFO logger with no handlers, cleaned up after the test."""
    log = logging.getLogger(f"app.{request.node.name}")
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log
    log.handlers.clear()


@pytest.fixture(name="root")
def fixture_root() -> Iterator[logging.Logger]:
    """The root logger, its handlers and level restored after the test."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    yield root
    for h in root.handlers[:]:
        if h not in saved:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)


@pytest.fixture(name="spool")
def fixture_spool(tmp_path: Path) -> Iterator[Spool]:
    """A started spool over a MemorySink (``spool._sink``), stopped after the test."""
    spool = Spool(tmp_path / "spool", MemorySink(), workers=1, batch_interval=0)
    spool.start()
    yield spool
    spool.stop()


def _items(spool: Spool) -> list[Any]:
    assert spool.flush(10)
    sink: MemorySink = spool._sink
    return sink.items


# -- record -> dict ----------------------------------------------------------------------------


@freeze_time("2024-05-01 12:00:00.123456")
def test_record_becomes_the_documented_dict(logger: logging.Logger) -> None:
    """A record becomes a dict with every documented key, args applied, a UTC timestamp."""
    spool = ListSpool()
    logger.addHandler(SpoolHandler(spool))
    logger.info("user %s did %d things", "bob", 3)
    line = sys._getframe().f_lineno - 1
    [item] = spool.items
    assert item == {
        "timestamp": "2024-05-01T12:00:00.123456Z",
        "level": "INFO",
        "logger": logger.name,
        "message": "user bob did 3 things",
        "module": "test_logging_handler",
        "function": "test_record_becomes_the_documented_dict",
        "line": line,
        "process": os.getpid(),
        "thread": threading.get_ident(),
        "exception": None,
        "stack": None,
        "extra": {},
    }


def test_exception_and_stack_are_text(logger: logging.Logger) -> None:
    """exc_info and stack_info arrive as formatted text."""
    spool = ListSpool()
    logger.addHandler(SpoolHandler(spool))
    try:
        1 / 0  # noqa: B018 - the point is the exception
    except ZeroDivisionError:
        logger.exception("failed", stack_info=True)
    [item] = spool.items
    assert item["level"] == "ERROR"
    assert item["exception"].startswith("Traceback (most recent call last)")
    assert "ZeroDivisionError: division by zero" in item["exception"]
    assert item["stack"].startswith("Stack (most recent call last)")
    json.dumps(item, allow_nan=False)


def test_extra_fields_are_kept_and_made_json_safe(logger: logging.Logger) -> None:
    """extra= fields land in 'extra'; values JSON cannot hold become their repr."""
    spool = ListSpool()
    logger.addHandler(SpoolHandler(spool))
    marker = object()
    logger.warning(
        "w",
        extra={"user": "bob", "n": 3, "ok": True, "ratio": 0.5, "obj": marker,
               "nested": {"a": [1, (2, None)], 5: {1}}, "bad": float("nan")},
    )  # fmt: skip
    [item] = spool.items
    assert item["extra"] == {
        "user": "bob",
        "n": 3,
        "ok": True,
        "ratio": 0.5,
        "obj": repr(marker),
        "nested": {"a": [1, [2, None]], "5": "{1}"},
        "bad": "nan",
    }
    json.dumps(item, allow_nan=False)


def test_formatter_output_becomes_the_message(logger: logging.Logger) -> None:
    """With a formatter set, 'message' is what it formats; without, the bare message."""
    spool = ListSpool()
    handler = SpoolHandler(spool)
    logger.addHandler(handler)
    logger.info("plain %d", 1)
    handler.setFormatter(logging.Formatter("%(levelname)s:%(message)s"))
    logger.info("formatted %d", 2)
    assert [i["message"] for i in spool.items] == ["plain 1", "INFO:formatted 2"]
    assert spool.items[1]["extra"] == {}


def test_handler_filters_decide_what_is_spooled(logger: logging.Logger) -> None:
    """Filters on the handler (functions and Filter objects) still drop records."""
    spool = ListSpool()
    handler = SpoolHandler(spool)
    handler.addFilter(lambda r: "secret" not in r.getMessage())
    handler.addFilter(logging.Filter(logger.name))
    logger.addHandler(handler)
    logger.info("kept")
    logger.info("a secret")
    logging.getLogger("elsewhere").addHandler(handler)
    logging.getLogger("elsewhere").warning("other logger")
    logging.getLogger("elsewhere").removeHandler(handler)
    assert [i["message"] for i in spool.items] == ["kept"]


def test_record_to_dict_on_a_bare_record() -> None:
    """record_to_dict works on a hand-made record and uses a given message."""
    rec = logging.LogRecord("x", logging.DEBUG, "/p/m.py", 7, "hi %s", ("you",), None, "f")
    assert record_to_dict(rec)["message"] == "hi you"
    assert record_to_dict(rec, "given")["message"] == "given"
    assert set(record_to_dict(rec)) == KEYS


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000000Z"),
        (1714564800.5, "2024-05-01T12:00:00.500000Z"),
        (1714564800.999999, "2024-05-01T12:00:00.999999Z"),
        (1714564801.25, "2024-05-01T12:00:01.250000Z"),
    ],
)
def test_utc_iso(ts: float, text: str) -> None:
    """Timestamps are UTC ISO-8601 with microseconds and a Z, whatever the cache holds."""
    assert utc_iso(ts) == text


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
any_values = st.recursive(
    json_values
    | st.floats()
    | st.binary()
    | st.sets(st.integers())
    | st.builds(object)
    | st.complex_numbers(),
    lambda children: (
        st.lists(children)
        | st.tuples(children, children)
        | st.dictionaries(st.integers() | st.text() | st.none(), children)
    ),
    max_leaves=20,
)


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(json_values)
def test_json_values_pass_unchanged(value: Any) -> None:
    """Values JSON holds as they are come back equal."""
    assert json_safe(value) == value


@settings(deadline=None)
@given(any_values)
def test_anything_becomes_strict_json(value: Any) -> None:
    """Any value becomes something strict JSON (no NaN) can encode."""
    json.dumps(json_safe(value), allow_nan=False)


def test_json_safe_edge_cases() -> None:
    """Enum-like subclasses become plain values, deep nesting and broken reprs are contained."""

    class Name(str):
        pass

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    deep: list[Any] = []
    cur = deep
    for _ in range(100):
        cur.append([])
        cur = cur[0]
    assert json_safe(Name("x")) == "x"
    assert type(json_safe(Name("x"))) is str
    assert json_safe(logging.INFO) == 20
    assert json_safe(float("-inf")) == "-inf"
    assert json_safe(Broken()).startswith("<unrepresentable Broken")
    json.dumps(json_safe(deep))


# -- never raising, never blocking long --------------------------------------------------------


def test_a_failing_put_goes_to_handle_error(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """A put that raises is counted and reported by handleError; the caller sees nothing."""

    class Broken:
        def put(self, item: Any, *, timeout: float | None = None) -> None:
            raise OSError("disk on fire")

    handler = SpoolHandler(Broken())
    logger.addHandler(handler)
    logger.info("x")
    assert handler.errors == 1
    assert "disk on fire" in capsys.readouterr().err


def test_bad_format_arguments_do_not_raise(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message whose args do not fit its format is an error, not an exception."""
    handler = SpoolHandler(ListSpool())
    logger.handlers[:] = [handler]  # pytest's capture handler would raise on this record
    logger.info("%d", "not a number")
    assert handler.errors == 1
    assert "--- Logging error ---" in capsys.readouterr().err


def test_put_is_given_the_put_timeout(logger: logging.Logger) -> None:
    """emit passes put_timeout to spool.put, so a full spool holds it back at most that long."""
    spool = ListSpool()
    logger.addHandler(SpoolHandler(spool, put_timeout=0.25))
    logger.info("x")
    assert spool.timeouts == [0.25]


def test_full_spool_drops_and_counts(logger: logging.Logger, tmp_path: Path) -> None:
    """With a real spool at max_bytes, emit returns after put_timeout and counts a drop."""
    spool = Spool(tmp_path / "s", MemorySink(), max_bytes=600, when_full="block")  # not started
    handler = SpoolHandler(spool, put_timeout=0)
    logger.addHandler(handler)
    for i in range(20):
        logger.info("record %d with some padding to fill the spool", i)
    assert handler.dropped > 0
    assert handler.errors == 0
    assert spool.stats().enqueued == 20 - handler.dropped
    spool.stop(drain=False)


def test_spool_without_put_timeout_is_guarded_by_full() -> None:
    """A blocking spool whose put takes no timeout is not called while it reports full."""

    class OldSpool:
        when_full = "block"

        def __init__(self) -> None:
            self.is_full = True
            self.items: list[Any] = []

        def full(self) -> bool:
            return self.is_full

        def put(self, item: Any) -> None:
            self.items.append(item)

    spool = OldSpool()
    handler = SpoolHandler(spool)
    handler.handle(logging.makeLogRecord({"name": "app", "msg": "a"}))
    spool.is_full = False
    handler.handle(logging.makeLogRecord({"name": "app", "msg": "b"}))
    assert [i["message"] for i in spool.items] == ["b"]
    assert handler.dropped == 1


def test_put_timeout_must_not_be_negative() -> None:
    """A negative put_timeout is a ConfigError."""
    with pytest.raises(ConfigError, match="put_timeout"):
        SpoolHandler(ListSpool(), put_timeout=-1)


def test_spool_full_error_counts_as_drop(logger: logging.Logger) -> None:
    """SpoolFull from put (when_full='raise') is a drop, not an error."""

    class Full:
        def put(self, item: Any, *, timeout: float | None = None) -> None:
            raise SpoolFull("full")

    handler = SpoolHandler(Full())
    logger.addHandler(handler)
    logger.info("x")
    assert (handler.dropped, handler.errors) == (1, 0)


# -- loop avoidance ----------------------------------------------------------------------------


def test_spoolkit_logs_are_skipped_by_default(root: logging.Logger) -> None:
    """Records of the spoolkit logger hierarchy are not spooled unless asked for."""
    spool = ListSpool()
    handler = SpoolHandler(spool)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("spoolkit").warning("own")
    logging.getLogger("spoolkit.pool").warning("child")
    logging.getLogger("spoolkitty").warning("not ours")
    assert [i["logger"] for i in spool.items] == ["spoolkitty"]
    assert handler.skipped == 2
    handler.include_spoolkit_logs = True
    logging.getLogger("spoolkit").warning("own")
    assert len(spool.items) == 2


def test_logging_from_inside_put_does_not_recurse(root: logging.Logger) -> None:
    """A record logged while the handler is putting (same thread) is skipped, not re-entered."""

    class Chatty(ListSpool):
        def put(self, item: Any, *, timeout: float | None = None) -> None:
            logging.getLogger("spoolkit.queue").warning("putting")
            logging.getLogger("app.inner").warning("even an app record")
            super().put(item, timeout=timeout)

    spool = Chatty()
    handler = SpoolHandler(spool, include_spoolkit_logs=True)
    root.addHandler(handler)
    logging.getLogger("app").warning("outer")
    assert [i["message"] for i in spool.items] == ["outer"]
    assert handler.skipped == 2


def test_root_handler_with_failing_sink_spools_only_app_records(
    root: logging.Logger, tmp_path: Path
) -> None:
    """On the root logger, the spool's own retry logs are not fed back into it; nothing is lost."""
    sink = FlakySink(pattern=[True, True, True])
    spool = Spool(
        tmp_path / "s",
        sink,
        workers=1,
        batch_interval=0,
        retry=RetryPolicy(max_attempts=10, jitter=0),
        clock=FakeClock(),
    )
    handler = SpoolHandler(spool)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    with spool:
        for i in range(50):
            logging.getLogger("app").info("event %d", i)
        assert spool.flush(10)
    messages = [r.item["message"] for r in sink.records]
    assert sorted(messages) == sorted(f"event {i}" for i in range(50))
    assert {r.item["logger"] for r in sink.records} == {"app"}
    assert sink.failures == 3
    assert handler.skipped > 0  # spoolkit logged the retries, and they were kept out


def test_threads_log_concurrently(logger: logging.Logger, spool: Spool) -> None:
    """Records logged from several threads at once all arrive."""
    logger.addHandler(SpoolHandler(spool))

    def work(t: int) -> None:
        for i in range(100):
            logger.info("t%d-%d", t, i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    got = sorted(i["message"] for i in _items(spool))
    assert got == sorted(f"t{t}-{i}" for t in range(4) for i in range(100))


# -- building from plain values, dictConfig, close ---------------------------------------------


def _dict_config(handler: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"spool": handler},
        "loggers": {"cfg": {"handlers": ["spool"], "level": "INFO", "propagate": False}},
    }


@pytest.fixture(name="cfg_logger")
def fixture_cfg_logger() -> Iterator[logging.Logger]:
    """The 'cfg' logger dictConfig configures; its handlers closed after the test."""
    CONFIG_SINK.clear()
    log = logging.getLogger("cfg")
    yield log
    for h in log.handlers[:]:
        log.removeHandler(h)
        h.close()


def test_dict_config_with_path_and_factory_sink(cfg_logger: logging.Logger, tmp_path: Path) -> None:
    """dictConfig builds a handler from a path and a 'pkg.module:factory' sink, and it works."""
    logging.config.dictConfig(
        _dict_config(
            {
                "class": "spoolkit.SpoolHandler",
                "level": "INFO",
                "spool_or_path": str(tmp_path / "spool"),
                "sink": "tests.test_logging_handler:make_sink",
                "spool_options": {"workers": 1, "batch_interval": 0},
            }
        )
    )
    [handler] = cfg_logger.handlers
    assert isinstance(handler, SpoolHandler)
    assert handler.owns_spool
    cfg_logger.info("configured %s", "ok")
    assert handler.spool.flush(10)
    assert [i["message"] for i in CONFIG_SINK.items] == ["configured ok"]


def test_dict_config_with_sink_url(
    cfg_logger: logging.Logger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sink string with '://' goes to spoolkit.sinks.from_url."""
    seen: list[str] = []

    def from_url(url: str) -> MemorySink:
        seen.append(url)
        return CONFIG_SINK

    monkeypatch.setitem(sys.modules, "spoolkit.sinks", types.SimpleNamespace(from_url=from_url))
    logging.config.dictConfig(
        _dict_config(
            {
                "class": "spoolkit.SpoolHandler",
                "spool_or_path": str(tmp_path / "spool"),
                "sink": "https://logs.example/ingest",
            }
        )
    )
    cfg_logger.info("via url")
    assert cfg_logger.handlers[0].spool.flush(10)  # type: ignore[attr-defined]
    assert seen == ["https://logs.example/ingest"]
    assert [i["message"] for i in CONFIG_SINK.items] == ["via url"]


def test_close_stops_an_owned_spool(tmp_path: Path) -> None:
    """A handler made from a path stops its spool on close (twice is fine), delivering first."""
    sink = MemorySink()
    handler = SpoolHandler(tmp_path / "s", sink=sink, spool_options={"workers": 1})
    handler.handle(logging.makeLogRecord({"name": "app", "msg": "last words"}))
    handler.close()
    handler.close()
    assert [i["message"] for i in sink.items] == ["last words"]
    with pytest.raises(ClosedError):
        handler.spool.put("x")


def test_close_leaves_a_given_spool_running(spool: Spool) -> None:
    """A handler given a spool does not stop it on close."""
    handler = SpoolHandler(spool)
    handler.close()
    spool.put("still open")
    assert _items(spool) == ["still open"]


def test_spool_factory_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """spool_or_path may be 'pkg.module:factory' returning a spool; own_spool decides stopping."""
    spool = Spool(tmp_path / "s", MemorySink())
    module = types.ModuleType("fake_spools")
    module.make = lambda: spool  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_spools", module)
    handler = SpoolHandler("fake_spools:make", own_spool=True)
    assert handler.spool is spool
    handler.close()
    with pytest.raises(ClosedError):
        spool.put("x")


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("/tmp/x",), {}, "needs sink="),
        ((ListSpool(),), {"sink": MemorySink()}, "go with a path"),
        ((ListSpool(),), {"spool_options": {"workers": 1}}, "go with a path"),
        ((42,), {}, "expected a spool or a path"),
        (("/tmp/x",), {"sink": "no such thing"}, "neither a URL"),
        (("/tmp/x",), {"sink": "nopkg_zz.mod:thing"}, "cannot import"),
        (("nopkg_zz.mod:make",), {}, "cannot import"),
    ],
)
def test_bad_configuration_is_a_config_error(
    args: tuple[Any, ...], kwargs: dict[str, Any], match: str
) -> None:
    """Bad plain-value configuration raises ConfigError naming the problem."""
    with pytest.raises(ConfigError, match=match):
        SpoolHandler(*args, **kwargs)


def test_a_half_built_handler_can_be_closed() -> None:
    """A handler whose construction failed closes cleanly (logging.shutdown closes it at exit)."""
    with pytest.raises(ConfigError) as info:
        SpoolHandler("/tmp/x")
    tb = info.tb
    half_built = None
    while tb is not None:
        if isinstance(tb.tb_frame.f_locals.get("self"), SpoolHandler):
            half_built = tb.tb_frame.f_locals["self"]
        tb = tb.tb_next
    assert half_built is not None
    half_built.close()


def test_a_spool_that_fails_to_start_is_released(tmp_path: Path) -> None:
    """If the new spool cannot start (the sink's open() fails), its directory is released."""

    class NoOpen(MemorySink):
        def open(self) -> None:
            raise OSError("cannot connect")

    with pytest.raises(OSError, match="cannot connect") as info:
        SpoolHandler(tmp_path / "s", sink=NoOpen())
    tb, made = info.tb, None
    while tb is not None:
        made = tb.tb_frame.f_locals.get("spool", made)
        tb = tb.tb_next
    assert isinstance(made, Spool)
    with pytest.raises(ClosedError):
        made.put("x")


def test_bad_spool_options_are_a_config_error(tmp_path: Path) -> None:
    """An unknown spool option raises ConfigError."""
    with pytest.raises(ConfigError, match="spool_options"):
        SpoolHandler(tmp_path / "s", sink=MemorySink(), spool_options={"wrokers": 1})


def test_resolve_sink_forms() -> None:
    """Objects pass through, classes and factories are called, instances are used."""
    sink = MemorySink()
    assert resolve_sink(sink) is sink
    assert isinstance(resolve_sink("spoolkit.testing:MemorySink"), MemorySink)
    assert resolve_sink("tests.test_logging_handler:make_sink") is CONFIG_SINK
    assert resolve_sink("tests.test_logging_handler:CONFIG_SINK") is CONFIG_SINK
