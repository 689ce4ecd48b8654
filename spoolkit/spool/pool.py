"""The pool of worker threads behind a spool: one object owning its threads, their batches and
the locks between them.

Each worker waits for records, takes a batch of up to ``batch_size`` (lingering up to
``batch_interval`` for it to fill) through ``take`` (the backend's ``get_batch``, or the
spool's screening wrapper around it), hands it to :class:`~spoolkit.spool.delivery.Deliverer`,
and starts over. The rest of the spool uses only the pool's API:

- :meth:`Pool.start` starts the workers; :meth:`Pool.restart` starts one again after a crash;
  :meth:`Pool.replace` gives a stuck sink call's batch to a new worker. When to do either is
  the supervisor's policy (:mod:`spoolkit.spool.supervisor`).
- :meth:`Pool.wait_settled` is ``flush``: it counts records by lane, never by timestamps
  (:mod:`spoolkit.spool.batches`); :meth:`Pool.wait_idle` waits for the batches in hand.
- :meth:`Pool.stop` stops taking and finishes (or hands back) the batches in hand by a
  deadline; :meth:`Pool.join` then waits for the threads, by the same deadline, once the
  backend is closed (closing it wakes the workers waiting for records).
- ``slots``, :meth:`Pool.live`, :attr:`Pool.urgent`, :meth:`Pool.oldest_inflight` are read-only
  views for the supervisor and the stats.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import tenacity

from spoolkit._internal.guard import spoolkit_thread
from spoolkit.backends import Backend
from spoolkit.deadletter import DeadLetters
from spoolkit.errors import ClosedError
from spoolkit.retry import Clock, RetryPolicy
from spoolkit.spool.async_sink import AsyncRunner
from spoolkit.spool.batches import Batches, Slot, Take
from spoolkit.spool.deferred import Registered
from spoolkit.spool.delivery import Abandoned, Deliverer, SinkCall
from spoolkit.spool.sink_calls import SinkCalls
from spoolkit.spool.stats import Counters

__all__ = ["OnCrash", "Pool", "Slot"]

OnCrash = Callable[[Slot, BaseException, list[Any]], None]
"""``on_crash(slot, exc, batch)``: a worker died of ``exc``; its ``batch`` is back in the queue."""


class Pool:
    """``workers`` threads delivering the records of ``backend``. Created by the Spool.

    Args:
        backend: the store the records come from and are acknowledged in.
        sink: the sink's ``write`` (sync or ``async def``).
        dead: where undeliverable records go.
        registry: the deferred functions, by name.
        retry: the spool's retry policy.
        counters: the spool's counters.
        clock: where time is read and backoffs wait.
        batch_size: the most records per batch.
        batch_interval: the longest a worker waits for a batch to fill, in seconds.
        log: the spool's bound logger.
        workers: how many threads.
        take: ``take(max_items, timeout)`` hands out a batch; default ``backend.get_batch``.

    Raises:
        ConfigError: an async sink's ``concurrency`` is not a positive int.
    """

    def __init__(
        self,
        backend: Backend[Any],
        *,
        sink: SinkCall,
        dead: DeadLetters,
        registry: dict[str, Registered],
        retry: RetryPolicy | tenacity.Retrying,
        counters: Counters,
        clock: Clock,
        batch_size: int,
        batch_interval: float,
        log: Any,
        workers: int = 1,
        take: Take | None = None,
    ) -> None:
        self.size = workers
        """How many workers the pool runs."""
        self.cut = threading.Event()
        """Set to end every wait of :meth:`wait_settled`, :meth:`wait_idle` and :meth:`join`
        at once (a second Ctrl-C during ``stop``)."""
        self._counters = counters
        self._stopping = threading.Event()
        self._on_crash: OnCrash = lambda *_: None
        self._calls_abandoned = 0
        self._batches = Batches(
            backend,
            take if take is not None else backend.get_batch,
            batch_size=batch_size,
            batch_interval=batch_interval,
            stopping=self._stopping,
            cut=self.cut,
        )
        self._sink_calls = SinkCalls(sink, workers)
        self._delivery = Deliverer(
            backend,
            sink=sink,
            dead=dead,
            registry=registry,
            retry=retry,
            counters=counters,
            clock=clock,
            log=log,
            settle=self._batches.settle,
            stopping=self._stopping,
        )

    # -- the sink ------------------------------------------------------------------------------

    @property
    def runner(self) -> AsyncRunner | None:
        """An async sink's event loop; None until first used (and for a sync sink)."""
        return self._sink_calls.runner

    def open_sink(self, sink: Any) -> None:
        """Call ``sink.open()`` if it has one: awaited on the pool's loop if ``async def``."""
        self._sink_calls.open(sink)

    def close_sink(self, sink: Any, opened: bool = True) -> None:
        """Call ``sink.close()`` if it has one and was opened (awaited on the pool's loop if
        ``async def``, for up to 30 s); then stop and close the pool's loop, if it has one."""
        self._sink_calls.close(sink, opened)

    # -- workers -------------------------------------------------------------------------------

    def start(self, on_crash: OnCrash | None = None) -> None:
        """Start the workers; ``on_crash`` hears of each one that dies of an unexpected error
        (a bug in a sink or in spoolkit: a failed write is the retry policy's business)."""
        if on_crash is not None:
            self._on_crash = on_crash
        for index in range(self.size):
            self._spawn(index)

    def restart(self, slot: Slot) -> bool:
        """Start a new worker in the place of ``slot``'s, which crashed; False (none started)
        once the pool is stopping."""
        if self._stopping.is_set():
            return False
        self._spawn(slot.index)
        return True

    def replace(self, slot: Slot, call_started: float) -> list[Any] | None:
        """Replace a worker stuck in a sink call: its batch goes back to the queue for another
        worker, a new worker starts in its place, and the stuck thread is left to finish on
        its own, its result ignored (an async sink's call is cancelled on the loop).

        Args:
            slot: the stuck worker's slot.
            call_started: ``slot.call_started`` as seen: if that call returned in the
                meantime, nothing is done.

        Returns:
            The batch handed back, or None if the call had returned.
        """
        msgs = self._batches.abandon(slot, call_started)
        if msgs is not None:
            self._spawn(slot.index)
        return msgs

    @property
    def slots(self) -> tuple[Slot, ...]:
        """The current slot of each worker, by index (a snapshot)."""
        return self._batches.slots

    def live(self) -> int:
        """Workers running and not abandoned."""
        return sum(
            1
            for s in self.slots
            if not s.abandoned and s.thread is not None and s.thread.is_alive()
        )

    @property
    def urgent(self) -> int:
        """``flush`` callers waiting now (workers then hand over batches without lingering)."""
        return self._batches.urgent

    def oldest_inflight(self) -> float | None:
        """``enqueued_at`` of the oldest record held by a worker."""
        return self._batches.oldest_inflight()

    def _spawn(self, index: int) -> None:
        """Start worker ``index`` (replacing the slot of that index, if any)."""
        slot = Slot(index)
        slot.write = self._sink_calls.for_slot(slot)
        slot.thread = threading.Thread(
            target=self._run, args=(slot,), name=f"spoolkit-worker-{index}", daemon=True
        )
        self._batches.put_slot(slot)
        slot.thread.start()

    def _run(self, slot: Slot) -> None:
        spoolkit_thread()  # a sink's own logging here is never spooled (no feedback loop)
        batches = self._batches
        try:
            while not self._stopping.is_set() and not slot.abandoned:
                try:
                    msgs = batches.take(slot)
                except ClosedError:  # closed, or taken over: hand back what it held
                    batches.abandon(slot)
                    return
                if msgs:
                    self._delivery.run(slot, msgs)
                batches.finished(slot)
        except Abandoned:
            return
        except BaseException as exc:
            held = batches.abandon(slot)
            self._counters.error(exc)
            self._on_crash(slot, exc, held or [])

    # -- waiting and stopping ------------------------------------------------------------------

    def wait_settled(self, deadline: float) -> bool:
        """Wait until every record in the spool now (waiting or in flight) is delivered or
        dead-lettered; False at ``deadline`` (monotonic) or when cut. Decided by counting
        records (see :meth:`spoolkit.spool.batches.Batches.wait_settled`)."""
        return self._batches.wait_settled(deadline)

    def wait_idle(self, deadline: float) -> bool:
        """Wait until no live worker holds a batch; False at ``deadline`` (monotonic)."""
        return self._batches.wait_idle(deadline)

    def stop(self, deadline: float, *, hand_back: bool = False) -> bool:
        """Stop taking batches and finish the ones in hand by ``deadline`` (monotonic).

        A backoff in progress ends at once and its batch goes back to the queue. A batch still
        held at the deadline (or at once, with ``hand_back``: the store was closed under the
        spool) is taken away from its worker and handed back; a sink call still running is
        left to finish on its own, its result ignored (:attr:`calls_abandoned` counts them).
        Call :meth:`join` once the backend is closed.

        Returns:
            True if every batch in hand finished; False if some were handed back.
        """
        self._stopping.set()
        if not hand_back and self.wait_idle(deadline):
            return True
        abandoned = 0
        for slot in self.slots:
            running_call = slot.call_started is not None
            if self._batches.abandon(slot) and running_call:
                abandoned += 1
        self._calls_abandoned = abandoned
        return False

    @property
    def calls_abandoned(self) -> int:
        """Sink calls :meth:`stop` left running when it handed their batches back."""
        return self._calls_abandoned

    def join(self, deadline: float) -> bool:
        """Wait for the worker threads to end, up to ``deadline`` (monotonic); not at all once
        cut. Threads whose batch was handed back are not waited for (a stuck sink call).

        Returns:
            True if every thread waited for ended.
        """
        ended = True
        for slot in self.slots:
            thread = slot.thread
            if thread is None or slot.abandoned:
                continue
            if self.cut.is_set():
                return False
            thread.join(max(0.0, deadline - time.monotonic()))
            ended = ended and not thread.is_alive()
        return ended
