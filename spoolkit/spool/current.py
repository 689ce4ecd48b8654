"""``spoolkit.current_record()``: the stored call a worker is running, seen from inside it.

A worker runs a ``@spool.deferred`` function with the arguments it was called with, nothing
more; the record id of the call (what :attr:`~spoolkit.DeferredHandle.id` returned to the
caller) is what an idempotent side effect needs, so the worker sets a context variable around
each call. A context variable rather than a thread-local: ``async def`` functions see it too
(``asyncio.run`` copies the context into the task), and so do threads started with
``contextvars.copy_context()``.
"""

from __future__ import annotations

from contextvars import ContextVar

from spoolkit.typing import Record

__all__ = ["current_record", "delivering"]

delivering: ContextVar[Record | None] = ContextVar("spoolkit_current_record", default=None)
"""Set by the worker around each run of a deferred function."""


def current_record() -> Record | None:
    """The record of the deferred call running now, or None outside one.

    Inside a ``@spool.deferred`` function run by a spool's worker, a
    :class:`~spoolkit.Record` whose ``id`` is the call's record id (the same string as the
    :attr:`DeferredHandle.id <spoolkit.DeferredHandle.id>` the caller got, stable across
    retries, restarts and dead-letter requeues: an idempotency key), ``attempts`` the attempt
    number (1 on the first run; counted in this process, so it starts over after a restart),
    ``enqueued_at`` when the call was stored, and ``item`` the stored call itself.

    Returns None anywhere else: when the function is called directly (``func.func(...)``, in
    tests), from a sink, or outside spoolkit altogether, so a function can fall back (for
    example, to no idempotency key) rather than fail.
    """
    return delivering.get()
