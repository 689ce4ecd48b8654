"""spoolkit's own logging: structlog bound loggers handing their events to stdlib ``spoolkit``.

The application's logging setup decides where they go. Each event reaches the stdlib logger as
one ``LogRecord`` whose message reads ``event key=value ...`` and whose ``spoolkit`` attribute
holds the event dict.

When no handler of the application would show a warning or an error of spoolkit's (no logging
set up at all, or only a :class:`~spoolkit.SpoolHandler`, which never spools spoolkit's own
records), :class:`LastResort` writes it to stderr, as ``logging.lastResort`` would, but at most
once per event name every :data:`QUIET_FOR` seconds, saying how many it held back in between:
a sink that retries for an hour says so a few dozen times, not thousands.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Any

import structlog

__all__ = ["QUIET_FOR", "LastResort", "get_logger"]

QUIET_FOR = 60.0  # seconds between two lines of the same event on stderr


class LastResort(logging.Handler):
    """Shows spoolkit's warnings on stderr when nothing else would, rate-limited per event."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._last: dict[str, tuple[float, int]] = {}  # event -> (last shown, held back since)

    def handle(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level or _shown_elsewhere(record, self):
            return False
        event = getattr(record, "spoolkit", {}).get("event") or str(record.msg)
        now = time.monotonic()
        self.acquire()  # the handler's own lock: logging renews it in a forked child
        try:
            last, held = self._last.get(event, (float("-inf"), 0))
            if now - last < QUIET_FOR:
                self._last[event] = (last, held + 1)
                return False
            self._last[event] = (now, 0)
        finally:
            self.release()
        note = f" ({held} more like it in the last {QUIET_FOR:.0f} s)" if held else ""
        stream = sys.stderr
        if stream is not None:
            with contextlib.suppress(Exception):  # stderr itself is gone: nothing else to tell
                stream.write(f"spoolkit {record.levelname}: {record.getMessage()}{note}\n")
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() does it
        self.handle(record)


def _shown_elsewhere(record: logging.LogRecord, me: logging.Handler) -> bool:
    """Whether a handler of the application would show ``record`` (as ``callHandlers``
    walks them), leaving out this one, null handlers and handlers that skip spoolkit's logs."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        for h in logger.handlers:
            if (
                h is me
                or isinstance(h, logging.NullHandler)
                or getattr(h, "include_spoolkit_logs", True) is False
            ):
                continue
            if record.levelno >= h.level:
                return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


_STDLIB = logging.getLogger("spoolkit")
_STDLIB.addHandler(LastResort())


def _to_stdlib_kwargs(_logger: Any, _method: str, event_dict: Any) -> dict[str, Any]:
    event = str(event_dict.pop("event", ""))
    pairs = " ".join(f"{k}={v!r}" for k, v in sorted(event_dict.items()))
    return {
        "msg": f"{event} {pairs}" if pairs else event,
        "extra": {"spoolkit": {"event": event, **event_dict}},
    }


def get_logger(name: str = "spoolkit", **context: Any) -> Any:
    """Return a structlog bound logger for stdlib logger ``name`` with ``context`` bound."""
    stdlib = _STDLIB if name == "spoolkit" else logging.getLogger(name)
    return structlog.wrap_logger(
        stdlib,
        processors=[_to_stdlib_kwargs],
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
    ).bind(**context)
