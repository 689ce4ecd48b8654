"""Shared helpers for the Spool tests: a factory that stops every spool it made."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

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
    handler = EventLog()
    logger = logging.getLogger("spoolkit")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)
