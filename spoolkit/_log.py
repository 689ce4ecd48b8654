"""spoolkit's own logging: structlog bound loggers handing their events to stdlib ``spoolkit``.

The application's logging setup decides where they go; spoolkit prints nothing by itself.
Each event reaches the stdlib logger as one ``LogRecord`` whose message reads
``event key=value ...`` and whose ``spoolkit`` attribute holds the event dict.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["get_logger"]

_STDLIB = logging.getLogger("spoolkit")
# A library stays silent unless the application configures logging (no last-resort stderr).
_STDLIB.addHandler(logging.NullHandler())


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
