"""SpoolHandler defaults that keep logs and stay quiet: no feedback from sink libraries, JSON by
default, oversized records cut (not dropped), silence after close, and spoolkit's own warnings
on stderr (rate-limited) when no other handler would show them."""

from __future__ import annotations

import logging
import subprocess
import sys
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import spoolkit._internal.log
from spoolkit import RetryPolicy, Spool, SpoolHandler
from spoolkit._internal.log import QUIET_FOR, LastResort
from spoolkit.errors import PermanentError
from spoolkit.queue.meta import read_meta
from spoolkit.testing import FakeClock, FlakySink, MemorySink
from spoolkit.typing import Record

ROOT = Path(__file__).resolve().parent.parent
LAST_RESORT_APP = ROOT / "tests" / "apps_exit" / "last_resort.py"
MARKER = "... [truncated by spoolkit: {} chars]"


@pytest.fixture(name="root")
def fixture_root() -> Iterator[logging.Logger]:
    """The root logger; its handlers and level restored (and ours closed) after the test."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    yield root
    for h in root.handlers[:]:
        if h not in saved:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)


@pytest.fixture(name="logger")
def fixture_logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A non-propagating DEBUG logger of the app; its handlers closed after the test."""
    log = logging.getLogger(f"app.{request.node.name}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for h in log.handlers[:]:
        log.removeHandler(h)
        h.close()


def settle(handler: SpoolHandler) -> None:
    """Wait until the handler's spool delivered what it holds, twice: records a delivery might
    have spooled (a feedback loop) are delivered by the second round."""
    assert handler.spool.flush(30)
    assert handler.spool.flush(30)


# -- no feedback loops -------------------------------------------------------------------------


class ChattySink(MemorySink):
    """A sink whose library logs on every write, as httpx, httpcore and psycopg do."""

    def __init__(self) -> None:
        super().__init__()
        self.logged = 0

    def write(self, batch: Sequence[Record]) -> None:
        """Log like a client library at DEBUG, INFO and WARNING, then keep the batch."""
        logging.getLogger("httpx").debug("HTTP Request: POST http://collector %s", len(batch))
        logging.getLogger("httpx").info('HTTP Request: POST http://collector "HTTP/1.1 200 OK"')
        logging.getLogger("httpcore.connection").debug("connect_tcp.started")
        logging.getLogger("psycopg").warning("connection is slow")
        self.logged += 4
        super().write(batch)


def test_what_a_sink_library_logs_while_delivering_is_never_spooled(
    root: logging.Logger, tmp_path: Path
) -> None:
    """With the root logger at DEBUG and the SpoolHandler on root, a sink that logs on the
    worker thread (httpx, httpcore, psycopg loggers, any level) sends none of it to the spool:
    only the app's records are delivered, the library's reached the handler and were skipped,
    and no delivery causes another."""
    sink = ChattySink()
    handler = SpoolHandler(
        tmp_path / "spool", sink=sink, spool_options={"batch_interval": 0, "workers": 2}
    )
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    app = logging.getLogger("app.web")
    for i in range(30):
        app.info("request %d", i)
    settle(handler)
    batches = len(sink.batches)
    settle(handler)
    assert sorted(i["message"] for i in sink.items) == sorted(f"request {i}" for i in range(30))
    assert {i["logger"] for i in sink.items} == {"app.web"}
    assert sink.logged > 0
    assert handler.skipped >= sink.logged
    assert len(sink.batches) == batches  # idle: nothing delivered begets another delivery


def test_records_logged_by_a_deferred_function_are_spooled(
    root: logging.Logger, tmp_path: Path
) -> None:
    """A deferred function is the application's code: what it logs while a worker runs it is
    spooled and delivered, while what the sink library logs on the same thread is not."""
    sink = ChattySink()
    handler = SpoolHandler(
        tmp_path / "spool", sink=sink, spool_options={"batch_interval": 0, "workers": 1}
    )
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    spool: Spool = handler.spool

    @spool.deferred(name="send_welcome")
    def send_welcome(user: int) -> None:
        logging.getLogger("app.jobs").info("welcome sent to %d", user)

    send_welcome(7)
    send_welcome(8)
    settle(handler)
    messages = sorted(i["message"] for i in sink.items)
    assert messages == ["welcome sent to 7", "welcome sent to 8"]
    assert {i["logger"] for i in sink.items} == {"app.jobs"}
    assert sink.logged > 0


# -- JSON by default ---------------------------------------------------------------------------


def test_a_handler_from_a_path_spools_json(logger: logging.Logger, tmp_path: Path) -> None:
    """SpoolHandler(path, sink=...) makes a JSON spool (meta.json says so) unless told
    otherwise."""
    sink = MemorySink()
    handler = SpoolHandler(tmp_path / "spool", sink=sink, spool_options={"batch_interval": 0})
    logger.addHandler(handler)
    logger.info("hello %s", "json", extra={"pair": (1, 2)})
    settle(handler)
    assert read_meta(str(tmp_path / "spool"))["serializer"] == "json"  # type: ignore[index]
    [item] = sink.items
    assert item["message"] == "hello json"
    assert item["extra"] == {"pair": [1, 2]}


def test_serializer_given_in_spool_options_wins(logger: logging.Logger, tmp_path: Path) -> None:
    """spool_options={"serializer": "pickle"} makes a pickle spool."""
    handler = SpoolHandler(
        tmp_path / "spool", sink=MemorySink(), spool_options={"serializer": "pickle"}
    )
    logger.addHandler(handler)
    assert read_meta(str(tmp_path / "spool"))["serializer"] == "pickle"  # type: ignore[index]


@pytest.mark.parametrize("waiting", [True, False], ids=["records-waiting", "empty"])
def test_an_existing_pickle_spool_keeps_pickle(
    logger: logging.Logger, tmp_path: Path, waiting: bool
) -> None:
    """A handler opened on a spool written with pickle keeps pickle (no ConfigError over the
    records waiting there): the old records are delivered as they were, new ones too."""
    path = tmp_path / "spool"
    old = Spool(path, MemorySink())
    if waiting:
        old.put({"set": {1, 2}})  # JSON could not hold it
    old.stop(drain=False)
    sink = MemorySink()
    handler = SpoolHandler(path, sink=sink, spool_options={"batch_interval": 0})
    logger.addHandler(handler)
    logger.info("new")
    settle(handler)
    assert read_meta(str(path))["serializer"] == "pickle"  # type: ignore[index]
    expected = ([{"set": {1, 2}}] if waiting else []) + ["new"]
    assert [i if "set" in i else i["message"] for i in sink.items] == expected


# -- oversized records -------------------------------------------------------------------------


def test_a_message_over_max_field_chars_is_cut_with_a_marker(
    logger: logging.Logger, tmp_path: Path
) -> None:
    """A message longer than max_field_chars is cut to it, ends with the marker, and the
    record's `truncated` keeps the original length; shorter records are untouched."""
    sink = MemorySink()
    handler = SpoolHandler(tmp_path / "spool", sink=sink, max_field_chars=100)
    logger.addHandler(handler)
    logger.info("%s", "x" * 1000)
    logger.info("short")
    settle(handler)
    long, short = sink.items
    assert long["message"] == "x" * 100 + MARKER.format(1000)
    assert long["truncated"] == {"message": 1000}
    assert "truncated" not in short
    assert short["message"] == "short"
    assert handler.truncated == 1


def test_exception_and_stack_text_are_cut_too(logger: logging.Logger, tmp_path: Path) -> None:
    """An exception text and a stack over max_field_chars are cut with the marker, their
    lengths in `truncated`."""
    sink = MemorySink()
    handler = SpoolHandler(tmp_path / "spool", sink=sink, max_field_chars=64)
    logger.addHandler(handler)
    try:
        raise ValueError("v" * 500)
    except ValueError:
        logger.exception("failed", stack_info=True)
    settle(handler)
    [item] = sink.items
    assert item["message"] == "failed"
    assert set(item["truncated"]) == {"exception", "stack"}
    for field in ("exception", "stack"):
        n = item["truncated"][field]
        assert n > 64
        assert item[field] == item[field][:64] + MARKER.format(n)
    assert handler.truncated == 1


def test_a_65_mib_message_is_delivered_cut_not_dropped(
    logger: logging.Logger, tmp_path: Path
) -> None:
    """A 65 MiB message (over the spool's 64 MiB record limit) is cut to the default 256 KiB
    with the marker and delivered; nothing is dropped or counted as an error."""
    size = 65 << 20
    sink = MemorySink()
    handler = SpoolHandler(tmp_path / "spool", sink=sink)
    logger.addHandler(handler)
    logger.warning("z" * size)
    settle(handler)
    [item] = sink.items
    limit = 256 * 1024
    assert item["message"] == "z" * limit + MARKER.format(size)
    assert item["truncated"] == {"message": size}
    assert (handler.truncated, handler.dropped, handler.errors) == (1, 0, 0)


def test_a_record_with_a_65_mib_extra_is_delivered_shrunk(
    logger: logging.Logger, tmp_path: Path
) -> None:
    """A record over the spool's size limit because of its `extra` is not dropped: extra
    becomes a clipped repr and `truncated` names it."""
    sink = MemorySink()
    handler = SpoolHandler(tmp_path / "spool", sink=sink)
    logger.addHandler(handler)
    logger.info("big extra", extra={"blob": "b" * (65 << 20)})
    settle(handler)
    [item] = sink.items
    assert item["message"] == "big extra"
    assert "extra" in item["truncated"]
    assert item["truncated"]["extra"] > 65 << 20
    assert len(repr(item["extra"])) < 1 << 20
    assert (handler.truncated, handler.dropped, handler.errors) == (1, 0, 0)


class BrokenSpool:
    """A spool whose put always fails."""

    def put(self, item: Any, *, timeout: float | None = None) -> None:
        raise OSError("the disk is on fire")


def test_handle_error_output_is_bounded_for_a_huge_record(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record that cannot be spooled is reported on stderr in a few lines: a 20 MB message
    and 20 MB of arguments are clipped, the error and the place are named."""
    handler = SpoolHandler(BrokenSpool())
    logger.addHandler(handler)
    logger.error("m" * (20 << 20) + " %s", "a" * (20 << 20))
    err = capsys.readouterr().err
    assert err.startswith("--- Logging error ---\n")
    assert "the disk is on fire" in err
    assert "test_handler_defaults.py" in err
    assert len(err) < 4096
    assert handler.errors == 1


# -- after close -------------------------------------------------------------------------------


def test_a_record_logged_after_close_is_counted_dropped_silently(
    logger: logging.Logger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After handler.close() a record counts in `dropped`, not in `errors`, and nothing is
    printed."""
    sink = MemorySink()
    handler = SpoolHandler(tmp_path / "spool", sink=sink)
    logger.addHandler(handler)
    logger.info("before")
    handler.close()
    logger.info("after")
    logger.error("after, louder")
    assert (handler.dropped, handler.errors) == (2, 0)
    assert [i["message"] for i in sink.items] == ["before"]
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""


# -- spoolkit's own warnings on stderr ---------------------------------------------------------


def _run_app(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LAST_RESORT_APP), str(tmp_path / "spool"), mode],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


def test_retries_reach_stderr_once_when_the_app_has_no_other_handler(tmp_path: Path) -> None:
    """A process whose only handler is a SpoolHandler and whose collector is down: the first
    batch_retry warning reaches stderr, the following ones (within 60 s) do not, and nothing
    else is printed."""
    result = _run_app(tmp_path, "bare")
    assert result.returncode == 0, result.stderr
    word, calls = result.stdout.split()
    assert (word, int(calls) >= 6) == ("CALLS", True)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("spoolkit WARNING: batch_retry attempt=1 ")
    assert "collector down" in lines[0]


def test_retries_stay_off_stderr_when_an_app_handler_shows_them(tmp_path: Path) -> None:
    """When the app has a handler that shows warnings (a StreamHandler on stdout), spoolkit's
    retries go there, every one of them, and stderr stays empty."""
    result = _run_app(tmp_path, "app-handler")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    retries = [line for line in result.stdout.splitlines() if line.startswith("batch_retry ")]
    assert len(retries) >= 5


@contextmanager
def only_our_handlers() -> Iterator[None]:
    """No handler of pytest's on the root logger while inside (pytest adds them around each
    test phase, after the fixtures are set up: this runs in the test's body)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    for h in saved:
        root.removeHandler(h)
    try:
        yield
    finally:
        for h in saved:
            root.addHandler(h)


@pytest.fixture(name="fake_now")
def fixture_fake_now(root: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A fresh rate-limit memory in spoolkit's LastResort, and its monotonic clock under the
    test's control (the list's one value); the root logger at INFO."""
    root.setLevel(logging.INFO)
    [last_resort] = [h for h in logging.getLogger("spoolkit").handlers if isinstance(h, LastResort)]
    monkeypatch.setattr(last_resort, "_last", {})
    now = [10_000.0]
    monkeypatch.setattr(
        spoolkit._internal.log, "time", types.SimpleNamespace(monotonic=lambda: now[0])
    )
    return now


def _failing(failures: int, path: Path, error: Exception | None = None, **options: Any) -> Spool:
    """A spool (FakeClock: no real backoff) whose sink fails ``failures`` times first."""
    return Spool(
        path,
        FlakySink(pattern=[True] * failures, error=error),
        clock=FakeClock(),
        workers=1,
        batch_interval=0,
        **options,
    )


def _deliver_one(spool: Spool, item: Any) -> None:
    spool.start()
    spool.put(item)
    assert spool.flush(30)
    spool.stop()


def test_stderr_warnings_are_rate_limited_per_event_with_a_count(
    fake_now: list[float], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With only a SpoolHandler on root, spoolkit's batch_retry warnings reach stderr at most
    once per event every QUIET_FOR seconds; the next line shown says how many were held
    back; another event (batch_dead_lettered) has its own allowance."""
    root = logging.getLogger()
    with only_our_handlers():
        root.addHandler(SpoolHandler(tmp_path / "logs", sink=MemorySink()))
        _deliver_one(_failing(4, tmp_path / "a"), "x")  # 4 retries now: 1 shown, 3 held back
        fake_now[0] += QUIET_FOR / 2
        _deliver_one(_failing(2, tmp_path / "b"), "y")  # 2 more within QUIET_FOR: held back
        fake_now[0] += QUIET_FOR / 2 + 1
        _deliver_one(_failing(1, tmp_path / "c"), "z")  # past QUIET_FOR: shown, with the count
        dead = _failing(1, tmp_path / "d", error=PermanentError("bad"))
        _deliver_one(dead, "w")  # another event: shown at once
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("spoolkit WARNING: batch_retry attempt=1 ")
    assert "more like it" not in lines[0]
    assert lines[1].startswith("spoolkit WARNING: batch_retry attempt=1 ")
    assert lines[1].endswith(f" (5 more like it in the last {QUIET_FOR:.0f} s)")
    assert lines[2].startswith("spoolkit ERROR: batch_dead_lettered ")


@pytest.mark.usefixtures("fake_now")
def test_an_app_handler_that_hides_warnings_leaves_them_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An app handler at ERROR shows spoolkit's errors (so they stay off stderr) but not its
    warnings (so those still reach stderr)."""
    root = logging.getLogger()
    errors_only = _Keep(logging.ERROR)
    with only_our_handlers():
        root.addHandler(errors_only)
        root.addHandler(SpoolHandler(tmp_path / "logs", sink=MemorySink()))
        _deliver_one(_failing(1, tmp_path / "a", retry=RetryPolicy(max_attempts=1)), "x")
        _deliver_one(_failing(1, tmp_path / "b"), "y")
    err = capsys.readouterr().err
    assert [e.split(" ")[0] for e in errors_only.messages] == ["batch_dead_lettered"]
    assert err.startswith("spoolkit WARNING: batch_retry ")
    assert "batch_dead_lettered" not in err
    assert len(err.splitlines()) == 1


@pytest.mark.usefixtures("fake_now")
def test_an_app_handler_that_shows_warnings_keeps_stderr_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """When an app handler shows warnings, spoolkit's retries and dead letters go there, each
    one of them, and nothing reaches stderr."""
    root = logging.getLogger()
    shown = _Keep(logging.WARNING)
    with only_our_handlers():
        root.addHandler(shown)
        root.addHandler(SpoolHandler(tmp_path / "logs", sink=MemorySink()))
        _deliver_one(_failing(3, tmp_path / "a"), "x")
        _deliver_one(_failing(1, tmp_path / "b", error=PermanentError("bad")), "y")
    assert [e.split(" ")[0] for e in shown.messages] == [
        "batch_retry",
        "batch_retry",
        "batch_retry",
        "batch_dead_lettered",
    ]
    assert capsys.readouterr().err == ""


class _Keep(logging.Handler):
    """Keeps the messages of the records it handles."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
