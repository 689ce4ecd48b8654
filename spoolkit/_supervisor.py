"""Supervision of the consumer pool: restart crashed workers, replace stuck ones.

A worker that dies of an unexpected error (a bug in a sink or in spoolkit, a failing disk under
the dead letters: anything but a failed write, which the retry policy handles) has its batch
handed back to the queue at once; the supervisor counts the crash, logs it and starts a new
worker after a backoff (50 ms doubling to 5 s while crashes keep coming). A sink call running
longer than ``sink_timeout`` is reported as stuck: its batch goes back to the queue for another
worker, a replacement worker starts at once, and the stuck thread is left to finish on its own
(whatever it returns is ignored). So the pool never stays below its configured size.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from spoolkit._pool import Pool, Slot
from spoolkit._redact import error_repr
from spoolkit._stats import Counters
from spoolkit.retry import Clock, SystemClock

__all__ = ["Supervisor"]

_FIRST_RESTART_WAIT = 0.05
_MAX_RESTART_WAIT = 5.0
_CALM_AFTER = 30.0  # seconds without a crash after which the restart backoff starts over
_POLL = 0.25  # the most seconds between two looks for stuck sink calls


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
        pool.on_crash = self._crashed

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
        """Replace every worker whose sink call has run longer than ``sink_timeout``."""
        limit = self.sink_timeout
        if limit is None:
            return
        now = self.clock.monotonic()
        for slot in list(self.pool.slots):
            started = slot.call_started
            if slot.abandoned or started is None or now - started <= limit:
                continue
            msgs = self.pool.abandon(slot, started)
            if msgs is None:
                continue  # it returned in the meantime
            self.pool.spawn(slot.index)
            self.counters.add("worker_restarts")
            self._bound(slot, msgs).error(
                "sink_stuck", running_for=round(now - started, 3), sink_timeout=limit
            )

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

    def wait_delivered(self, since: float, deadline: float) -> bool:
        """Wait until every record stored before ``since`` (wall clock) is settled.

        Phase 1 waits until none of them waits in the backend any more, and notes which round
        of which worker may hold them (taking a batch and noting it in the worker's slot
        happen under ``pool.take_lock``); phase 2 waits for those rounds to end. A nack in the
        meantime (a crash, a stuck sink) puts records back: then it starts over.
        """
        pool = self.pool
        with pool.progress:
            pool.urgent += 1  # lingering workers hand over what they hold at once
        try:
            while True:
                with pool.progress:
                    epoch = pool.nack_epoch
                while True:
                    with pool.take_lock:
                        oldest = pool.backend.oldest_enqueued_at()
                        if oldest is None or oldest > since:
                            need = [(s, s.rounds) for s in pool.slots]
                            break
                    with pool.progress:
                        if not self._wait_progress(deadline):
                            return False
                with pool.progress:
                    while any(not s.abandoned and s.finished < n for s, n in need):
                        if not self._wait_progress(deadline):
                            return False
                    if pool.nack_epoch == epoch:
                        return True
        finally:
            with pool.progress:
                pool.urgent -= 1

    def wait_idle(self, deadline: float) -> bool:
        """Wait until no live worker holds a batch; False at ``deadline`` (monotonic)."""
        pool = self.pool
        with pool.progress:
            while any(s.inflight and not s.abandoned for s in pool.slots):
                if not self._wait_progress(deadline):
                    return False
        return True

    def _wait_progress(self, deadline: float) -> bool:
        """Wait (holding ``pool.progress``) for a worker's news, or a short while."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.pool.progress.wait(min(remaining, _POLL / 5))
        return True
