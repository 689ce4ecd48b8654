"""Waiting on a spool's clock for an event: one adapter for clocks with and without ``wait``.

A backoff or a restart delay must end early when the spool stops. :class:`~spoolkit.retry.
SystemClock` and :class:`~spoolkit.testing.FakeClock` offer ``wait(event, seconds)`` for that;
the public :class:`~spoolkit.retry.Clock` protocol does not require it, so a user's clock with
only ``time``/``monotonic``/``sleep`` still works: it sleeps the whole delay, and the event is
looked at before and after.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["wait"]


def wait(clock: Any, event: threading.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` on ``clock``, ending early when ``event`` is set; whether it is.

    Args:
        clock: a :class:`~spoolkit.retry.Clock`, with or without a ``wait`` method.
        event: what ends the wait early (a stopping spool).
        seconds: the longest wait.
    """
    own = getattr(clock, "wait", None)
    if callable(own):
        return bool(own(event, seconds))
    if event.is_set():
        return True
    clock.sleep(seconds)
    return event.is_set()
