"""How a worker calls the sink: directly, or on the pool's event loop for an ``async def`` sink.

A sync sink's ``write`` is called by the worker thread itself. An async sink's ``write`` runs on
the pool's loop (:class:`~spoolkit.spool.async_sink.AsyncRunner`, started on first use): the
worker submits its batch there and waits for the answer, so retries, ``sink_timeout`` and dead
letters work unchanged; a call whose batch was taken away from its worker (a stuck call, a
``stop``) is cancelled on the loop. The sink's ``open()``/``close()`` are awaited on the same
loop when they are ``async def``.
"""

from __future__ import annotations

import concurrent.futures
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from spoolkit.errors import TransientError
from spoolkit.spool.async_sink import AsyncRunner, concurrency_of, is_async_callable
from spoolkit.spool.delivery import Abandoned, SinkCall
from spoolkit.typing import Record

if TYPE_CHECKING:
    from spoolkit.spool.pool import Slot

__all__ = ["SinkCalls"]

_CLOSE_WAIT = 30.0  # the most seconds an async sink's close() may take


class SinkCalls:
    """The sink calls of one pool of ``workers`` threads, and its event loop if it needs one.

    Raises:
        ConfigError: an async sink's ``concurrency`` attribute is not a positive int (checked
            at construction rather than in a worker).
    """

    def __init__(self, write: SinkCall, workers: int) -> None:
        self._write = write
        self._workers = workers
        self.is_async = is_async_callable(write)
        self.runner: AsyncRunner | None = None
        """The async sink's loop: None until first used."""
        self._lock = threading.Lock()
        if self.is_async:
            concurrency_of(_sink_object(write), workers)

    def for_slot(self, slot: Slot) -> SinkCall:
        """What ``slot``'s worker calls with a batch: the sink's ``write``, or for an async
        sink, a call on the loop that ``slot`` can cancel when its batch is abandoned."""
        if not self.is_async:
            return self._write
        write = self._write

        def call(records: Sequence[Record]) -> None:
            future = slot.future = self.loop().submit(write, records)  # type: ignore[arg-type]
            try:
                if slot.abandoned:  # abandoned before the future was noted: cancel it here
                    future.cancel()
                future.result()
            except concurrent.futures.CancelledError:
                if slot.abandoned:
                    raise Abandoned from None
                raise TransientError("the async sink call was cancelled") from None
            finally:
                slot.future = None

        return call

    def loop(self) -> AsyncRunner:
        """The event loop for async sink calls, started on first use (and again after
        :meth:`close` closed it, for a sink closed twice)."""
        runner = self.runner
        if runner is None or runner.loop.is_closed():
            with self._lock:
                if self.runner is None or self.runner.loop.is_closed():  # closed: close() ran
                    concurrency = concurrency_of(_sink_object(self._write), self._workers)
                    self.runner = AsyncRunner(concurrency)
                    # dropped without close() (its spool never stopped): stop the loop then;
                    # not at exit, where spools still deliver through it
                    weakref.finalize(self, self.runner.stop).atexit = False
                runner = self.runner
        return runner

    def open(self, sink: Any) -> None:
        """Call ``sink.open()`` if it has one: awaited on the loop if ``async def``."""
        opener = getattr(sink, "open", None)
        if callable(opener):
            if is_async_callable(opener):
                self.loop().run(opener, None)
            else:
                opener()

    def close(self, sink: Any, opened: bool = True) -> None:
        """Call ``sink.close()`` if it has one and was opened (awaited on the loop if
        ``async def``, for up to 30 s); then stop and close the loop, if one runs."""
        try:
            closer = getattr(sink, "close", None)
            if opened and callable(closer):
                if is_async_callable(closer):
                    self.loop().run(closer, _CLOSE_WAIT)
                else:
                    closer()
        finally:
            if self.runner is not None:
                self.runner.stop()


def _sink_object(write: Any) -> Any:
    """The sink a ``write`` callable belongs to (a bound method's object), else the callable."""
    return getattr(write, "__self__", write)
