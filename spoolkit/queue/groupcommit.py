"""Group commit: many callers that each need an fsync share one.

One caller at a time, the leader, runs the flush; the others wait for it, and every caller
whose write it covered returns when it ends. Callers that arrive during a flush are covered
by the next one, so the leader of that one waits a moment for them to join: while the last
flush covered more than one caller, the leader waits until as many callers are in (or for
half the last flush's duration, at most :data:`MAX_PATIENCE`) before it flushes. A lone
caller never waits.

Waking threads is what bounds the gain where an fsync is fast, so each waiter sleeps on a
lock of its own and is woken exactly once: when a flush covered it, or to lead the next one.
The next leader is woken first, so its flush starts while the covered callers wake; none of
them takes the shared lock again on the way out, and no caller is woken only to find that
the flush did not cover it.

What this gains depends on how long an fsync takes against waking a thread: where an fsync
is much faster, the wake-ups bound the gain (figures in docs/benchmarks.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import monotonic

MAX_PATIENCE = 0.002
"""The longest a leader waits for the callers of the last group, in seconds."""

_new_lock = threading.Lock  # a waiter's own lock (replaced in tests)


class _Waiter:
    """A caller waiting for a flush: its generation, and a held lock that wakes it."""

    __slots__ = ("epoch", "lead", "lock", "upto")

    def __init__(self, upto: int, epoch: int) -> None:
        self.upto = upto
        self.epoch = epoch
        self.lead = False  # woken to lead the next flush, not because one covered it
        self.lock = _new_lock()
        self.lock.acquire()


class GroupCommit:
    """Share flushes between concurrent callers; see the module docstring."""

    def __init__(
        self, max_patience: float = MAX_PATIENCE, clock: Callable[[], float] = monotonic
    ) -> None:
        self._max_patience = max_patience
        self._clock = clock
        self._lock = threading.Lock()
        self._joined = threading.Condition(self._lock)  # the leader waiting for its group
        self._waiters: list[_Waiter] = []  # callers waiting for a flush, in arrival order
        self._flushing = False  # a leader is gathering or flushing
        self._leader_waiting = False
        self._covered = 0  # the highest generation a finished flush covered
        self._inside = 0  # callers that came in since the last flush gathered its group
        self._epoch = 0  # flushes gathered so far
        self._group = 1  # callers the last flush covered
        self._patience = 0.0

    def run(self, upto: int, flush: Callable[[], int]) -> None:
        """Return once a flush covered generation ``upto``.

        Args:
            upto: the generation the caller needs on disk.
            flush: does the flush and returns the generation it covered; it is run by one
                caller at a time. If it raises, the caller that ran it gets the error and
                the others run it again.
        """
        with self._lock:
            if self._covered >= upto:
                return
            self._inside += 1
            if self._leader_waiting:
                self._joined.notify()
            waiter = None
            if self._flushing:
                waiter = _Waiter(upto, self._epoch)
                self._waiters.append(waiter)
            else:
                self._flushing = True
                self._lead_gather()
        if waiter is not None:
            try:
                waiter.lock.acquire()  # released by a leader: covered, or to lead
            except BaseException:  # interrupted (a signal handler raised): leave the queue
                self._abandon(waiter)
                raise
            if not waiter.lead:
                return
            with self._lock:
                self._lead_gather()
        started = self._clock()
        covered: int | None = None
        try:
            covered = flush()
        finally:
            with self._lock:
                woken = self._end(covered, self._clock() - started)
            _wake(woken)

    def _lead_gather(self) -> None:
        """As the leader, wait briefly for the callers of the last group (lock held).

        Every caller in at the end is covered by the flush that follows: each wrote before
        it came in, and the flush takes the generation after this.
        """
        try:
            if self._group > 1 and self._inside < self._group:
                deadline = self._clock() + self._patience
                self._leader_waiting = True
                try:
                    while self._inside < self._group:
                        left = deadline - self._clock()
                        if left <= 0 or not self._joined.wait(left):
                            break  # patience spent
                finally:
                    self._leader_waiting = False
        except BaseException:
            _wake(self._end(None, 0.0))  # pass the flush on; nothing was flushed
            raise
        self._group = self._inside
        self._inside = 0
        self._epoch += 1

    def _abandon(self, waiter: _Waiter) -> None:
        """Take an interrupted ``waiter`` out of the queue; if it was just made the leader,
        pass the flush on so that the callers behind it are not left waiting."""
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                self._leave(waiter)
                woken = []
            else:  # released meanwhile: covered, or made the leader (then pass the flush on)
                woken = self._end(None, 0.0) if waiter.lead else []
        _wake(woken)

    def _leave(self, waiter: _Waiter) -> None:
        """``waiter`` leaves without a flush of its own (lock held): if it came in after the
        last gathering, it no longer counts in the next group."""
        if waiter.epoch == self._epoch:
            self._inside -= 1

    def _end(self, covered: int | None, took: float) -> list[_Waiter]:
        """As the leader, end the flush (lock held): return the waiters to wake, the next
        leader first, then every caller the flush covered (none if it failed: ``covered`` is
        None)."""
        if covered is not None:
            self._covered = max(self._covered, covered)
            self._patience = min(self._max_patience, took / 2)
        done: list[_Waiter] = []
        rest: list[_Waiter] = []
        for w in self._waiters:
            (done if covered is not None and w.upto <= covered else rest).append(w)
        for w in done:
            self._leave(w)
        self._waiters = rest
        if not rest:
            self._flushing = False
            return done
        nxt = rest.pop(0)
        nxt.lead = True  # the flush stays taken: it passes to nxt
        return [nxt, *done]


def _wake(waiters: list[_Waiter]) -> None:
    for w in waiters:
        w.lock.release()
