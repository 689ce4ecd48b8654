"""Shared helpers for the tests: factories that stop or close what they made, log capture,
running a snippet in a fresh interpreter."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from spoolkit import Spool
from spoolkit.typing import Record


class BlockingSink:
    """A sink whose ``write`` waits for :attr:`release`; :attr:`entered` is set on each call."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[list[Record]] = []

    def write(self, batch: Sequence[Record]) -> None:
        """Record the batch, signal, and wait for the release."""
        self.batches.append(list(batch))
        self.entered.set()
        assert self.release.wait(30), "the test never released the sink"


class _Closable(Protocol):
    def close(self) -> None: ...


P = ParamSpec("P")
C = TypeVar("C", bound=_Closable)
H = TypeVar("H", bound=logging.Handler)


@contextmanager
def closing_factory(build: Callable[P, C]) -> Iterator[Callable[P, C]]:
    """A ``build`` that remembers what it made; all of it is closed on leaving."""
    made: list[C] = []

    def make(*args: P.args, **kwargs: P.kwargs) -> C:
        thing = build(*args, **kwargs)
        made.append(thing)
        return thing

    yield make
    for thing in made:
        thing.close()


def errors_in_threads(n: int, work: Callable[[int], object]) -> list[BaseException]:
    """Run ``work(0)`` .. ``work(n - 1)`` in ``n`` threads at once; the exceptions they raised."""
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            work(k)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def python_stdout(code: str) -> str:
    """Run ``code`` in a fresh interpreter (``python -c``); its stdout. It must exit 0."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout


def spool_factory(tmp_path: Path) -> Iterator[Any]:
    """``make_spool(sink, **options)`` opens a Spool under tmp_path; all are stopped after.

    Use as ``make_spool = pytest.fixture(name="make_spool")(spool_factory)`` in a test module.
    """
    made: list[Spool] = []

    def make(sink: Any, path: Path | None = None, **options: Any) -> Spool:
        options.setdefault("batch_interval", 0)
        spool = Spool(path or tmp_path / "spool", sink, **options)
        made.append(spool)
        return spool

    yield make
    for spool in made:
        spool.stop(drain=False, timeout=5)


class EventLog(logging.Handler):
    """Captures spoolkit's structlog events from the stdlib logger; tests wait on them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the event dict."""
        event = getattr(record, "spoolkit", None)
        if event is not None:
            with self._cond:
                self.events.append(dict(event))
                self._cond.notify_all()

    def named(self, name: str) -> list[dict[str, Any]]:
        """Events called ``name``."""
        with self._cond:
            return [e for e in self.events if e["event"] == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 10.0) -> bool:
        """Wait until ``count`` events called ``name`` arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.named(name)) >= count, timeout)


def event_log_factory() -> Iterator[EventLog]:
    """An EventLog attached to the 'spoolkit' logger for the test's duration."""
    with spoolkit_logs_to(EventLog()) as handler:
        yield handler


@contextmanager
def spoolkit_logs_to(handler: H) -> Iterator[H]:
    """Attach ``handler`` to the 'spoolkit' logger, at every level, while inside."""
    logger = logging.getLogger("spoolkit")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
