"""The asyncio side of :class:`~spoolkit.Queue`, and the off-loop machinery the Spool's shares.

The rule everywhere: what costs only memory (serializing, a copy into the page cache, an ack
without fsync) runs on the event loop, because a thread hop would cost more than it saves;
what may wait (for room in a full spool, for records, for an fsync) runs on a small thread
pool owned by the spool or queue, in slices of :data:`SLICE` seconds, so that a cancelled
call is told apart cleanly: the thread either finished the operation or gave up between two
slices, and the coroutine reports which (:class:`PutCancelled`).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import Future
from concurrent.futures.thread import ThreadPoolExecutor
from queue import Full
from typing import TYPE_CHECKING, Any, TypeVar

from spoolkit._internal.guard import spoolkit_thread
from spoolkit.errors import PutCancelled, StorageError
from spoolkit.queue.ioerrors import NOT_SYNCED

if TYPE_CHECKING:
    from spoolkit.queue.facade import Queue
    from spoolkit.queue.handout import Delivery

__all__ = [
    "SLICE",
    "Interrupted",
    "aack",
    "aget_batch",
    "deadline_of",
    "off_loop",
    "queue_aput",
    "stored_despite",
    "wait_put",
]

T = TypeVar("T")

SLICE = 0.05
"""Seconds a thread waits at a time (for room, for records) before looking for a cancel."""

_EXITING = threading.Event()
"""Set when the interpreter exits: waiting threads give up (see below)."""
# concurrent.futures joins its threads at exit, before atexit hooks (which would stop the
# spool and wake them) run: a put still waiting for room would hang the exit. Threading's own
# exit hooks run in reverse order, so this one, registered after concurrent.futures', runs
# first and tells the waits to end (their calls report stored=False, as if cancelled).
threading._register_atexit(_EXITING.set)  # type: ignore[attr-defined]
_WORKERS = 4  # threads per spool/queue: waits beyond that queue up (and cancel for free)


class Interrupted(Exception):
    """A cancelled :func:`off_loop` call: what its thread did (``ran``, ``value``, ``error``)."""

    def __init__(self, ran: bool, value: Any, error: BaseException | None) -> None:
        super().__init__("cancelled")
        self.ran = ran
        self.value = value
        self.error = error


def executor_of(owner: object) -> ThreadPoolExecutor:
    """The thread pool of ``owner`` (a spool or queue), made at first use (again after a fork).

    Its threads are spoolkit's own (nothing they log is spooled) and are shut down when
    ``owner`` is garbage collected.
    """
    held = owner.__dict__.get("_spoolkit_async")
    pid = os.getpid()
    if held is not None and held[0] == pid:
        return held[1]  # type: ignore[no-any-return]
    with _make_lock:
        held = owner.__dict__.get("_spoolkit_async")
        if held is not None and held[0] == pid:
            return held[1]  # type: ignore[no-any-return]
        pool = ThreadPoolExecutor(
            _WORKERS, thread_name_prefix="spoolkit-async", initializer=spoolkit_thread
        )
        owner.__dict__["_spoolkit_async"] = (pid, pool)
        weakref.finalize(owner, pool.shutdown, wait=False)
        return pool


_make_lock = threading.Lock()


async def off_loop(owner: object, fn: Callable[[threading.Event], T]) -> T:
    """Run ``fn(cancel)`` on ``owner``'s threads and return what it returns.

    When the awaiting task is cancelled, ``cancel`` is set and the call waits (through any
    further cancellations) for ``fn`` to end: ``fn`` must look at ``cancel`` at least every
    :data:`SLICE` seconds. Then :class:`Interrupted` says whether ``fn`` ran and what it
    returned or raised; a call still queued for a thread never runs (``ran=False``).
    """
    cancel = threading.Event()
    cf: Future[T] = executor_of(owner).submit(fn, cancel)
    fut = asyncio.wrap_future(cf)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        cancel.set()
        if cf.cancel():
            raise Interrupted(False, None, None) from None
        await _settled(fut)
        try:
            value = cf.result()
        except FutureCancelled:
            raise Interrupted(False, None, None) from None
        except BaseException as exc:
            raise Interrupted(True, None, exc) from None
        raise Interrupted(True, value, None) from None


async def _settled(fut: asyncio.Future[Any]) -> None:
    """Wait until ``fut`` is done, through any number of cancellations (each swallowed: the
    caller raises a CancelledError of its own right after)."""
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            continue
        except BaseException:  # noqa: S112 - the caller reads the outcome from fut
            continue


def stored_despite(exc: BaseException | None) -> bool:
    """Whether an error still left the record stored (its fsync failed, not its write)."""
    return isinstance(exc, StorageError) and NOT_SYNCED in str(exc)


def deadline_of(timeout: float | None) -> float:
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return time.monotonic() + (timeout if timeout is not None else float("inf"))


def wait_put(
    put: Callable[[float], None], cancel: threading.Event, deadline: float, full: type[Exception]
) -> bool:
    """Call ``put(slice_timeout)`` until it stores (True), ``cancel`` is set (False) or the
    deadline passes (the last ``full`` error propagates)."""
    while True:
        try:
            put(max(0.0, min(SLICE, deadline - time.monotonic())))
        except full:
            if cancel.is_set() or _EXITING.is_set():  # cancelled, or the interpreter exits
                return False
            if time.monotonic() >= deadline:
                raise
        else:
            return True


# -- Spool ---------------------------------------------------------------------------------------


# -- Queue ---------------------------------------------------------------------------------------


async def queue_aput(q: Queue, item: Any, durable: bool, timeout: float | None) -> None:
    """``Queue.aput``: on the loop when it cannot wait (unbounded, no fsync), else off it."""
    if not (durable or q.fsync == "always"):
        try:
            q.put(item, block=False)
        except Full:
            if timeout == 0:
                raise
        else:
            return
    deadline = deadline_of(timeout)

    def run(cancel: threading.Event) -> bool:
        return wait_put(lambda t: q.put(item, True, t, durable=durable), cancel, deadline, Full)

    try:
        await off_loop(q, run)
    except Interrupted as why:
        stored = why.ran and (bool(why.value) if why.error is None else stored_despite(why.error))
        raise PutCancelled(stored) from why.error


async def aget_batch(q: Queue, max_items: int, timeout: float | None) -> list[Delivery]:
    """``Queue.aget_batch``: what is there at once on the loop, a wait off it; records a
    cancelled wait took are handed back (``nack``), to be delivered again."""
    out = q.get_batch(max_items, 0)  # validates the arguments too
    if out or timeout == 0:
        return out
    deadline = deadline_of(timeout)

    def run(cancel: threading.Event) -> list[Delivery]:
        while True:
            got = q.get_batch(max_items, max(0.0, min(SLICE, deadline - time.monotonic())))
            if got or cancel.is_set() or time.monotonic() >= deadline or _EXITING.is_set():
                return got

    try:
        return await off_loop(q, run)
    except Interrupted as why:
        if why.value:
            q.nack(*why.value)
        raise asyncio.CancelledError from why.error


async def aack(q: Queue, deliveries: tuple[Delivery, ...]) -> None:
    """``Queue.aack``: on the loop without fsync; with ``fsync="always"`` off it (a cancelled
    call still acknowledges: the ack is recorded before the fsync)."""
    if q.fsync != "always":
        q.ack(*deliveries)
        return
    try:
        await off_loop(q, lambda cancel: q.ack(*deliveries))
    except Interrupted as why:
        raise asyncio.CancelledError from why.error
