"""The batches a pool's workers hold, and what ``flush`` waits for.

Every batch is taken, counted by lane and noted in its worker's :class:`Slot` under one lock,
and every hand-back is counted under the same lock, so :meth:`Batches.wait_settled` can decide
"every record in the spool at the call is settled" by counting records, never by their
timestamps (a wall clock stepped back stamps records in the "future"). Only the pool
(:mod:`spoolkit.spool.pool`) uses this module; the rest of the spool sees its API.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from spoolkit.errors import ClosedError
from spoolkit.spool.delivery import Abandoned, SinkCall

if TYPE_CHECKING:
    from spoolkit.backends import Backend

__all__ = ["Batches", "Slot", "Take"]

_LINGER_SLICE = 0.05  # how often a lingering worker looks at stop/flush requests
_PROGRESS_SLICE = 0.05  # the most seconds a wait for progress sleeps between two looks

Take = Callable[[int, float | None], Sequence[Any]]
"""``take(max_items, timeout)``: hand out a batch (a backend's ``get_batch``, or a wrapper)."""


class Slot:
    """One worker thread and the batch it holds.

    ``lock`` makes finishing a batch (ack, nack, dead letter) and taking it away from the
    worker (a crash, a stuck call, a stop) mutually exclusive: exactly one of them settles each
    record. Others only read a slot: the supervisor looks at ``call_started``, ``abandoned``
    and ``thread`` to find stuck calls.
    """

    __slots__ = (
        "abandoned",
        "call_started",
        "finished",
        "future",
        "index",
        "inflight",
        "lock",
        "rounds",
        "thread",
        "write",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.lock = threading.Lock()
        self.inflight: list[Any] = []
        self.call_started: float | None = None  # the running sink call's start (clock.monotonic)
        self.abandoned = False
        self.rounds = 0  # batches taken (under the take lock)
        self.finished = 0  # rounds settled (under the progress condition)
        self.thread: threading.Thread | None = None
        self.write: SinkCall | None = None  # what this worker calls with a batch of records
        # an async sink's call running on the pool's loop: cancelled when the batch is abandoned
        self.future: concurrent.futures.Future[None] | None = None


class Batches:
    """The slots of one pool, the batches they hold, and the locks between them.

    Args:
        backend: the store batches come from and are acknowledged in.
        take: hands out a batch (see :data:`Take`).
        batch_size: the most records per batch.
        batch_interval: the longest a worker lingers for a batch to fill, in seconds.
        stopping: set when the spool stops: workers linger no more.
        cut: set to end every wait at once (a second Ctrl-C during ``stop``).
    """

    def __init__(
        self,
        backend: Backend[Any],
        take: Take,
        *,
        batch_size: int,
        batch_interval: float,
        stopping: threading.Event,
        cut: threading.Event,
    ) -> None:
        self._backend = backend
        self._take = take
        self._batch_size = batch_size
        self._batch_interval = batch_interval
        self._stopping = stopping
        self._cut = cut
        self._progress = threading.Condition(threading.Lock())  # a batch settled, a slot changed
        self._take_lock = threading.Lock()  # taking/handing back a batch and counting it
        self._slots: list[Slot] = []
        # records handed to workers / handed back, per lane (under _take_lock); _epoch moves
        # with every hand-back
        self._taken: dict[Any, int] = {}
        self._returned: dict[Any, int] = {}
        self._epoch = 0
        self._lane_of = backend.lane_of
        self._urgent = 0  # flush callers waiting (under _progress): workers do not linger

    # -- slots ---------------------------------------------------------------------------------

    def put_slot(self, slot: Slot) -> None:
        """Make ``slot`` the one of its index (a new worker, or one in a former one's place)."""
        with self._progress:
            if slot.index < len(self._slots):
                self._slots[slot.index] = slot
            else:
                self._slots.append(slot)

    @property
    def slots(self) -> tuple[Slot, ...]:
        """The current slot of each worker, by index (a snapshot)."""
        with self._progress:
            return tuple(self._slots)

    @property
    def urgent(self) -> int:
        """``flush`` callers waiting now (workers then hand over batches without lingering)."""
        return self._urgent

    def oldest_inflight(self) -> float | None:
        """``enqueued_at`` of the oldest record held by a worker."""
        times = [m.enqueued_at for s in self.slots for m in list(s.inflight)]
        return min(times, default=None)

    # -- one round of a worker -----------------------------------------------------------------

    def take(self, slot: Slot) -> list[Any]:
        """Wait for records empty-handed, then take a batch for ``slot`` (lingering up to
        ``batch_interval`` for it to fill).

        Taking the batch, counting it and noting it in ``slot`` happen under one lock, so
        :meth:`wait_settled` sees every record either waiting in the backend or held by a known
        round of a slot.
        """
        take, size = self._take, self._batch_size
        self._backend.wait(None)
        with self._take_lock:
            msgs = slot.inflight = list(take(size, 0))
            slot.rounds += 1
            if msgs:
                self._count(self._taken, msgs)
        if self._urgent:
            with self._progress:
                self._progress.notify_all()
        if msgs and len(msgs) < size and self._batch_interval > 0:
            deadline = time.monotonic() + self._batch_interval
            while len(msgs) < size and not self._stopping.is_set() and not self._urgent:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if self._backend.wait(min(remaining, _LINGER_SLICE)):
                    with self._take_lock:
                        more = take(size - len(msgs), 0)
                        if more:
                            msgs.extend(more)
                            self._count(self._taken, more)
        return msgs

    def finished(self, slot: Slot) -> None:
        """``slot``'s round is over: every record it took is settled."""
        with self._progress:
            slot.finished = slot.rounds
            self._progress.notify_all()

    def settle(self, slot: Slot, ack: Sequence[Any], nack: Sequence[Any]) -> None:
        """Acknowledge ``ack`` and hand ``nack`` back, for the batch ``slot`` holds.

        Raises:
            Abandoned: the batch was taken away from ``slot``; it settles none of it.
        """
        with slot.lock:
            if slot.abandoned:
                raise Abandoned
            if ack:
                self._backend.ack(*ack)
            if nack:
                with self._take_lock:
                    self._hand_back(nack)
            settled = len(ack) + len(nack)
            if settled >= len(slot.inflight):
                slot.inflight = []
            else:
                done = {id(m) for m in (*ack, *nack)}
                slot.inflight = [m for m in slot.inflight if id(m) not in done]

    def abandon(self, slot: Slot, call_started: float | None = None) -> list[Any] | None:
        """Take ``slot``'s batch away from it and hand it back to the queue; return it.

        With ``call_started``, only if that sink call is still running; None if not done.
        """
        with slot.lock:
            if slot.abandoned or (call_started is not None and slot.call_started != call_started):
                return None
            msgs, slot.inflight = slot.inflight, []
            with self._take_lock:  # flush sees the slot abandoned only with its nack counted
                slot.abandoned = True
                self._hand_back(msgs)
            future = slot.future
            if future is not None:  # an async sink's call: cancel it on the loop
                future.cancel()
        with self._progress:
            self._progress.notify_all()
        return msgs

    def _hand_back(self, msgs: Sequence[Any]) -> None:
        """Nack ``msgs`` and count them, holding ``_take_lock``."""
        if msgs:
            # closed: every unacknowledged record is delivered again after a restart
            with contextlib.suppress(ClosedError):
                self._backend.nack(*msgs)
            self._count(self._returned, msgs)
        self._epoch += 1

    def _count(self, counts: dict[Any, int], msgs: Sequence[Any]) -> None:
        """Add ``msgs`` to ``counts`` by lane (holding ``_take_lock``)."""
        lane_of = self._lane_of
        first = lane_of(msgs[0])
        if lane_of(msgs[-1]) == first:  # a batch usually comes from one lane
            counts[first] = counts.get(first, 0) + len(msgs)
            return
        for m in msgs:
            key = lane_of(m)
            counts[key] = counts.get(key, 0) + 1

    # -- waiting for progress (flush, stop) ----------------------------------------------------

    def wait_settled(self, deadline: float) -> bool:
        """Wait until every record in the spool now (waiting or in flight) is settled; False
        at ``deadline`` (monotonic) or when cut.

        Phase 1 notes how many records wait in each lane (the backend's ``waiting_by_lane``)
        and waits until workers have taken that many of the lane, net of those handed back (a
        lane hands records out in order, handed-back ones first, so none of the noted ones
        waits then), or the lane is empty; it notes which round of which worker may hold them.
        Phase 2 waits for those rounds to end. A hand-back in the meantime (a crash, a stuck
        sink) puts records back: then it starts over, counting afresh.

        A backend whose records cannot be counted by lane (``waiting_by_lane()`` is None: a
        Redis stream's entries are taken by other consumers too) gives a mark instead: this
        waits until ``settled_through(flush_mark())``.
        """
        with self._progress:
            self._urgent += 1  # lingering workers hand over what they hold at once
        try:
            while True:
                with self._take_lock:
                    epoch = self._epoch
                    base = self._backend.waiting_by_lane()
                    taken, returned = dict(self._taken), dict(self._returned)
                if base is None:
                    return self._wait_mark(deadline)
                need = self._wait_taken(base, taken, returned, deadline)
                if need is None or not self._wait_rounds(need, deadline):
                    return False
                with self._take_lock:  # a slot is abandoned and its batch nacked at once
                    if self._epoch == epoch:
                        return True
        finally:
            with self._progress:
                self._urgent -= 1

    def _wait_taken(
        self,
        base: dict[Any, int],
        taken: dict[Any, int],
        returned: dict[Any, int],
        deadline: float,
    ) -> list[tuple[Slot, int]] | None:
        """Phase 1 of :meth:`wait_settled`: the rounds that may hold the ``base`` records, once
        none of them waits; None at the deadline."""
        while True:
            with self._take_lock:
                if self._all_taken(base, taken, returned):
                    return [(s, s.rounds) for s in self._slots]
            with self._progress:
                if not self._wait_progress(deadline):
                    return None

    def _all_taken(
        self, base: dict[Any, int], taken: dict[Any, int], returned: dict[Any, int]
    ) -> bool:
        """Whether none of the ``base`` records waits any more (holding ``_take_lock``)."""
        now: dict[Any, int] | None = None
        for lane, waited in base.items():
            net = self._taken.get(lane, 0) - taken.get(lane, 0)
            net -= self._returned.get(lane, 0) - returned.get(lane, 0)
            if net >= waited:
                continue
            if now is None:
                now = self._backend.waiting_by_lane() or {}
            if now.get(lane, 0):
                return False
        return True

    def _wait_mark(self, deadline: float) -> bool:
        """Wait until everything stored up to the backend's mark now is settled, then until
        the rounds that settled it ended (so that the stats count it as a lane flush does)."""
        backend = self._backend
        mark = backend.flush_mark()
        while mark is not None and not backend.settled_through(mark):
            with self._progress:
                if not self._wait_progress(deadline):
                    return False
        with self._take_lock:
            need = [(s, s.rounds) for s in self._slots]
        return self._wait_rounds(need, deadline)

    def _wait_rounds(self, need: list[tuple[Slot, int]], deadline: float) -> bool:
        """Phase 2 of :meth:`wait_settled`: wait until each slot of ``need`` finished the
        round noted with it (or was abandoned); False at the deadline."""
        with self._progress:
            while any(not s.abandoned and s.finished < n for s, n in need):
                if not self._wait_progress(deadline):
                    return False
        return True

    def wait_idle(self, deadline: float) -> bool:
        """Wait until no live worker holds a batch; False at ``deadline`` (monotonic) or when
        cut."""
        with self._progress:
            while any(s.inflight and not s.abandoned for s in self._slots):
                if not self._wait_progress(deadline):
                    return False
        return True

    def _wait_progress(self, deadline: float) -> bool:
        """Wait (holding ``_progress``) for a worker's news, or a short while; False at the
        deadline or when cut."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self._cut.is_set():
            return False
        self._progress.wait(min(remaining, _PROGRESS_SLICE))
        return True
