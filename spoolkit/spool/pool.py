"""The consumer pool: worker threads that take batches, deliver them and acknowledge them.

A worker takes up to ``batch_size`` records (waiting up to ``batch_interval`` for a batch to
fill), hands the data records to the sink and each deferred call to its function, retries
failures in place with tenacity, and acknowledges a record only once its sink returned or it
was dead-lettered. Crashes and stuck sink calls are the supervisor's business
(:mod:`spoolkit.spool.supervisor`).

A sink whose ``write`` is ``async def`` runs on the pool's event loop
(:mod:`spoolkit.spool.async_sink`): the worker hands its batch to the loop and waits for the answer,
so everything above holds unchanged; a call given up on (stuck, or abandoned by ``stop``) is
cancelled there. A sync sink is called directly, as it always was.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import tenacity

from spoolkit._internal.guard import guard, spoolkit_thread
from spoolkit._internal.redact import error_repr
from spoolkit.backends import Backend
from spoolkit.deadletter import DeadEntry, DeadLetters
from spoolkit.errors import ClosedError, PartialFailure, TransientError, UnknownDeferredError
from spoolkit.retry import (
    Clock,
    RetryPolicy,
    SystemClock,
    id_range,
    log_retry,
    older_than,
    to_retrying,
)
from spoolkit.spool.async_sink import AsyncRunner, concurrency_of, is_async_callable
from spoolkit.spool.current import delivering
from spoolkit.spool.deferred import CALL_MARK, DeferredCall, Registered, as_call
from spoolkit.spool.lanes_view import lane_key
from spoolkit.spool.stats import Counters
from spoolkit.typing import Record

__all__ = ["Pool", "Slot"]

_LINGER_SLICE = 0.05  # how often a lingering worker looks at stop/flush requests
_CLOSE_WAIT = 30.0  # the most seconds an async sink's close() may take


class Interrupted(BaseException):
    """The spool is stopping: a backoff was cut short and the batch goes back to the queue."""


class Abandoned(BaseException):
    """The supervisor gave this worker's batch to another worker: drop it silently."""


class Slot:
    """One worker thread and the batch it holds, shared with the supervisor and ``flush``.

    ``lock`` makes finishing a batch (ack, nack, dead-letter) and abandoning it (the
    supervisor's nack) mutually exclusive: exactly one of them settles each record.
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
        self.call_started: float | None = None
        self.abandoned = False
        self.rounds = 0  # batches taken (under Pool.take_lock)
        self.finished = 0  # rounds settled (under Pool.progress)
        self.thread: threading.Thread | None = None
        self.write: SinkCall | None = None  # what this worker calls with a batch of records
        # an async sink's call running on the pool's loop: cancelled when the batch is abandoned
        self.future: concurrent.futures.Future[None] | None = None


SinkCall = Callable[[Sequence[Record]], None]


class Pool:
    """Worker threads over one backend. Created and driven by :class:`spoolkit.Spool`."""

    def __init__(
        self,
        backend: Backend,
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
    ) -> None:
        self.backend = backend
        self.sink = sink
        self.dead = dead
        self.registry = registry
        self.retry = retry
        self.counters = counters
        self.clock = clock
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self.log = log
        self.stopping = threading.Event()
        self.progress = threading.Condition(threading.Lock())
        self.take_lock = threading.Lock()
        self.slots: list[Slot] = []
        self.nack_epoch = 0  # moves with every hand-back (under take_lock, with the nack)
        # records handed to workers / handed back, per lane (see spoolkit.spool.lanes_view): flush
        # counts these, under take_lock, never the records' timestamps
        self.taken: dict[Any, int] = {}
        self.returned: dict[Any, int] = {}
        self._lane_of = lane_key(backend)
        self.urgent = 0  # flush() callers waiting: workers do not linger
        self.on_crash: Callable[[Slot, BaseException, list[Any]], None] = lambda *_: None
        self._attempts: dict[str, int] = {}
        self._real_clock = isinstance(clock, SystemClock)
        self.workers = 1  # set by the supervisor (size_for): an async sink's default concurrency
        self.is_async = is_async_callable(sink)
        self.runner: AsyncRunner | None = None  # an async sink's loop, started on first use
        self._runner_lock = threading.Lock()

    def size_for(self, workers: int) -> None:
        """Note the pool's size; check an async sink's ``concurrency`` now (a ConfigError at
        construction rather than in a worker)."""
        self.workers = workers
        if self.is_async:
            concurrency_of(_sink_object(self.sink), workers)

    # -- async sinks ---------------------------------------------------------------------------

    def loop(self) -> AsyncRunner:
        """The pool's event loop for async sink calls, started on first use (and again after
        ``close_sink`` closed it, for a sink closed twice)."""
        runner = self.runner
        if runner is None or runner.loop.is_closed():
            with self._runner_lock:
                if self.runner is None or self.runner.loop.is_closed():  # closed: close_sink ran
                    concurrency = concurrency_of(_sink_object(self.sink), self.workers)
                    self.runner = AsyncRunner(concurrency)
                    # a pool dropped without close_sink (its spool never stopped) stops its loop;
                    # not at exit, where spools still deliver through it
                    weakref.finalize(self, self.runner.stop).atexit = False
                runner = self.runner
        return runner

    def open_sink(self, sink: Any) -> None:
        """Call ``sink.open()`` if it has one: awaited on the pool's loop if ``async def``."""
        opener = getattr(sink, "open", None)
        if callable(opener):
            if is_async_callable(opener):
                self.loop().run(opener, None)
            else:
                opener()

    def close_sink(self, sink: Any, opened: bool = True) -> None:
        """Call ``sink.close()`` if it has one and was opened (awaited on the pool's loop if
        ``async def``, for up to 30 s); then stop and close the pool's loop, if it has one."""
        try:
            closer = getattr(sink, "close", None)
            if opened and callable(closer):
                if is_async_callable(closer):
                    self.loop().run(closer, _CLOSE_WAIT)
                else:
                    closer()
        finally:
            if self.runner is not None:
                self.runner.stop()

    def _async_call(self, slot: Slot) -> SinkCall:
        """``slot``'s sink call for an async sink: run on the loop, waited for here."""
        write = self.sink

        def call(records: Sequence[Record]) -> None:
            future = slot.future = self.loop().submit(write, records)  # type: ignore[arg-type]
            try:
                if slot.abandoned:  # abandoned before the future was noted: cancel it here
                    future.cancel()
                future.result()
            except concurrent.futures.CancelledError:
                if slot.abandoned:
                    raise Abandoned from None
                raise TransientError("the async sink call was cancelled") from None
            finally:
                slot.future = None

        return call

    # -- threads -------------------------------------------------------------------------------

    def spawn(self, index: int) -> Slot:
        """Start worker ``index`` (replacing the slot of that index, if any)."""
        slot = Slot(index)
        slot.write = self._async_call(slot) if self.is_async else self.sink
        slot.thread = threading.Thread(
            target=self._run, args=(slot,), name=f"spoolkit-worker-{index}", daemon=True
        )
        with self.progress:
            if index < len(self.slots):
                self.slots[index] = slot
            else:
                self.slots.append(slot)
        slot.thread.start()
        return slot

    def live(self) -> int:
        """Workers running and not abandoned."""
        with self.progress:
            return sum(
                1
                for s in self.slots
                if not s.abandoned and s.thread is not None and s.thread.is_alive()
            )

    def _run(self, slot: Slot) -> None:
        spoolkit_thread()  # a sink's own logging here is never spooled (no feedback loop)
        try:
            while not self.stopping.is_set() and not slot.abandoned:
                try:
                    msgs = self._take(slot)
                except ClosedError:  # closed, or taken over: hand back what it held
                    self.abandon(slot)
                    return
                if msgs:
                    self._handle(slot, msgs)
                with self.progress:
                    slot.finished = slot.rounds
                    self.progress.notify_all()
        except Abandoned:
            return
        except BaseException as exc:
            held = self.abandon(slot)
            self.counters.error(exc)
            self.on_crash(slot, exc, held or [])

    def abandon(self, slot: Slot, call_started: float | None = None) -> list[Any] | None:
        """Take ``slot``'s batch away from it and hand it back to the queue; return it.

        With ``call_started``, only if that sink call is still running; None if not done.
        """
        with slot.lock:
            if slot.abandoned or (call_started is not None and slot.call_started != call_started):
                return None
            msgs, slot.inflight = slot.inflight, []
            with self.take_lock:  # flush sees the slot abandoned only with its nack counted
                slot.abandoned = True
                self._hand_back(msgs)
            future = slot.future
            if future is not None:  # an async sink's call: cancel it on the loop
                future.cancel()
        with self.progress:
            self.progress.notify_all()
        return msgs

    def _hand_back(self, msgs: Sequence[Any]) -> None:
        """Nack ``msgs`` and count them, holding ``take_lock`` (see ``wait_delivered``)."""
        if msgs:
            # closed: every unacknowledged record is delivered again after a restart
            with contextlib.suppress(ClosedError):
                self.backend.nack(*msgs)
            self._count(self.returned, msgs)
        self.nack_epoch += 1

    def _count(self, counts: dict[Any, int], msgs: Sequence[Any]) -> None:
        """Add ``msgs`` to ``counts`` by lane (holding ``take_lock``)."""
        lane_of = self._lane_of
        first = lane_of(msgs[0])
        if lane_of(msgs[-1]) == first:  # a get_batch hands out the records of one lane
            counts[first] = counts.get(first, 0) + len(msgs)
            return
        for m in msgs:
            key = lane_of(m)
            counts[key] = counts.get(key, 0) + 1

    # -- taking --------------------------------------------------------------------------------

    def _take(self, slot: Slot) -> list[Any]:
        """Wait for records empty-handed, then take a batch (lingering up to batch_interval).

        Taking and registering the batch in ``slot`` happen under ``take_lock``, so ``flush``
        sees every record either waiting in the backend or held by a known round of a slot.
        """
        backend, size = self.backend, self.batch_size
        backend.wait(None)
        with self.take_lock:
            msgs = slot.inflight = list(backend.get_batch(size, 0))
            slot.rounds += 1
            if msgs:
                self._count(self.taken, msgs)
        if self.urgent:
            with self.progress:
                self.progress.notify_all()
        if msgs and len(msgs) < size and self.batch_interval > 0:
            deadline = time.monotonic() + self.batch_interval
            while len(msgs) < size and not self.stopping.is_set() and not self.urgent:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if backend.wait(min(remaining, _LINGER_SLICE)):
                    with self.take_lock:
                        more = backend.get_batch(size - len(msgs), 0)
                        if more:
                            msgs.extend(more)
                            self._count(self.taken, more)
        return msgs

    # -- delivering ----------------------------------------------------------------------------

    def _handle(self, slot: Slot, msgs: list[Any]) -> None:
        if self.stopping.is_set():
            self._settle(slot, nack=msgs)
            return
        data: list[Any] = []
        calls: list[tuple[Any, DeferredCall]] = []
        for m in msgs:
            item = m.item
            kind = type(item)
            call = None
            if kind is DeferredCall or (kind is dict and CALL_MARK in item):
                call = as_call(item)
            if call is None:
                data.append(m)
            else:
                calls.append((m, call))
        if data:
            self._deliver(slot, data, slot.write or self.sink, self.retry)
        for m, call in calls:
            reg = self.registry.get(call.name)
            if reg is None:
                err = UnknownDeferredError(call.name)
                now = self.clock.time()
                self._dead_letter(slot, [m], [1], err, now, now)
                continue
            self._deliver(slot, [m], _runner(reg, call), reg.retry or self.retry)

    def _settle(self, slot: Slot, ack: Sequence[Any] = (), nack: Sequence[Any] = ()) -> None:
        with slot.lock:
            if slot.abandoned:
                raise Abandoned
            if ack:
                self.backend.ack(*ack)
            if nack:
                with self.take_lock:
                    self._hand_back(nack)
            settled = len(ack) + len(nack)
            if settled >= len(slot.inflight):
                slot.inflight = []
            else:
                done = {id(m) for m in (*ack, *nack)}
                slot.inflight = [m for m in slot.inflight if id(m) not in done]

    def _deliver(
        self, slot: Slot, msgs: list[Any], target: SinkCall, retry: RetryPolicy | tenacity.Retrying
    ) -> None:
        """Deliver ``msgs`` through ``target``: ack, retry in place, or dead-letter."""
        ids = self.backend.record_ids(msgs)
        current = list(range(len(msgs)))
        tried = [0] * len(msgs)
        attempts = self._attempts
        first_at = self.clock.time()

        def attempt() -> None:
            if slot.abandoned:
                raise Abandoned
            retried = 0
            if attempts or len(current) < len(msgs):
                records = []
                for i in current:
                    n = tried[i] = attempts.get(ids[i], 0) + 1
                    retried += n > 1
                    m = msgs[i]
                    records.append(Record(ids[i], m.item, m.enqueued_at, n))
            else:  # the common case: nothing failed lately, every record is on attempt 1
                tried[:] = [1] * len(msgs)
                records = [
                    Record(i, m.item, m.enqueued_at, 1) for i, m in zip(ids, msgs, strict=True)
                ]
            if retried:
                self.counters.add("retried", retried)
            slot.call_started = self.clock.monotonic()
            try:
                target(records)
            except PartialFailure as exc:
                failed = set(map(str, exc.failed))
                ok = [i for i in current if ids[i] not in failed]
                if len(ok) == len(current):  # names no record of this batch: a sink bug,
                    self._failed(current, ids, tried, exc)  # so the whole batch failed
                    raise
                self._delivered(slot, [msgs[i] for i in ok], [ids[i] for i in ok])
                current[:] = [i for i in current if ids[i] in failed]
                self._failed(current, ids, tried, exc)
                raise
            except Exception as exc:
                self._failed(current, ids, tried, exc)
                raise
            finally:
                slot.call_started = None

        try:
            attempt()
        except Exception as first_error:
            self._retry(slot, msgs, ids, current, tried, attempt, retry, first_error, first_at)
            return
        self._delivered(slot, [msgs[i] for i in current], [ids[i] for i in current])

    def _failed(self, current: list[int], ids: list[str], tried: list[int], exc: Exception) -> None:
        for i in current:
            self._attempts[ids[i]] = tried[i]
        self.counters.error(exc)

    def _delivered(self, slot: Slot, msgs: list[Any], ids: list[str]) -> None:
        self._settle(slot, ack=msgs)
        attempts = self._attempts
        if attempts:
            for i in ids:
                attempts.pop(i, None)
        self.counters.add("delivered", len(msgs))

    def _retry(  # noqa: PLR0917 - private, the state of one delivery
        self,
        slot: Slot,
        msgs: list[Any],
        ids: list[str],
        current: list[int],
        tried: list[int],
        attempt: Callable[[], None],
        retry: RetryPolicy | tenacity.Retrying,
        first_error: Exception,
        first_at: float,
    ) -> None:
        pending: list[Exception] = [first_error]

        def again() -> None:
            if pending:
                raise pending.pop()  # attempt 1 already happened: tell tenacity how it went
            attempt()

        retrying = to_retrying(retry, self._sleep)
        if isinstance(retry, RetryPolicy) and retry.max_age is not None:
            born = min(msgs[i].enqueued_at for i in current)
            too_old = older_than(born, retry.max_age, self.clock.time)
            stop = retrying.stop
            retrying.stop = lambda state: bool(stop(state)) or too_old(state)
        retrying.before_sleep = log_retry(self.log, [ids[i] for i in current])
        try:
            retrying(again)
        except Interrupted:
            self._settle(slot, nack=[msgs[i] for i in current])
            return
        except tenacity.RetryError as err:
            last = err.last_attempt.exception() or first_error
        except Exception as exc:
            last = exc
        else:
            self._delivered(slot, [msgs[i] for i in current], [ids[i] for i in current])
            return
        self._dead_letter(
            slot,
            [msgs[i] for i in current],
            [tried[i] for i in current],
            last,
            first_at,
            self.clock.time(),
        )
        for i in current:
            self._attempts.pop(ids[i], None)

    def _dead_letter(  # noqa: PLR0917 - private
        self,
        slot: Slot,
        msgs: list[Any],
        tried: list[int],
        exc: BaseException,
        first_at: float,
        last_at: float,
    ) -> None:
        entries = DeadEntry.build(self.backend, msgs, tried, exc, first_at, last_at)
        self.dead.add(entries)  # fsynced before the originals are acknowledged
        self._settle(slot, ack=msgs)
        self.counters.add("dead_lettered", len(msgs))
        self.counters.error(exc)
        self.log.error(
            "batch_dead_lettered",
            batch_size=len(msgs),
            record_ids=id_range([e.record_id for e in entries]),
            error=error_repr(exc),
        )

    def _sleep(self, seconds: float) -> None:
        """tenacity's sleep: returns early, raising :class:`Interrupted`, when stopping."""
        if self.stopping.is_set():
            raise Interrupted
        if self._real_clock:
            self.stopping.wait(seconds)
        else:
            self.clock.sleep(seconds)
        if self.stopping.is_set():
            raise Interrupted

    def oldest_inflight(self) -> float | None:
        """``enqueued_at`` of the oldest record held by a worker."""
        times = [m.enqueued_at for s in list(self.slots) for m in list(s.inflight)]
        return min(times, default=None)


def _sink_object(write: Any) -> Any:
    """The sink a ``write`` callable belongs to (a bound method's object), else the callable."""
    return getattr(write, "__self__", write)


def _runner(reg: Registered, call: DeferredCall) -> SinkCall:
    def run(records: Sequence[Record]) -> None:
        guard.active = False  # the application's own code: what it logs is spooled
        token = delivering.set(records[0])  # spoolkit.current_record() inside the function
        try:
            reg.run(call)
        finally:
            delivering.reset(token)
            guard.active = True

    return run
