"""The producers' loop guard: a thread-local flag set while a thread must not spool logs.

It is set while a thread is inside a producer (the spool's own code, a serializer, a sink
factory could log and re-enter the spool's lock), and for the whole life of spoolkit's own
threads: a sink library that logs on a worker thread (httpx's "HTTP Request: POST", psycopg,
redis) would otherwise feed every delivery back into the spool, which delivers it, which logs
again. Deferred calls, which are the application's code, run with it cleared.
"""

from __future__ import annotations

import threading

__all__ = ["guard", "spoolkit_thread"]


class _Guard(threading.local):
    active = False


guard = _Guard()
"""Set while this thread must not spool log records; shared by every producer."""


def spoolkit_thread() -> None:
    """Mark the calling thread as spoolkit's own: nothing it logs is ever spooled."""
    guard.active = True
