"""The producers' put when an event loop may be running on the calling thread.

A logging call in a coroutine runs on the loop's thread: a put that waits there (for room in
a full spool, for an fsync) stops every other coroutine. So, on a thread with a running loop
(``asyncio._get_running_loop()``, one C call, cheap enough to make for every record):

- a put that costs only memory (the disk lanes, ``fsync`` not ``"always"``) runs as
  everywhere else, except that it never waits for room: a full spool drops the record at once
  (counted as dropped), as if ``put_timeout`` were 0;
- a put that may wait on I/O (``fsync="always"``, a Redis or NATS backend) is handed, in
  order, to one thread of the producer's own, which puts with the usual ``put_timeout``; the
  call returns at once. :meth:`LoopSafePut.close` waits for those puts.

Off a loop (any other thread, including the executor thread structlog's ``ainfo`` uses) the
put is the plain bounded put.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from asyncio import _get_running_loop
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from spoolkit._internal.guard import spoolkit_thread

__all__ = ["LoopSafePut", "on_loop"]


def on_loop() -> bool:
    """Whether the calling thread runs an event loop (cheap: one C call)."""
    return _get_running_loop() is not None


class LoopSafePut:
    """A producer's ``put(item)`` for a thread running an event loop: it never blocks it.

    The producer calls it instead of its bounded put when :func:`on_loop`. The producer makes
    that check itself, inline, so that a put off a loop goes through no extra Python call.

    Args:
        put: the bounded put (waits up to the producer's ``put_timeout``).
        nowait: the same put with no wait for room.
        offload: whether a put may wait on I/O even with room (then it leaves the loop).
        dropped: called for a record a handed-off put could not store (no room in time).
        failed: called with the error of a handed-off put that failed otherwise.
    """

    def __init__(
        self,
        put: Callable[[Any], None],
        nowait: Callable[[Any], None],
        *,
        offload: bool,
        dropped: Callable[[], None],
        failed: Callable[[BaseException], None],
    ) -> None:
        self._put = put
        self._nowait = nowait
        self._offload = offload
        self._dropped = dropped
        self._failed = failed
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __call__(self, item: Any) -> None:
        """Put ``item`` from a thread whose event loop is running (see the module)."""
        if not self._offload:
            self._nowait(item)
        else:
            (self._pool or self._start()).submit(self._later, item)

    def _start(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:  # one thread: records keep their order
                self._pool = ThreadPoolExecutor(
                    1, thread_name_prefix="spoolkit-producer", initializer=spoolkit_thread
                )
            return self._pool

    def _later(self, item: Any) -> None:
        try:
            self._put(item)
        except queue.Full:
            self._dropped()
        except Exception as exc:
            self._failed(exc)

    def drain(self) -> None:
        """Wait until the puts handed off so far are done (one thread: they end in order)."""
        pool = self._pool
        if pool is not None:
            with contextlib.suppress(RuntimeError):  # closed meanwhile: close() waited for them
                pool.submit(_nothing).result()

    def close(self) -> None:
        """Wait for the puts handed off so far, then let the thread go."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _nothing() -> None:
    """A marker job: once it ran, every put handed off before it is done."""
