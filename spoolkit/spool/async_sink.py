"""The event loop that runs async sinks: one per consumer pool, in a daemon thread.

A sink whose ``write`` is ``async def`` is not called by the workers directly: each worker hands
its batch to this loop (``asyncio.run_coroutine_threadsafe``) and waits for the answer, so
batches from several workers are in flight at once on one loop, at most ``concurrency`` of them
(an ``asyncio.Semaphore``). The worker waits exactly as it would for a sync sink: retries,
``sink_timeout``, dead letters, ``PartialFailure`` and the counters are the pool's, unchanged.
A call the supervisor gives up on (``sink_timeout``) or that ``stop()`` abandons is cancelled
on the loop, so a coroutine that never returns does not stay behind.

The loop starts with the pool's first use of it and is stopped and closed by
:meth:`AsyncRunner.stop` (the pool's ``close_sink``). A forked child never uses its parent's
loop (the thread running it does not exist there): the child's pool is new and starts its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from spoolkit._internal.guard import spoolkit_thread
from spoolkit.errors import ConfigError
from spoolkit.typing import Record

__all__ = ["AsyncRunner", "concurrency_of", "is_async_callable"]

T = TypeVar("T")
AsyncWrite = Callable[[Sequence[Record]], Awaitable[None]]

_STOP_WAIT = 5.0  # the most seconds stop() waits for cancelled calls to end
# Loops of runners whose thread stayed in the parent: kept (never closed, never collected) so a
# forked child does not warn about an unclosed loop it cannot close (it looks running there).
_FORKED: list[asyncio.AbstractEventLoop] = []
_RUNNERS: weakref.WeakSet[AsyncRunner] = weakref.WeakSet()


def is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` returns a coroutine: an ``async def`` function or bound method,
    or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object's async __call__
    return call is not None and not inspect.isroutine(fn) and inspect.iscoroutinefunction(call)


def concurrency_of(sink: object, default: int) -> int:
    """The sink's ``concurrency`` attribute (a positive int), or ``default`` when it has none.

    Raises:
        ConfigError: the attribute is set to something other than a positive int.
    """
    value = getattr(sink, "concurrency", None)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{sink!r}.concurrency must be a positive whole number (batches in flight at "
            f"once), not {value!r}"
        )
    return value


class AsyncRunner:
    """One event loop in a daemon thread, running a pool's async sink calls.

    Args:
        concurrency: the most sink calls running at once.
    """

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.loop = asyncio.new_event_loop()
        self._slots = asyncio.Semaphore(concurrency)
        self._pid = os.getpid()
        self.thread = threading.Thread(target=self._main, name="spoolkit-async-sink", daemon=True)
        self.thread.start()
        _RUNNERS.add(self)

    def _main(self) -> None:
        spoolkit_thread()  # what the sink logs here is never spooled (no feedback loop)
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _limited(self, write: AsyncWrite, records: Sequence[Record]) -> None:
        async with self._slots:
            await write(records)

    def submit(
        self, write: AsyncWrite, records: Sequence[Record]
    ) -> concurrent.futures.Future[None]:
        """Start ``write(records)`` on the loop (once one of ``concurrency`` slots is free)."""
        return asyncio.run_coroutine_threadsafe(self._limited(write, records), self.loop)

    def run(self, call: Callable[[], Coroutine[Any, Any, T]], timeout: float | None) -> T:
        """Run ``call()`` on the loop and wait for its result (a sink's ``open``/``close``)."""
        future = asyncio.run_coroutine_threadsafe(call(), self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def stop(self, timeout: float = _STOP_WAIT) -> None:
        """Cancel the calls still running, stop the loop, join its thread and close it.

        Idempotent. Called from the loop's own thread (a garbage collection there), it only
        asks the loop to stop.
        """
        loop = self.loop
        if loop.is_closed() or os.getpid() != self._pid:
            return
        if threading.current_thread() is self.thread:
            loop.stop()
            return
        if self.thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(_cancel_all(timeout), loop)
            # a coroutine that ignores cancellation: the loop stops all the same
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                future.result(timeout + 1.0)
            loop.call_soon_threadsafe(loop.stop)
            self.thread.join(timeout)
        if not self.thread.is_alive():
            loop.close()


async def _cancel_all(timeout: float) -> None:
    """Cancel every task of the running loop but this one; wait up to ``timeout`` for them."""
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    await asyncio.get_running_loop().shutdown_asyncgens()


def _forget_in_child() -> None:
    """In a forked child: the parents' loops are not running here and cannot be closed."""
    for runner in list(_RUNNERS):
        _FORKED.append(runner.loop)
    _RUNNERS.clear()


os.register_at_fork(after_in_child=_forget_in_child)
