"""Delivering one batch: the sink and deferred calls, retries in place, dead letters.

A worker of the pool (:mod:`spoolkit.spool.pool`) hands each batch it takes to
:meth:`Deliverer.run`. The data records go to the sink in one call, each deferred call to its
registered function; failures are retried in place with tenacity (the backoff waits on the
spool's clock and ends early when the spool stops); what still fails is dead-lettered. A
record is acknowledged only once its sink call returned or its dead letter is stored, through
the pool's ``settle``, which raises :class:`Abandoned` once the supervisor gave the batch to
another worker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import tenacity

from spoolkit._internal.clock import wait
from spoolkit._internal.guard import guard
from spoolkit._internal.redact import error_repr
from spoolkit.backends import Backend
from spoolkit.deadletter import DeadEntry, DeadLetters
from spoolkit.errors import PartialFailure, UnknownDeferredError
from spoolkit.retry import Clock, RetryPolicy, id_range, log_retry, older_than, to_retrying
from spoolkit.spool.current import delivering
from spoolkit.spool.deferred import CALL_MARK, DeferredCall, Registered, as_call
from spoolkit.spool.stats import Counters
from spoolkit.typing import Record

if TYPE_CHECKING:
    from spoolkit.spool.pool import Slot

__all__ = ["Abandoned", "Deliverer", "Interrupted", "SinkCall"]

SinkCall = Callable[[Sequence[Record]], None]
Settle = Callable[["Slot", Sequence[Any], Sequence[Any]], None]
"""``settle(slot, ack, nack)``: acknowledge ``ack`` and hand ``nack`` back, for ``slot``."""


class Interrupted(BaseException):
    """The spool is stopping: a backoff was cut short and the batch goes back to the queue."""


class Abandoned(BaseException):
    """The supervisor gave this worker's batch to another worker: drop it silently."""


class Deliverer:
    """Delivers the batches of one spool's workers.

    Args:
        backend: where the records come from (their ids; dead letters re-encode items).
        sink: the sink's ``write``, used when a slot has no call of its own.
        dead: where records go when their retries are exhausted.
        registry: the deferred functions, by name.
        retry: the spool's retry policy (a deferred function may have its own).
        counters: delivered/retried/dead-lettered counts and the last error.
        clock: where time is read and backoffs wait.
        log: the spool's bound logger.
        settle: the pool's ``settle(slot, ack, nack)``.
        stopping: set when the spool stops: a backoff ends and its batch is handed back.
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
        log: Any,
        settle: Settle,
        stopping: threading.Event,
    ) -> None:
        self._backend = backend
        self._sink = sink
        self._dead = dead
        self._registry = registry
        self._retry = retry
        self._counters = counters
        self._clock = clock
        self._log = log
        self._settle = settle
        self._stopping = stopping
        self._attempts: dict[str, int] = {}  # record id -> attempts so far, while it fails

    def run(self, slot: Slot, msgs: list[Any]) -> None:
        """Deliver ``msgs``, the batch ``slot`` holds: data records to the sink in one call,
        each deferred call to its function. A stopping spool hands the batch back unseen."""
        if self._stopping.is_set():
            self._settle(slot, (), msgs)
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
            self._deliver(slot, data, slot.write or self._sink, self._retry)
        for m, call in calls:
            reg = self._registry.get(call.name)
            if reg is None:
                err = UnknownDeferredError(call.name)
                now = self._clock.time()
                self._dead_letter(slot, [m], [1], err, now, now)
                continue
            self._deliver(slot, [m], _runner(reg, call), reg.retry or self._retry)

    def _deliver(
        self, slot: Slot, msgs: list[Any], target: SinkCall, retry: RetryPolicy | tenacity.Retrying
    ) -> None:
        """Deliver ``msgs`` through ``target``: ack, retry in place, or dead-letter."""
        ids = self._backend.record_ids(msgs)
        current = list(range(len(msgs)))
        tried = [0] * len(msgs)
        attempts = self._attempts
        first_at = self._clock.time()

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
            else:  # nothing failed lately: every record is on its first attempt
                tried[:] = [1] * len(msgs)
                records = [
                    Record(i, m.item, m.enqueued_at, 1) for i, m in zip(ids, msgs, strict=True)
                ]
            if retried:
                self._counters.add("retried", retried)
            slot.call_started = self._clock.monotonic()
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
            self._retry_in_place(
                slot, msgs, ids, current, tried, attempt, retry, first_error, first_at
            )
            return
        self._delivered(slot, [msgs[i] for i in current], [ids[i] for i in current])

    def _failed(self, current: list[int], ids: list[str], tried: list[int], exc: Exception) -> None:
        for i in current:
            self._attempts[ids[i]] = tried[i]
        self._counters.error(exc)

    def _delivered(self, slot: Slot, msgs: list[Any], ids: list[str]) -> None:
        self._settle(slot, msgs, ())
        attempts = self._attempts
        if attempts:
            for i in ids:
                attempts.pop(i, None)
        self._counters.add("delivered", len(msgs))

    def _retry_in_place(  # noqa: PLR0917 - private, the state of one delivery
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
        """Retry what failed per ``retry``; dead-letter it when the retries are exhausted."""
        pending: list[Exception] = [first_error]

        def again() -> None:
            if pending:
                raise pending.pop()  # attempt 1 already happened: tell tenacity how it went
            attempt()

        retrying = to_retrying(retry, self._sleep)
        if isinstance(retry, RetryPolicy) and retry.max_age is not None:
            born = min(msgs[i].enqueued_at for i in current)
            too_old = older_than(born, retry.max_age, self._clock.time)
            stop = retrying.stop
            retrying.stop = lambda state: bool(stop(state)) or too_old(state)
        retrying.before_sleep = log_retry(self._log, [ids[i] for i in current])
        try:
            retrying(again)
        except Interrupted:
            self._settle(slot, (), [msgs[i] for i in current])
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
            self._clock.time(),
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
        entries = DeadEntry.build(self._backend, msgs, tried, exc, first_at, last_at)
        self._dead.add(entries)  # fsynced before the originals are acknowledged
        self._settle(slot, msgs, ())
        self._counters.add("dead_lettered", len(msgs))
        self._counters.error(exc)
        self._log.error(
            "batch_dead_lettered",
            batch_size=len(msgs),
            record_ids=id_range([e.record_id for e in entries]),
            error=error_repr(exc),
        )

    def _sleep(self, seconds: float) -> None:
        """tenacity's sleep: returns early, raising :class:`Interrupted`, when stopping."""
        if wait(self._clock, self._stopping, seconds):
            raise Interrupted


def _runner(reg: Registered, call: DeferredCall) -> SinkCall:
    """The sink call of one deferred call: run the function as the application's own code."""

    def run(records: Sequence[Record]) -> None:
        guard.active = False  # the application's own code: what it logs is spooled
        token = delivering.set(records[0])  # spoolkit.current_record() inside the function
        try:
            reg.run(call)
        finally:
            delivering.reset(token)
            guard.active = True

    return run
