"""The asyncio side of :class:`~spoolkit.Spool` and :class:`~spoolkit.Queue`.

The rule everywhere: what costs only memory (serializing, a copy into the page cache, an ack
without fsync) runs on the event loop, because a thread hop would cost more than it saves;
what may wait (for room in a full spool, for records, for an fsync) runs on a small thread
pool owned by the spool or queue, in slices of :data:`SLICE` seconds, so that a cancelled
call is told apart cleanly: the thread either finished the operation or gave up between two
slices, and the coroutine reports which (:class:`PutCancelled`).
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import Future
from concurrent.futures.thread import ThreadPoolExecutor
from queue import Full
from typing import TYPE_CHECKING, Any, TypeVar

from spoolkit._internal.guard import spoolkit_thread
from spoolkit.errors import PutCancelled, SpoolFull, StorageError
from spoolkit.queue.ioerrors import NOT_SYNCED

if TYPE_CHECKING:
    from spoolkit.queue.facade import Queue
    from spoolkit.queue.handout import Delivery
    from spoolkit.spool.facade import Spool

__all__ = ["PutCancelled", "aget_batch", "aput", "aput_many", "off_loop", "queue_aput"]

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


class _Interrupted(Exception):
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
    :data:`SLICE` seconds. Then :class:`_Interrupted` says whether ``fn`` ran and what it
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
            raise _Interrupted(False, None, None) from None
        await _settled(fut)
        try:
            value = cf.result()
        except FutureCancelled:
            raise _Interrupted(False, None, None) from None
        except BaseException as exc:
            raise _Interrupted(True, None, exc) from None
        raise _Interrupted(True, value, None) from None


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


def _stored_despite(exc: BaseException | None) -> bool:
    """Whether an error still left the record stored (its fsync failed, not its write)."""
    return isinstance(exc, StorageError) and NOT_SYNCED in str(exc)


def _deadline(timeout: float | None) -> float:
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return time.monotonic() + (timeout if timeout is not None else float("inf"))


def _wait_put(
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


async def aput(spool: Spool, item: Any, durable: bool, timeout: float | None) -> None:
    """``Spool.aput``: the put on the loop when it cannot wait, else off it (see the module)."""
    if spool._fast_aput and not durable and spool._accepting:
        if spool._when_full != "block":
            spool.put(item)  # "raise" or a drop policy: never waits
            return
        try:
            spool.put(item, timeout=0)
        except SpoolFull:
            pass  # no room now: wait for it off the loop
        else:
            return
    deadline = _deadline(timeout)

    def run(cancel: threading.Event) -> bool:
        if durable:
            return _put_durable(spool, item, cancel, deadline)
        if spool._when_full != "block":
            spool.put(item)
            return True
        return _wait_put(lambda t: spool.put(item, timeout=t), cancel, deadline, SpoolFull)

    try:
        await off_loop(spool, run)
    except _Interrupted as why:
        stored = why.ran and (bool(why.value) if why.error is None else _stored_despite(why.error))
        raise PutCancelled(stored) from why.error


def _put_durable(spool: Spool, item: Any, cancel: threading.Event, deadline: float) -> bool:
    """Store ``item`` and fsync it, following the spool's ``when_full``; False if dropped or
    cancelled while waiting for room."""
    backend = spool._backend
    mode = spool._when_full
    if not spool._accepting:
        spool._refused()
    if mode == "block":

        def put(t: float) -> None:
            backend.put_durable(item, block=True, timeout=t)

        try:
            if not _wait_put(put, cancel, deadline, Full):
                return False
        except Full:
            raise spool._full() from None
    else:
        while True:
            try:
                backend.put_durable(item, block=False, timeout=None)
                break
            except Full:
                if mode == "raise":
                    raise spool._full() from None
                if mode == "drop_newest" or not backend.drop_oldest():
                    spool._drops.dropped(1)
                    return False
                spool._drops.dropped(1)
    if spool._count_puts:
        spool._counters.add("enqueued")
    return True


async def aput_many(spool: Spool, items: Sequence[Any]) -> None:
    """``Spool.aput_many``: the whole put on the loop when nothing can wait, else off it."""
    if spool._fast_aput and spool._max_bytes is None and spool._accepting:
        spool.put_many(items)
        return
    done = [0]
    forever = float("inf")

    def run(cancel: threading.Event) -> int:
        if spool._max_bytes is None:  # nothing to wait for: one call (fsync="always")
            spool.put_many(items)
            done[0] = len(items)
            return done[0]
        if spool._when_full == "block":
            for item in items:  # all or nothing when one cannot be serialized, as put_many
                spool._backend.encode(item)
        for item in items:
            if cancel.is_set():
                return done[0]
            if spool._when_full == "block":
                if not _wait_put(
                    functools.partial(_put_in, spool, item), cancel, forever, SpoolFull
                ):
                    return done[0]
            else:
                spool.put(item)
            done[0] += 1
        return done[0]

    try:
        await off_loop(spool, run)
    except _Interrupted as why:
        partial = getattr(why.error, "stored", None)  # a StorageError from put_many
        raise PutCancelled(partial if isinstance(partial, int) else done[0]) from why.error


def _put_in(spool: Spool, item: Any, timeout: float) -> None:
    spool.put(item, timeout=timeout)


# -- Queue ---------------------------------------------------------------------------------------


async def queue_aput(q: Queue, item: Any, durable: bool, timeout: float | None) -> None:
    """``Queue.aput``: on the loop when it cannot wait (unbounded, no fsync), else off it."""
    if not (durable or q._always):
        try:
            q.put(item, block=False)
        except Full:
            if timeout == 0:
                raise
        else:
            return
    deadline = _deadline(timeout)

    def run(cancel: threading.Event) -> bool:
        return _wait_put(lambda t: q.put(item, True, t, durable=durable), cancel, deadline, Full)

    try:
        await off_loop(q, run)
    except _Interrupted as why:
        stored = why.ran and (bool(why.value) if why.error is None else _stored_despite(why.error))
        raise PutCancelled(stored) from why.error


async def aget_batch(q: Queue, max_items: int, timeout: float | None) -> list[Delivery]:
    """``Queue.aget_batch``: what is there at once on the loop, a wait off it; records a
    cancelled wait took are handed back (``nack``), to be delivered again."""
    out = q.get_batch(max_items, 0)  # validates the arguments too
    if out or timeout == 0:
        return out
    deadline = _deadline(timeout)

    def run(cancel: threading.Event) -> list[Delivery]:
        while True:
            got = q.get_batch(max_items, max(0.0, min(SLICE, deadline - time.monotonic())))
            if got or cancel.is_set() or time.monotonic() >= deadline or _EXITING.is_set():
                return got

    try:
        return await off_loop(q, run)
    except _Interrupted as why:
        if why.value:
            q.nack(*why.value)
        raise asyncio.CancelledError from why.error


async def aack(q: Queue, deliveries: tuple[Delivery, ...]) -> None:
    """``Queue.aack``: on the loop without fsync; with ``fsync="always"`` off it (a cancelled
    call still acknowledges: the ack is recorded before the fsync)."""
    if not q._always:
        q.ack(*deliveries)
        return
    try:
        await off_loop(q, lambda cancel: q.ack(*deliveries))
    except _Interrupted as why:
        raise asyncio.CancelledError from why.error
