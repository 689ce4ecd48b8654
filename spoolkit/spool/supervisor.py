"""Supervision of the consumer pool: a policy on it, restarting crashed workers and replacing
stuck ones through the pool's API (:meth:`~spoolkit.spool.pool.Pool.restart`,
:meth:`~spoolkit.spool.pool.Pool.replace`).

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
from collections.abc import Callable, Sequence
from typing import Any

from spoolkit._internal.clock import wait
from spoolkit._internal.redact import error_repr
from spoolkit.retry import Clock
from spoolkit.spool.pool import Pool, Slot
from spoolkit.spool.stats import Counters

__all__ = ["STUCK_PER_WORKER", "Supervisor"]

_FIRST_RESTART_WAIT = 0.05
_MAX_RESTART_WAIT = 5.0
_CALM_AFTER = 30.0  # seconds without a crash after which the restart backoff starts over
_POLL = 0.25  # the most seconds between two looks for stuck sink calls
STUCK_PER_WORKER = 2  # abandoned stuck threads kept at most, per configured worker


class Supervisor:
    """Keeps the pool's workers live while the spool runs.

    Args:
        pool: the pool to watch.
        sink_timeout: seconds after which a sink call counts as stuck; ``None`` never.
        counters: where restarts are counted.
        clock: the spool's clock (restart backoff waits on it; stuck calls are timed on it).
        log: the spool's bound logger.
        record_ids: the backend's ``record_ids``, to name a crashed or stuck batch in logs.
    """

    def __init__(
        self,
        pool: Pool,
        *,
        sink_timeout: float | None,
        counters: Counters,
        clock: Clock,
        log: Any,
        record_ids: Callable[[Sequence[Any]], list[str]],
    ) -> None:
        self._pool = pool
        self.sink_timeout = sink_timeout
        self._counters = counters
        self._clock = clock
        self._log = log
        self._record_ids = record_ids
        self._crashes: queue.SimpleQueue[tuple[Slot, BaseException, list[Any]]] = (
            queue.SimpleQueue()
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._streak = 0
        self._last_crash = float("-inf")
        self.max_stuck = STUCK_PER_WORKER * pool.size
        self._stuck: list[Slot] = []  # abandoned in a stuck sink call; threads maybe running
        self._at_limit = False

    def start(self) -> None:
        """Start the workers and the supervisor thread."""
        self._pool.start(on_crash=self._crashed)
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
        """Restart a crashed worker after a backoff: 50 ms doubling to 5 s while crashes keep
        coming, from 50 ms again after 30 s without one."""
        now = self._clock.monotonic()
        self._streak = 0 if now - self._last_crash > _CALM_AFTER else self._streak + 1
        self._last_crash = now
        delay = min(_MAX_RESTART_WAIT, _FIRST_RESTART_WAIT * 2**self._streak)
        self._counters.add("worker_restarts")
        self._bound(slot, msgs).error("worker_crashed", error=error_repr(exc), restart_in=delay)
        if not wait(self._clock, self._stop, delay) and self._pool.restart(slot):
            self._bound(slot, msgs).info("worker_restarted")

    def check_stuck(self) -> None:
        """Replace every worker whose sink call has run longer than ``sink_timeout``, while
        fewer than ``max_stuck`` abandoned threads are still running; update
        ``stuck_threads``."""
        limit = self.sink_timeout
        if limit is None:
            return
        now = self._clock.monotonic()
        self._stuck = [s for s in self._stuck if s.thread is not None and s.thread.is_alive()]
        kept = 0  # stuck workers not replaced: the limit is reached
        for slot in self._pool.slots:
            started = slot.call_started
            if slot.abandoned or started is None or now - started <= limit:
                continue
            if len(self._stuck) >= self.max_stuck:
                kept += 1
                continue
            msgs = self._pool.replace(slot, started)
            if msgs is None:
                continue  # it returned in the meantime
            self._stuck.append(slot)
            self._counters.add("worker_restarts")
            self._counters.add("stuck_calls")
            self._bound(slot, msgs).error(
                "sink_stuck", running_for=round(now - started, 3), sink_timeout=limit
            )
        self._counters.stuck_threads = len(self._stuck) + kept
        if kept and not self._at_limit:
            self._at_limit = True
            self._log.warning(
                "sink_stuck_limit",
                abandoned_threads=len(self._stuck),
                max_stuck=self.max_stuck,
                stuck_workers=kept,
                sink_timeout=limit,
                note="stuck workers are no longer replaced until abandoned sink calls return",
            )
        elif not kept and self._at_limit:
            self._at_limit = False
            self._log.info("sink_stuck_limit_ended", abandoned_threads=len(self._stuck))

    def _bound(self, slot: Slot, msgs: list[Any]) -> Any:
        ids = self._record_ids(msgs) if msgs else []
        return self._log.bind(
            worker=slot.index,
            batch_size=len(msgs),
            record_ids=f"{ids[0]}..{ids[-1]}" if ids else "",
        )
