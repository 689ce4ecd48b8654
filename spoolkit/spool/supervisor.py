"""Supervision of the consumer pool: restart crashed workers, replace stuck ones.

A worker that dies of an unexpected error (a bug in a sink or in spoolkit, a failing disk under
the dead letters: anything but a failed write, which the retry policy handles) has its batch
handed back to the queue at once; the supervisor counts the crash, logs it and starts a new
worker after a backoff (50 ms doubling to 5 s while crashes keep coming). A sink call running
longer than ``sink_timeout`` is reported as stuck: its batch goes back to the queue for another
worker, a replacement worker starts at once, and the stuck thread is left to finish on its own
(whatever it returns is ignored). So the pool does not stay below its configured size while
the sink hangs now and then.
An async sink's stuck call (:mod:`spoolkit.spool.async_sink`) is cancelled on the pool's event
loop instead, so its worker thread ends at once and nothing is left running.

A Python thread cannot be killed, so abandoned threads stay until their call returns. Against
a sink that hangs on every call, at most :data:`STUCK_PER_WORKER` times ``workers`` of them
are kept: past that, a stuck worker is no longer replaced (it keeps its batch, and finishes it
if the call ever returns), the spool says so once (``sink_stuck_limit``) and in
``stats().stuck_threads``, and replacing resumes as abandoned calls return.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from spoolkit._internal.redact import error_repr
from spoolkit.retry import Clock, SystemClock
from spoolkit.spool.lanes_view import waiting_by_lane
from spoolkit.spool.pool import Pool, Slot
from spoolkit.spool.stats import Counters

__all__ = ["Supervisor"]

_FIRST_RESTART_WAIT = 0.05
_MAX_RESTART_WAIT = 5.0
_CALM_AFTER = 30.0  # seconds without a crash after which the restart backoff starts over
_POLL = 0.25  # the most seconds between two looks for stuck sink calls
STUCK_PER_WORKER = 2  # abandoned stuck threads kept at most, per configured worker


class Supervisor:
    """Keeps ``workers`` live workers in ``pool`` while the spool runs.

    Args:
        pool: the pool to watch.
        workers: how many workers to keep.
        sink_timeout: seconds after which a sink call counts as stuck; ``None`` never.
        counters: where restarts are counted.
        clock: the spool's clock (restart backoff waits on it).
        log: the spool's bound logger.
    """

    def __init__(
        self,
        pool: Pool,
        *,
        workers: int,
        sink_timeout: float | None,
        counters: Counters,
        clock: Clock,
        log: Any,
    ) -> None:
        self.pool = pool
        self.workers = workers
        self.sink_timeout = sink_timeout
        self.counters = counters
        self.clock = clock
        self.log = log
        self._crashes: queue.SimpleQueue[tuple[Slot, BaseException, list[Any]]] = (
            queue.SimpleQueue()
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._streak = 0
        self._last_crash = float("-inf")
        self.max_stuck = STUCK_PER_WORKER * workers
        self._stuck: list[Slot] = []  # abandoned in a stuck sink call; threads maybe running
        self._at_limit = False
        self.cut = threading.Event()
        """Set to end every wait for progress at once (a second Ctrl-C during ``stop``)."""
        pool.on_crash = self._crashed
        pool.size_for(workers)

    def start(self) -> None:
        """Start the workers and the supervisor thread."""
        for index in range(self.workers):
            self.pool.spawn(index)
        self._thread = threading.Thread(target=self._run, name="spoolkit-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop supervising (no more restarts) and wait for the supervisor thread."""
        self._stop.set()
        self._crashes.put((Slot(-1), SystemExit(), []))  # wake it
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _crashed(self, slot: Slot, exc: BaseException, msgs: list[Any]) -> None:
        """Called from the dying worker thread, after its batch went back to the queue."""
        self._crashes.put((slot, exc, msgs))

    def _run(self) -> None:
        poll = _POLL if self.sink_timeout is None else min(_POLL, self.sink_timeout / 4)
        while not self._stop.is_set():
            try:
                slot, exc, msgs = self._crashes.get(timeout=poll)
            except queue.Empty:
                pass
            else:
                if self._stop.is_set():
                    return
                self._restart(slot, exc, msgs)
            self.check_stuck()

    def _restart(self, slot: Slot, exc: BaseException, msgs: list[Any]) -> None:
        now = self.clock.monotonic()
        self._streak = 0 if now - self._last_crash > _CALM_AFTER else self._streak + 1
        self._last_crash = now
        delay = min(_MAX_RESTART_WAIT, _FIRST_RESTART_WAIT * 2**self._streak)
        self.counters.add("worker_restarts")
        self._bound(slot, msgs).error("worker_crashed", error=error_repr(exc), restart_in=delay)
        if self._wait(delay):
            self.pool.spawn(slot.index)
            self._bound(slot, msgs).info("worker_restarted")

    def check_stuck(self) -> None:
        """Replace every worker whose sink call has run longer than ``sink_timeout``, while
        fewer than ``max_stuck`` abandoned threads are still running; update
        ``stuck_threads``."""
        limit = self.sink_timeout
        if limit is None:
            return
        now = self.clock.monotonic()
        self._stuck = [s for s in self._stuck if s.thread is not None and s.thread.is_alive()]
        kept = 0  # stuck workers not replaced: the limit is reached
        for slot in list(self.pool.slots):
            started = slot.call_started
            if slot.abandoned or started is None or now - started <= limit:
                continue
            if len(self._stuck) >= self.max_stuck:
                kept += 1
                continue
            msgs = self.pool.abandon(slot, started)
            if msgs is None:
                continue  # it returned in the meantime
            self._stuck.append(slot)
            self.pool.spawn(slot.index)
            self.counters.add("worker_restarts")
            self.counters.add("stuck_calls")
            self._bound(slot, msgs).error(
                "sink_stuck", running_for=round(now - started, 3), sink_timeout=limit
            )
        self.counters.stuck_threads = len(self._stuck) + kept
        if kept and not self._at_limit:
            self._at_limit = True
            self.log.warning(
                "sink_stuck_limit",
                abandoned_threads=len(self._stuck),
                max_stuck=self.max_stuck,
                stuck_workers=kept,
                sink_timeout=limit,
                note="stuck workers are no longer replaced until abandoned sink calls return",
            )
        elif not kept and self._at_limit:
            self._at_limit = False
            self.log.info("sink_stuck_limit_ended", abandoned_threads=len(self._stuck))

    def _bound(self, slot: Slot, msgs: list[Any]) -> Any:
        rid = self.pool.backend.record_id
        ids = [rid(m) for m in msgs]
        return self.log.bind(
            worker=slot.index,
            batch_size=len(msgs),
            record_ids=f"{ids[0]}..{ids[-1]}" if ids else "",
        )

    def _wait(self, seconds: float) -> bool:
        """Wait ``seconds`` on the spool's clock; False if stopping cut it short."""
        if isinstance(self.clock, SystemClock):
            return not self._stop.wait(seconds)
        self.clock.sleep(seconds)
        return not self._stop.is_set()

    # -- waiting for progress (flush, stop) ---------------------------------------------------

    def wait_delivered(self, deadline: float) -> bool:
        """Wait until every record in the spool now (waiting or in flight) is settled.

        Decided by counting records, never by their timestamps (a wall clock stepped back
        stamps records in the "future"). Phase 1 notes how many records wait in each lane and
        waits until workers have taken that many of the lane, net of those handed back (a lane
        hands records out in order, handed-back ones first, so none of the noted ones waits
        then), or the lane is empty; it notes which round of which worker may hold them
        (taking a batch, counting it and noting it in the worker's slot happen under
        ``pool.take_lock``). Phase 2 waits for those rounds to end. A nack in the meantime (a
        crash, a stuck sink) puts records back: then it starts over, counting afresh.

        A backend that cannot be counted by lane (Redis: other consumers take entries too)
        offers a sequence mark instead (``flush_mark()``, ``settled_through(mark)``): it waits
        until every entry up to the newest one at the call is settled. A third-party backend
        with neither falls back to timestamps: phase 1 waits until the next record to hand out
        was stored after the call.
        """
        pool = self.pool
        since = time.time()
        with pool.progress:
            pool.urgent += 1  # lingering workers hand over what they hold at once
        try:
            marked = _marked(pool.backend)
            if marked is not None:
                return self._wait_settled(*marked, deadline)
            while True:
                with pool.take_lock:
                    epoch = pool.nack_epoch
                    base = waiting_by_lane(pool.backend)
                    taken, returned = dict(pool.taken), dict(pool.returned)
                while True:
                    with pool.take_lock:
                        if (
                            self._all_taken(base, taken, returned)
                            if base is not None
                            else _none_older(pool, since)
                        ):
                            need = [(s, s.rounds) for s in pool.slots]
                            break
                    with pool.progress:
                        if not self._wait_progress(deadline):
                            return False
                with pool.progress:
                    while any(not s.abandoned and s.finished < n for s, n in need):
                        if not self._wait_progress(deadline):
                            return False
                with pool.take_lock:  # a slot is abandoned and its batch nacked at once
                    if pool.nack_epoch == epoch:
                        return True
        finally:
            with pool.progress:
                pool.urgent -= 1

    def _all_taken(
        self, base: dict[Any, int], taken: dict[Any, int], returned: dict[Any, int]
    ) -> bool:
        """Whether none of the ``base`` records waits any more (holding ``pool.take_lock``)."""
        pool = self.pool
        now: dict[Any, int] | None = None
        for lane, waited in base.items():
            net = pool.taken.get(lane, 0) - taken.get(lane, 0)
            net -= pool.returned.get(lane, 0) - returned.get(lane, 0)
            if net >= waited:
                continue
            if now is None:
                now = waiting_by_lane(pool.backend) or {}
            if now.get(lane, 0):
                return False
        return True

    def wait_idle(self, deadline: float) -> bool:
        """Wait until no live worker holds a batch; False at ``deadline`` (monotonic)."""
        pool = self.pool
        with pool.progress:
            while any(s.inflight and not s.abandoned for s in pool.slots):
                if not self._wait_progress(deadline):
                    return False
        return True

    def _wait_settled(
        self, settled_through: Callable[[Any], bool], mark: Any, deadline: float
    ) -> bool:
        """Wait until ``settled_through(mark)`` (a None mark: nothing to wait for)."""
        while mark is not None and not settled_through(mark):
            with self.pool.progress:
                if not self._wait_progress(deadline):
                    return False
        return True

    def _wait_progress(self, deadline: float) -> bool:
        """Wait (holding ``pool.progress``) for a worker's news, or a short while."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self.cut.is_set():
            return False
        self.pool.progress.wait(min(remaining, _POLL / 5))
        return True


def _marked(backend: Any) -> tuple[Callable[[Any], bool], Any] | None:
    """``(settled_through, mark)`` of a backend that offers a sequence mark, else None."""
    mark_now = getattr(backend, "flush_mark", None)
    settled = getattr(backend, "settled_through", None)
    if not callable(mark_now) or not callable(settled):
        return None
    return settled, mark_now()


def _none_older(pool: Pool, since: float) -> bool:
    """Whether no record stored before ``since`` (wall clock) waits in ``pool``'s backend."""
    oldest = pool.backend.oldest_enqueued_at()
    return oldest is None or oldest > since
