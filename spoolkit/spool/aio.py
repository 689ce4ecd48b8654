"""The asyncio side of :class:`~spoolkit.Spool`: what costs only memory runs on the event loop,
what may wait runs off it (the machinery is the queue's: :mod:`spoolkit.queue.aio`)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from queue import Full
from typing import TYPE_CHECKING, Any

from spoolkit.errors import PutCancelled, SpoolFull
from spoolkit.queue.aio import Interrupted, deadline_of, off_loop, stored_despite, wait_put

if TYPE_CHECKING:
    from spoolkit.spool.facade import Spool

__all__ = ["PutCancelled", "aput", "aput_many"]


async def aput(spool: Spool, item: Any, durable: bool, timeout: float | None) -> None:
    """``Spool.aput``: the put on the loop when it cannot wait, else off it (see the module)."""
    if spool.cheap_puts and not durable and spool._accepting:
        if spool._when_full != "block":
            spool.put(item)  # "raise" or a drop policy: never waits
            return
        try:
            spool.put(item, timeout=0)
        except SpoolFull:
            pass  # no room now: wait for it off the loop
        else:
            return
    deadline = deadline_of(timeout)

    def run(cancel: threading.Event) -> bool:
        if durable:
            return _put_durable(spool, item, cancel, deadline)
        if spool._when_full != "block":
            spool.put(item)
            return True
        return wait_put(lambda t: spool.put(item, timeout=t), cancel, deadline, SpoolFull)

    try:
        await off_loop(spool, run)
    except Interrupted as why:
        stored = why.ran and (bool(why.value) if why.error is None else stored_despite(why.error))
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
            if not wait_put(put, cancel, deadline, Full):
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
    return True


async def aput_many(spool: Spool, items: Sequence[Any]) -> None:
    """``Spool.aput_many``: the whole put on the loop when nothing can wait, else off it."""
    if spool.cheap_puts and spool._max_bytes is None and spool._accepting:
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
                if not wait_put(
                    functools.partial(_put_in, spool, item), cancel, forever, SpoolFull
                ):
                    return done[0]
            else:
                spool.put(item)
            done[0] += 1
        return done[0]

    try:
        await off_loop(spool, run)
    except Interrupted as why:
        partial = getattr(why.error, "stored", None)  # a StorageError from put_many
        raise PutCancelled(partial if isinstance(partial, int) else done[0]) from why.error


def _put_in(spool: Spool, item: Any, timeout: float) -> None:
    spool.put(item, timeout=timeout)
