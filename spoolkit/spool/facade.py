"""``spoolkit.Spool``: a durable buffer in front of a sink, drained by a supervised pool."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from queue import Full
from typing import Any, Literal, ParamSpec, Protocol, TypeVar, overload

import tenacity

from spoolkit._internal.log import get_logger
from spoolkit.backends import Backend, open_backend
from spoolkit.deadletter import DeadLetters
from spoolkit.errors import ClosedError, ConfigError, PermanentError, SpoolFull
from spoolkit.retry import Clock, RetryPolicy, SystemClock, to_retrying
from spoolkit.spool import aio as _async
from spoolkit.spool.deferred import (
    DeferredCall,
    DeferredFunction,
    DeferredHandle,
    Registered,
    register_deferred,
    to_item,
)
from spoolkit.spool.deferred import producer as _producer
from spoolkit.spool.interrupt import interrupted_stop
from spoolkit.spool.lifecycle import after_fork_in_child_of, running, watch_exit
from spoolkit.spool.pool import Pool
from spoolkit.spool.screen import screened
from spoolkit.spool.stats import Counters, Drops, SpoolStats, snapshot
from spoolkit.spool.supervisor import Supervisor
from spoolkit.typing import Record, Serializer

__all__ = ["Spool"]

P = ParamSpec("P")
R = TypeVar("R")

WhenFull = Literal["block", "drop_newest", "drop_oldest", "raise"]
_WHEN_FULL = ("block", "drop_newest", "drop_oldest", "raise")
_STOP_TIMEOUT = 30.0  # stop()'s default, and a with-block's at its end


class _DeferredDecorator(Protocol):
    def __call__(self, func: Callable[P, Any], /) -> DeferredFunction[P]: ...


class Spool:
    """A durable, disk-backed buffer between producers and a sink.

    ``put`` stores a record on disk and returns: producers never wait on the sink. ``workers``
    threads take batches of up to ``batch_size`` records and hand them to ``sink.write``,
    retrying failures per ``retry`` and dead-lettering what cannot be delivered. A record is
    acknowledged (removed) only once its sink returned or it was dead-lettered, so after a
    crash every record not yet acknowledged is delivered again: at least once.

    Args:
        path: the spool directory (dead letters live in ``<path>/dead``).
        sink: an object with ``write(batch)`` (and optional ``open()``/``close()``), a plain
            callable taking the batch, or None for a spool of deferred calls only.
        workers: consumer threads. With 1, records reach the sink in put order.
        batch_size: the most records per ``write`` call.
        batch_interval: the longest a worker waits for a batch to fill once it holds at least
            one record, in seconds (0 hands over what is there at once).
        retry: a :class:`~spoolkit.RetryPolicy` or a ``tenacity.Retrying``.
        max_bytes: cap on the spool's bytes on disk; what happens at the cap is ``when_full``.
        when_full: ``"block"`` (``put`` waits for room, up to its ``timeout``),
            ``"drop_newest"``, ``"drop_oldest"`` or ``"raise"``
            (:class:`~spoolkit.errors.SpoolFull`).
        fsync: ``"always"``, ``"interval"`` or ``"never"`` (see :class:`spoolkit.Queue`).
        serializer: ``"pickle"``, ``"json"``, ``"raw"`` or a serializer object.
        sink_timeout: seconds after which a running sink call counts as stuck and its batch is
            handed to another worker; None never. A stuck thread cannot be killed: at most 2
            per worker are left running, then stuck workers are kept rather than replaced
            (``stats().stuck_threads``, one ``sink_stuck_limit`` warning).
        backend: None (the disk lanes at ``path``, which any number of processes share:
            :class:`~spoolkit.backends.lanes.LanesBackend`), a
            ``redis://host/db?stream=...&group=...`` URL
            (:class:`~spoolkit.backends.redis.RedisBackend`; ``path`` then holds only the
            dead letters), a ``nats://host:4222?stream=...`` URL
            (:class:`~spoolkit.backends.nats.NatsBackend`) or any
            :class:`~spoolkit.backends.Backend` object. Whatever the backend, the spool itself
            dead-letters records handed out more than its ``max_deliveries`` times, and those it
            cannot decode (:mod:`spoolkit.spool.screen`).
        clock: where time is read and backoffs wait (:class:`spoolkit.testing.FakeClock`).
        consume: deliver (start workers); False for a producer-only process (a web worker)
            whose records another process delivers: ``spoolkit ship PATH --to URL``, or a
            Spool with ``consume=True`` on the same path.
        exit_timeout: when the interpreter exits normally without :meth:`stop`, the most
            seconds spent delivering what is waiting (the rest stays on disk for the next
            opener). A :class:`~spoolkit.SpoolHandler` that owns its spool uses its
            ``close_timeout`` instead.

    Processes: any number may open the same path at once (each writes to a lane of its own,
    see the Deploying page). A Spool that exists when the process forks keeps working in the
    parent and in the child: the child's first put takes a lane of its own and, if the spool
    was running, starts the child's workers.

    Raises:
        ConfigError: an invalid option.
        LockedError: another process holds the dead-letter store for over 30 s, or (with a
            backend object) the backend's own directory.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sink: Any,
        *,
        workers: int = 2,
        batch_size: int = 100,
        batch_interval: float = 0.5,
        retry: RetryPolicy | tenacity.Retrying | None = None,
        max_bytes: int | None = None,
        when_full: WhenFull = "block",
        fsync: str = "interval",
        serializer: str | Serializer = "pickle",
        sink_timeout: float | None = 300.0,
        backend: str | Backend[Any] | None = None,
        clock: Clock | None = None,
        consume: bool = True,
        exit_timeout: float = 5.0,
    ) -> None:
        _check(workers, batch_size, batch_interval, when_full, sink_timeout)
        if exit_timeout < 0:
            raise ConfigError(f"exit_timeout must be >= 0 seconds, got {exit_timeout!r}")
        self._retry = retry if retry is not None else RetryPolicy()
        to_retrying(self._retry, time.sleep)  # a ConfigError now rather than in a worker
        self._sink = sink
        self._write = _as_write(sink)
        self._when_full = when_full
        self._max_bytes = max_bytes
        self._serializer_name = serializer if isinstance(serializer, str) else "custom"
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.consume = consume
        self.exit_timeout = exit_timeout
        self.exit_owner: object | None = None
        """Who stops this spool at exit instead of the exit hook (a SpoolHandler owning it)."""
        self._backend = open_backend(
            backend, path, serializer=serializer, fsync=fsync, max_bytes=max_bytes, consume=consume
        )
        self.path = self._backend.path or os.path.abspath(path)
        try:
            self._dead = DeadLetters(
                os.path.join(self.path, "dead"), self._backend.decode, self._backend.restore
            )
        except BaseException:
            self._backend.close()
            raise
        self._log = get_logger(spool=self.path)
        self._registry: dict[str, Registered] = {}
        self._shape = (workers, batch_size, batch_interval, sink_timeout)
        self._build()
        self._state = "new"
        self._accepting = True
        self._revive = False  # a forked child's copy of a running spool: start at first put
        watch_exit(self)

    def _build(self) -> None:
        """The in-process parts: counters, consumer pool, supervisor (again after a fork)."""
        workers, batch_size, batch_interval, sink_timeout = self._shape
        self._state_lock = threading.Lock()
        self._revive_lock = threading.Lock()
        self._counters = Counters()
        self._drops = Drops(
            self._counters, self._clock, self._log, self._when_full, self._max_bytes
        )
        self._pool = Pool(
            self._backend,
            take=screened(self._backend, self._dead, self._counters, self._log),
            sink=self._write,
            dead=self._dead,
            registry=self._registry,
            retry=self._retry,
            counters=self._counters,
            clock=self._clock,
            batch_size=batch_size,
            batch_interval=batch_interval,
            log=self._log,
            workers=workers,
        )
        self._supervisor = Supervisor(
            self._pool,
            sink_timeout=sink_timeout,
            counters=self._counters,
            clock=self._clock,
            log=self._log,
            record_ids=self._backend.record_ids,
        )

    def _after_fork_child(self) -> None:
        """In a forked child: fresh locks, pool and counters; no worker runs here yet.

        The backend's lanes and the dead letters let go of the parent's files and locks by
        themselves.
        A running spool starts the child's workers at its first put; a sink with an
        ``after_fork()`` method is told, so that it drops connections shared with the parent.
        """
        self._build()
        after_fork_in_child_of(self._sink)
        if self._state == "running":
            self._state = "new"
            self._revive = True
            self._accepting = False

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the sink (its ``open()``, if any) and start the workers. Idempotent.

        Raises:
            ClosedError: the spool was stopped.
        """
        with self._state_lock:
            if self._state == "running":
                return
            if self._state != "new":
                raise ClosedError(f"spool at {self.path!r} was stopped; create a new Spool")
            self._pool.open_sink(self._sink)  # an async open() is awaited on the pool's loop
            if self.consume:
                self._supervisor.start()
            self._state = "running"
            running(self, True)
        self._log.info("spool_started", backlog=self._backend.backlog())

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record in the spool now has been delivered or dead-lettered.

        "Now" includes the backlog recovered from disk and records in flight; records put
        after the call are not waited for (though a few may be, harmlessly). Costs nothing
        to the producers. With the disk lanes, decided by counting the records each lane
        hands out, never by their timestamps: a wall clock stepped back does not end it early.
        A Redis or NATS backend waits until every entry stored before the call is
        acknowledged (a sequence mark, not a timestamp either).

        Args:
            timeout: the most seconds to wait; None waits as long as it takes.

        Returns:
            True once they all were; False on timeout (or when the spool is not running and
            records are waiting). A producer-only spool (``consume=False``) delivers nothing
            itself: it hands its lane to a consuming process if one runs, and returns whether
            it did.
        """
        if not self.consume:
            return self._backend.hand_over()
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        return self._pool.wait_settled(deadline)

    def stop(self, drain: bool = True, timeout: float = _STOP_TIMEOUT) -> bool:
        """Stop: refuse new records, finish in-flight batches, persist, release the directory.

        Args:
            drain: first deliver what is waiting (like :meth:`flush`) within ``timeout``.
            timeout: the most seconds for draining and for in-flight batches. A backoff in
                progress is cut short (its batch stays in the spool); a sink call still
                running at the end is abandoned and its batch delivered again next time.

        Returns:
            True if everything that had to be finished was; False if the timeout cut it short
            (a sink that hangs past the timeout: stop returns at the timeout all the same;
            the ``spool_stopped`` log event's ``reason`` says what was left). Either way
            nothing is lost: what was not delivered stays on disk. A spool whose store a
            newer instance on the same path in this process took over (a ``Queue`` or
            another ``Spool`` with the same backend directory) has nothing left to finish:
            that instance delivers the records now; stop releases the rest and returns True
            (logged as ``taken_over=True``), never raising ``ClosedError``.
        """
        with self._state_lock:
            if self._state == "stopped":
                return True
            was_running = self._state == "running"
            self._state = "stopped"
            self._accepting = False
            self._revive = False
        running(self, False)
        deadline = time.monotonic() + timeout
        closed = self._backend.closed_under()
        taken = "taken over" in closed
        clean = not closed or taken  # closed under it otherwise: its records wait on disk
        if was_running and drain and not closed:
            clean = self.flush(timeout)
        self._supervisor.stop()
        # closed under it: nothing can be acknowledged any more, hand back what workers hold
        if not self._pool.stop(deadline, hand_back=bool(closed)):
            clean = clean and bool(closed)
        left = 0 if taken else _backlog(self._backend)  # a closed queue still answers
        try:
            self._backend.close()  # wakes the workers waiting for records
        finally:
            self._pool.join(deadline)
            try:
                self._pool.close_sink(self._sink, opened=was_running)  # then its loop ends
            finally:
                self._dead.close()
        self._stopped_log(clean, closed, left, self._pool.calls_abandoned, timeout)
        return clean

    def _stopped_log(
        self, clean: bool, closed: str, left: int, abandoned: int, timeout: float
    ) -> None:
        """Log ``spool_stopped``, with the reason when it did not finish."""
        if "taken over" in closed:
            self._log.info("spool_stopped", clean=clean, taken_over=True)
            return
        if clean:
            self._log.info("spool_stopped", clean=True)
            return
        if closed:
            why = f"its store was {closed} before stop()"
        elif self._pool.cut.is_set():
            why = "cut short by a second Ctrl-C"
        else:
            why = f"the {timeout:g} s timeout passed"
        reason = f"{why}: {left} records not delivered stay on disk"
        if abandoned:
            reason += f"; {abandoned} sink calls still running were abandoned"
        self._log.info("spool_stopped", clean=False, reason=reason, backlog=left)

    def __enter__(self) -> Spool:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        """``stop()``. After a Ctrl-C with records waiting, a warning says the drain may take
        up to the stop timeout and that a second Ctrl-C stops at once (nothing is lost: what
        was not delivered stays on disk); the second one ends the drain without a traceback
        of its own."""
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            interrupted_stop(self, _STOP_TIMEOUT)
        else:
            self.stop(timeout=_STOP_TIMEOUT)

    # -- asyncio -------------------------------------------------------------------------------

    async def __aenter__(self) -> Spool:
        """``start()`` on a thread: opening a sink may connect, which must not block the loop."""
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        """``await astop()`` with the same timeout as a ``with`` block's end."""
        await self.astop(timeout=_STOP_TIMEOUT)

    async def aput(self, item: Any, *, durable: bool = False, timeout: float | None = None) -> None:
        """Store ``item``, like :meth:`put`, without blocking the event loop on a wait.

        When the put costs only memory (the disk lanes, room in the spool or no ``max_bytes``,
        ``fsync`` not ``"always"``, not ``durable``) it runs right here on the loop: that costs
        less than handing it to a thread. A wait for room, an fsync, or a network backend
        runs on a thread of the spool's own; the loop goes on meanwhile.

        Cancellation never loses or duplicates a record silently: a cancelled ``aput`` raises
        :class:`~spoolkit.errors.PutCancelled`, an ``asyncio.CancelledError`` whose
        ``stored`` attribute says whether the record was stored (it will be delivered) or not
        (putting it again does not duplicate it). A wait for room gives up within 50 ms of
        the cancellation; an fsync under way is waited for.

        Args:
            item: any object the serializer accepts.
            durable: return only once the record is fsynced, whatever ``fsync`` says.
            timeout: with ``when_full="block"``, the most seconds to wait for room.

        Raises:
            as :meth:`put`; and ``PutCancelled`` when cancelled.
        """
        await _async.aput(self, item, durable, timeout)

    async def aput_many(self, items: Iterable[Any]) -> None:
        """Store every item, in order, like :meth:`put_many`, without blocking the loop on a
        wait (see :meth:`aput`).

        Without ``max_bytes`` (and ``fsync`` not ``"always"``) it is :meth:`put_many` on the
        loop. Otherwise the items go in on a thread; a cancelled call raises ``PutCancelled``
        whose ``stored`` is how many items, from the first, were stored (the rest were not).

        Raises:
            as :meth:`put_many`; and ``PutCancelled`` when cancelled.
        """
        await _async.aput_many(self, items if isinstance(items, Sequence) else list(items))

    async def aflush(self, timeout: float | None = None) -> bool:
        """:meth:`flush` on a thread: the loop goes on while the records are delivered.

        Cancelling it stops the waiting only (delivery goes on); its thread ends at
        ``timeout``, or once the records are delivered or the spool stopped.
        """
        return await asyncio.to_thread(self.flush, timeout)

    async def astop(self, drain: bool = True, timeout: float = _STOP_TIMEOUT) -> bool:
        """:meth:`stop` on a thread, which the loop does not wait on.

        Cancelling it does not cancel the stop: the spool stops all the same (its thread
        finishes the job within ``timeout``).
        """
        return await asyncio.to_thread(self.stop, drain, timeout)

    # -- putting -------------------------------------------------------------------------------

    def put(self, item: Any, *, timeout: float | None = None) -> None:
        """Store ``item`` for the sink. Costs one queue put, whatever the sink is doing.

        Args:
            item: any object the serializer accepts.
            timeout: with ``when_full="block"``, the most seconds to wait for room.

        Raises:
            SpoolFull: no room (``when_full="raise"``, or ``"block"`` after ``timeout``).
            SerializationError: ``item`` cannot be serialized; nothing was stored.
            ClosedError: the spool was stopped.
        """
        if not self._accepting:
            self._refused()
        mode = self._when_full
        try:
            self._backend.put(item, block=mode == "block", timeout=timeout)
        except Full:
            if mode in ("block", "raise"):
                raise self._full() from None
            if not self._make_room(item):
                return
        else:
            if self._drops.dropping:
                self._drops.stored()

    def putter(self, timeout: float | None = None) -> Callable[[Any], None]:
        """``put(item, timeout=timeout)`` prepared once, for producers that put on every call
        (:class:`~spoolkit.SpoolHandler`, :class:`~spoolkit.SpoolProcessor`): the same
        outcomes as :meth:`put`.

        Without a drop policy, it calls the backend's prepared put
        (:meth:`~spoolkit.backends.Backend.putter`: for the disk lanes, the lane queue's own
        ``put``) behind the stopped-spool check, and falls back to :meth:`put` when that no
        longer applies (the spool stopped, a forked child's first put, a lane handed over).
        """
        mode = self._when_full
        if mode not in ("block", "raise"):
            return functools.partial(self.put, timeout=timeout)
        backend, block = self._backend, mode == "block"
        store = backend.putter(block=block, timeout=timeout)

        def put(item: Any) -> None:
            nonlocal store
            try:
                if not self._accepting:
                    raise ClosedError
                store(item)
            except Full:
                raise self._full() from None
            except ClosedError:
                self.put(item, timeout=timeout)  # put knows what to do: start, raise, retry
                store = backend.putter(block=block, timeout=timeout)

        return put

    @property
    def serializer_name(self) -> str:
        """The serializer records are stored with: ``"pickle"``, ``"json"``, ``"raw"``, or
        ``"custom"`` for a serializer object (a producer hands a JSON spool JSON text as is)."""
        return self._serializer_name

    @property
    def cheap_puts(self) -> bool:
        """Whether a :meth:`put` only copies into memory and the page cache (the disk lanes
        without ``fsync="always"``): asyncio code may then call it on its event loop."""
        return self._backend.cheap_puts

    def _refused(self) -> None:
        """A put while not accepting: start a forked child's copy, else raise ClosedError."""
        if self._revive:
            with self._revive_lock:
                if self._revive:
                    self.start()
                    self._accepting = True
                    self._revive = False
        if not self._accepting:
            raise self._stopped()

    def _stopped(self) -> ClosedError:
        return ClosedError(f"spool at {self.path!r} was stopped")

    def _full(self) -> SpoolFull:
        return SpoolFull(f"spool at {self.path!r} is at max_bytes")

    def _make_room(self, item: Any) -> bool:
        """Apply a drop policy; True if ``item`` was stored in the end."""
        if self._when_full == "drop_oldest":
            while self._backend.drop_oldest():
                self._drops.dropped(1)
                try:
                    self._backend.put(item, block=False, timeout=None)
                except Full:
                    continue
                return True
        self._drops.dropped(1)
        return False

    def put_many(self, items: Iterable[Any]) -> None:
        """Store every item, in order, at the cost of one copy per chunk.

        With ``when_full="block"`` (or no ``max_bytes``) every item is serialized first: if
        one cannot be, none is stored. With another ``when_full`` and a ``max_bytes``, the
        items go in one by one as with :meth:`put`.

        Raises:
            as :meth:`put`.
        """
        if not self._accepting:
            self._refused()
        items = items if isinstance(items, Sequence) else list(items)
        if self._when_full == "block" or self._max_bytes is None:
            self._backend.put_many(items)
            return
        for item in items:
            self.put(item)

    # -- decorators ----------------------------------------------------------------------------

    def producer(self, func: Callable[P, R]) -> Callable[P, R]:
        """Decorator: what ``func`` returns (or yields, for a generator) is also put here.

        ``None`` is not put. Works on methods, generator functions and ``async def``
        functions; callers get the same values as without the decorator.
        """
        return _producer(self.put, func)

    @overload
    def deferred(self, func: Callable[P, Any], /) -> DeferredFunction[P]: ...

    @overload
    def deferred(
        self,
        *,
        name: str | None = None,
        retry: RetryPolicy | tenacity.Retrying | None = None,
    ) -> _DeferredDecorator: ...

    def deferred(
        self,
        func: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        retry: RetryPolicy | tenacity.Retrying | None = None,
    ) -> Any:
        """Decorator: calling the function stores the call; the workers run it later.

        The call (registered name and arguments) is stored durably and a
        :class:`~spoolkit.DeferredHandle` is returned at once. Workers run the real function
        with ``retry`` (default: the spool's) and dead-letter it like a batch when it keeps
        failing, even after a restart, as long as the function is registered again (under the
        same name) before :meth:`start`.

        Args:
            func: the function (when used as ``@spool.deferred`` without arguments).
            name: the name it is stored under; default ``module.qualname``.
            retry: its retry policy.

        Raises:
            ConfigError: ``name`` is already registered to another function.
        """

        if retry is not None:
            to_retrying(retry, time.sleep)  # a ConfigError now rather than in a worker

        def register(f: Callable[..., Any]) -> DeferredFunction[Any]:
            return register_deferred(self._registry, f, name, retry, self._defer)

        return register(func) if func is not None else register

    def _defer(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> DeferredHandle:
        if not self._accepting:
            self._refused()
        item = to_item(DeferredCall(name, args, kwargs), self._serializer_name)
        try:
            rid = self._backend.put_durable(item, block=self._when_full != "raise", timeout=None)
        except Full:
            raise self._full() from None
        return DeferredHandle(rid, name)

    # -- state ---------------------------------------------------------------------------------

    def lanes_held(self) -> list[str]:
        """The lane directories this process holds on the spool: its own first, then those it
        adopted (``[]`` for a backend without lanes, or in a forked child before its first
        put)."""
        return self._backend.lanes_held()

    @property
    def dead_letters(self) -> DeadLetters:
        """The dead-letter store: ``list()``, ``requeue(ids)``, ``purge(ids)``, ``len()``."""
        return self._dead

    def stats(self) -> SpoolStats:
        """A snapshot of the counters and gauges (cheap: no disk access)."""
        return snapshot(self._counters, self._backend, self._dead.bytes_used(), self._pool)

    def __repr__(self) -> str:
        return f"<spoolkit.Spool path={self.path!r} state={self._state}>"


def _check(
    workers: int,
    batch_size: int,
    batch_interval: float,
    when_full: str,
    sink_timeout: float | None,
) -> None:
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    if batch_interval < 0:
        raise ConfigError(f"batch_interval must be >= 0 seconds, got {batch_interval!r}")
    if when_full not in _WHEN_FULL:
        raise ConfigError(f"when_full must be one of {_WHEN_FULL}, got {when_full!r}")
    if sink_timeout is not None and sink_timeout <= 0:
        raise ConfigError(f"sink_timeout must be > 0 seconds or None, got {sink_timeout!r}")


def _backlog(backend: Backend[Any]) -> int:
    try:
        return backend.backlog()
    except ClosedError:
        return 0


def _as_write(sink: Any) -> Callable[[Sequence[Record]], None]:
    if sink is None:

        def no_sink(batch: Sequence[Record]) -> None:
            raise PermanentError("this spool has no sink: data records cannot be delivered")

        return no_sink
    write = getattr(sink, "write", None)
    if callable(write):
        return write  # type: ignore[no-any-return]
    if callable(sink):
        return sink  # type: ignore[no-any-return]
    raise ConfigError(f"sink {sink!r} has no write(batch) method and is not callable")
