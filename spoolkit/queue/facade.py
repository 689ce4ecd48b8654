"""``spoolkit.Queue``: the pqueue-compatible facade over the disk store."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable
from queue import Empty
from typing import Any

from spoolkit._internal.log import get_logger
from spoolkit.errors import ConfigError, SerializationError
from spoolkit.queue import aio as _async
from spoolkit.queue.handout import Delivery, Handout
from spoolkit.queue.intake import Intake
from spoolkit.queue.ioerrors import storage_error
from spoolkit.queue.opening import RecoveryReport
from spoolkit.queue.store import Store
from spoolkit.queue.waits import Waits
from spoolkit.serializers import resolve
from spoolkit.typing import Serializer

__all__ = ["Delivery", "Queue"]


def _unserializable(item: Any, exc: Exception) -> SerializationError:
    return SerializationError(
        f"cannot serialize {type(item).__name__} item: {exc}; the queue is unchanged"
    )


_ACK_NOT_SYNCED = (
    "the acknowledgement is recorded, but after a power loss the record may be delivered again"
)


class Queue:
    """A persistent FIFO queue on local disk with the API of ``queue.Queue`` and ``pqueue``.

    Records are checksummed frames in memory-mapped chunk files (``q00000``, ``q00001`` ...,
    ``chunksize`` records each). A record survives ``kill -9`` as soon as :meth:`put` returns,
    and a power loss once it is fsynced (see ``fsync``). Records handed out stay on disk until
    acknowledged (:meth:`ack`, or :meth:`task_done` for :meth:`get`); after any crash the ones
    not acknowledged are delivered again.

    One process owns a directory at a time (an OS lock, dropped if the process dies). Opening
    the same directory again in the same process takes it over: the older instance is closed.

    Args:
        path: the spool directory, created (mode 0700) if missing.
        maxsize: the most records waiting to be handed out; ``<= 0`` for no limit.
        chunksize: records per chunk file.
        tempdir: accepted for pqueue compatibility; must be on the same filesystem as
            ``path``. Metadata temp files go there.
        serializer: ``"pickle"`` (default), ``"json"``, ``"raw"`` or an object with
            ``dumps``/``loads``.
        fsync: ``"always"`` (fsync before put/ack returns; concurrent callers share one fsync),
            ``"interval"`` (default: a background fsync every ``fsync_interval`` seconds) or
            ``"never"``.
        fsync_interval: seconds between background fsyncs with ``fsync="interval"``.
        max_bytes: cap on the bytes of records on disk; :meth:`put` blocks or raises ``Full``.
        max_record_bytes: the largest encoded record accepted.
        lock_timeout: seconds to wait for another process to release the directory before
            :class:`~spoolkit.errors.LockedError`; 0 (the default) refuses at once.

    A Queue belongs to the process that opened it. In a child forked while it was open, the
    child's copy lets go of the parent's files (it never writes them) and its calls raise
    :class:`~spoolkit.errors.ClosedError` naming the parent; the parent's keeps working.
    Several processes share one directory through :class:`spoolkit.Spool`, whose lanes give
    each process a queue of its own (see the Deploying page).

    Raises:
        PathError: ``path`` is a file or not writable.
        LockedError: another process holds the directory.
        ConfigError: an invalid option.
        StorageError: the disk refused to open it (e.g. ``meta.json`` could not be written).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        maxsize: int = 0,
        chunksize: int = 100,
        tempdir: str | None = None,
        *,
        serializer: str | Serializer = "pickle",
        fsync: str = "interval",
        fsync_interval: float = 1.0,
        max_bytes: int | None = None,
        max_record_bytes: int = 64 << 20,
        lock_timeout: float = 0.0,
    ) -> None:
        name, self._serializer = resolve(serializer)
        if max_bytes is not None and max_bytes <= 0:
            raise ConfigError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}")
        try:
            self._store = store = Store(
                os.fspath(path),
                chunksize=chunksize,
                serializer_name=name,
                fsync=fsync,
                fsync_interval=fsync_interval,
                max_record_bytes=max_record_bytes,
                tempdir=tempdir,
                lock_timeout=lock_timeout,
            )
        except OSError as exc:
            where = os.path.abspath(os.fspath(path))
            raise storage_error(exc, where, "cannot open", "nothing was changed") from exc
        self._finalizer = weakref.finalize(self, store.close)
        self._waits = Waits(store, maxsize, max_bytes)
        self._bounded = self._waits.bounded  # fixed for the queue's life: read on every get
        self._always = fsync == "always"
        self._intake = Intake(store, self._waits, always=self._always)
        self._put = self._intake.put
        # bound once: for "pickle" these are the builtins themselves (see PickleSerializer)
        self._dumps: Callable[[Any], bytes] = self._serializer.dumps
        self._loads: Callable[[bytes], Any] = self._serializer.loads
        self._lock = store.lock
        self._not_empty = store.not_empty
        self._not_full = store.not_full
        self._all_done = store.all_done
        self._log = get_logger(path=store.path)
        self._handout = Handout(store, self._loads, self._log)
        self._outstanding = self._handout.outstanding

    # -- properties ----------------------------------------------------------------------------

    @property
    def maxsize(self) -> int:
        """The most records waiting to be handed out; ``<= 0`` for no limit."""
        return self._waits.maxsize

    @property
    def max_bytes(self) -> int | None:
        """The cap on the bytes of records on disk, or None."""
        return self._waits.max_bytes

    @property
    def path(self) -> str:
        """The spool directory (absolute, symlinks resolved)."""
        return self._store.path

    @property
    def chunksize(self) -> int:
        """Records per chunk file."""
        return self._store.chunksize

    @property
    def uid(self) -> str:
        """A random id of this spool directory, fixed at creation (32 hex digits)."""
        return self._store.uid_hex

    @property
    def unfinished_tasks(self) -> int:
        """Records put and not yet acknowledged (waiting plus handed out)."""
        return self._store.pending_total + len(self._outstanding)

    @property
    def bytes_used(self) -> int:
        """Bytes of record frames in the chunk files still on disk."""
        return self._store.bytes_used

    @property
    def closed(self) -> bool:
        """Whether this instance was closed or taken over."""
        return self._store.closed

    @property
    def closed_reason(self) -> str:
        """Why this instance was closed, as its ``ClosedError`` says it: ``"closed"`` by
        :meth:`close`, else e.g. taken over by a newer instance, or its process forked;
        ``""`` while open."""
        return self._store.closed_reason

    @property
    def fsync(self) -> str:
        """When records and acknowledgements are fsynced: ``"always"``, ``"interval"`` or
        ``"never"``."""
        return self._store.fsync

    @property
    def serializer(self) -> Serializer:
        """The serializer items are stored with (an object with ``dumps``/``loads``)."""
        return self._serializer

    @property
    def puts(self) -> int:
        """Records this instance stored since it was opened (:meth:`restore` not counted)."""
        return self._intake.puts

    @property
    def undecodable(self) -> int:
        """Records skipped because the serializer could not read them (they stay on disk)."""
        return self._handout.undecodable

    @property
    def fsync_errors(self) -> int:
        """Background fsyncs (``fsync="interval"``) that failed; each is logged and retried."""
        return self._store.durability.errors

    @property
    def recovery(self) -> RecoveryReport:
        """What opening found: ``.pending`` (records waiting), ``.damaged_regions`` and
        ``.damaged_bytes`` (damage skipped), ``.skipped_chunks`` (chunk files unreadable),
        ``.lost`` (ranges of record numbers written and gone: a chunk file cut, emptied,
        deleted or damaged), ``.lost_records`` (how many) and ``.lost_ids()`` (each range as
        the ids a user sees, ``<uid>-<n>``, with where and why)."""
        return self._store.report

    # -- putting -------------------------------------------------------------------------------

    def encode(self, item: Any) -> bytes:
        """``item`` serialized as :meth:`put` stores it.

        Raises:
            SerializationError: the serializer refused it.
        """
        try:
            return self._dumps(item)
        except Exception as exc:
            raise _unserializable(item, exc) from exc

    def decode(self, payload: bytes) -> Any:
        """The item a payload from :meth:`encode` holds."""
        return self._loads(payload)

    def put(
        self, item: Any, block: bool = True, timeout: float | None = None, *, durable: bool = False
    ) -> None:
        """Put ``item`` at the tail of the queue.

        Costs one memory copy into the page cache; with ``fsync="always"`` or ``durable=True``
        also an fsync, shared with concurrent callers (group commit).

        Args:
            item: any object the serializer accepts.
            block: wait for room when the queue is full (``maxsize``/``max_bytes``).
            timeout: the most seconds to wait; ``None`` waits as long as it takes.
            durable: return only once this record is fsynced, whatever ``fsync`` says.

        Raises:
            SerializationError: ``item`` cannot be serialized; nothing was stored.
            RecordTooLargeError: the encoded item is over ``max_record_bytes``.
            Full: no room within ``timeout`` (or at once when ``block`` is false).
            ValueError: ``timeout`` is negative.
            DiskFullError: the disk refused the space (``ENOSPC``); the queue is unchanged.
            StorageError: another I/O error. If the fsync failed, the record is stored (and
                will be delivered) but may not survive a power loss; the message says which.
        """
        try:  # encode, inlined: the hottest path of the library
            payload = self._dumps(item)
        except Exception as exc:
            raise _unserializable(item, exc) from exc
        self._put(payload, block, timeout, durable)

    def putter(self, block: bool = True, timeout: float | None = None) -> Callable[[Any], None]:
        """``put(item, block, timeout)`` prepared once, for a producer that puts on every call
        (through a Spool's disk lanes, :class:`~spoolkit.SpoolHandler` does): the same
        outcomes as :meth:`put`, one call fewer per record."""
        dumps, store = self._dumps, self._put

        def put(item: Any) -> None:
            try:
                payload = dumps(item)
            except Exception as exc:
                raise _unserializable(item, exc) from exc
            store(payload, block, timeout, False)

        return put

    def put_payload(
        self,
        payload: bytes,
        block: bool = True,
        timeout: float | None = None,
        *,
        durable: bool = False,
    ) -> int:
        """Put an item already serialized by :meth:`encode`; return its sequence number.

        For layers that serialize first (a backend needing the record's id, a dead-letter
        store): the same wait, cost and errors as :meth:`put`, but for ``SerializationError``.

        Returns:
            The record's :attr:`Delivery.seq`, the number in its id ``"<uid>-<seq>"``.
        """
        return self._put(payload, block, timeout, durable)

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``."""
        self.put(item, False)

    def put_many(self, items: Iterable[Any], *, durable: bool = False) -> None:
        """Put every item of ``items`` in order, at the cost of one copy per chunk.

        Every item is serialized before anything is stored: if one cannot be, nothing is.
        On a bounded queue the items go in one by one, waiting for room as :meth:`put` does.

        Raises:
            DiskFullError: the disk refused the space; ``.stored`` items (the first ones) were
                stored, the rest were not.
            StorageError: another I/O error (``.stored`` as above), or a failed fsync.
        """
        items = list(items)
        try:
            payloads = list(map(self._dumps, items))
        except Exception:  # find the culprit and raise the typed error for it
            payloads = [self.encode(item) for item in items]
        self._intake.put_many(payloads, durable)

    def restore(self, payload: bytes, seq: int, enqueued_at: float) -> None:
        """Store a record again under its old sequence number and time, and fsync it.

        For a dead-letter requeue: the record keeps its id (``"<uid>-<seq>"``) and its age.
        It goes in whatever the bounds say, at the tail.

        Raises:
            RecordTooLargeError: ``payload`` is over ``max_record_bytes``.
            StorageError: as :meth:`put` with ``durable=True``.
        """
        self._intake.restore(payload, seq, enqueued_at)

    # -- getting -------------------------------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the item at the head of the queue.

        The record stays on disk until :meth:`task_done` acknowledges it; if the process dies
        first, it is delivered again.

        Raises:
            Empty: nothing arrived within ``timeout`` (or at once when ``block`` is false).
            ValueError: ``timeout`` is negative.
        """
        store = self._store
        lock = self._lock
        lock.acquire()  # not `with`: a per-record path, as Intake.put
        try:
            if store.closed:
                store.check_open()
            d = None
            if timeout is None and store.pending_total:  # nothing to wait for or to check
                d = self._handout.take_one()
            while d is None:
                if not self._waits.wait_for_records(block, timeout):
                    raise Empty
                d = self._handout.take_one()
            self._handout.got(d)
            if self._bounded:
                self._not_full.notify()
            return d.item
        finally:
            lock.release()

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(False)

    def get_batch(self, max_items: int, timeout: float | None = None) -> list[Delivery]:
        """Take up to ``max_items`` records, waiting up to ``timeout`` for the first one.

        Returns at once with what is there once one record is; returns ``[]`` if nothing
        arrived in time (``timeout=0`` never waits, ``None`` waits as long as it takes).
        Acknowledge each with :meth:`ack`, or hand it back with :meth:`nack`.
        """
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items!r}")
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        out: list[Delivery] = []
        with self._lock:
            self._store.check_open()
            block = timeout is None or timeout > 0
            if not self._waits.wait_for_records(block, timeout):
                return out
            self._handout.take_into(out, max_items)
            if self._bounded and out:
                self._not_full.notify_all()
        return out

    def wait_for_records(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: as long as it takes) until a record waits to
        be handed out, taking none; False if none came in time.

        Raises:
            ClosedError: the queue is closed, or was closed meanwhile.
            ValueError: ``timeout`` is negative.
        """
        with self._lock:
            self._store.check_open()
            return self._waits.wait_for_records(True, timeout)

    # -- acknowledging -------------------------------------------------------------------------

    def ack(self, *deliveries: Delivery) -> None:
        """Acknowledge deliveries: their records leave the disk (once their chunk is done).

        Acknowledging twice is harmless. With ``fsync="always"`` the acknowledgement is fsynced
        before this returns.
        """
        store = self._store
        with self._lock:
            store.check_open()
            try:
                self._handout.ack(deliveries)
            finally:
                self._after_ack()
            gen = store.generation()
        if self._always:
            self._intake.sync(gen, "the acknowledgement's fsync failed", _ACK_NOT_SYNCED)

    def _after_ack(self) -> None:
        if self._bounded:
            self._not_full.notify_all()
        if not self._outstanding and not self._store.pending_total:
            self._all_done.notify_all()

    def nack(self, *deliveries: Delivery) -> None:
        """Hand deliveries back: they are delivered again, before newer records."""
        store = self._store
        with self._lock:
            store.check_open()
            try:
                self._handout.nack(deliveries)
            finally:
                self._not_empty.notify(len(deliveries))

    def task_done(self) -> None:
        """Acknowledge the oldest item :meth:`get` handed to this thread (else the oldest one).

        Raises:
            ValueError: nothing handed out is waiting for acknowledgement.
        """
        store = self._store
        lock = self._lock
        lock.acquire()  # not `with`: a per-record path, as Intake.put
        try:
            if store.closed:
                store.check_open()
            d = self._handout.pop_for_task_done()
            store.ack(d._chunk, d._off, d._crc)
            self._after_ack()
            gen = store.generation()
        finally:
            lock.release()
        if self._always:
            self._intake.sync(gen, "the acknowledgement's fsync failed", _ACK_NOT_SYNCED)

    def join(self) -> None:
        """Block until every record put has been acknowledged."""
        with self._lock:
            while self._outstanding or self._store.pending_total:
                self._store.check_open()
                self._all_done.wait()

    # -- asyncio -------------------------------------------------------------------------------

    async def aput(self, item: Any, *, durable: bool = False, timeout: float | None = None) -> None:
        """:meth:`put` without blocking the event loop on a wait for room or an fsync.

        With room (or no bound), no ``fsync="always"`` and not ``durable``, the put runs on the
        loop (it costs only memory); otherwise on a thread of the queue's own. A cancelled call
        raises :class:`~spoolkit.errors.PutCancelled` (an ``asyncio.CancelledError``) whose
        ``stored`` says whether the record was stored.

        Raises:
            as :meth:`put` (``Full`` once ``timeout`` passed); ``PutCancelled`` when cancelled.
        """
        await _async.queue_aput(self, item, durable, timeout)

    async def aget_batch(self, max_items: int, timeout: float | None = None) -> list[Delivery]:
        """:meth:`get_batch` without blocking the event loop: the wait runs on a thread.

        Records that are there already are taken on the loop. If the call is cancelled, records
        its thread took meanwhile are handed back (:meth:`nack`): none is lost, and each is
        delivered again. Records returned stay on disk until :meth:`aack` (at least once:
        a consumer cancelled before acknowledging gets them again after a restart, or at
        once if it calls :meth:`anack`).
        """
        return await _async.aget_batch(self, max_items, timeout)

    async def aack(self, *deliveries: Delivery) -> None:
        """:meth:`ack`; with ``fsync="always"`` the fsync runs on a thread, off the loop.

        Cancelled while its fsync runs, it has acknowledged (it raises ``CancelledError``
        all the same); cancelled before its thread started, it has not (the records are
        delivered again after a restart).
        """
        await _async.aack(self, deliveries)

    async def anack(self, *deliveries: Delivery) -> None:
        """:meth:`nack` (memory only: it runs on the loop)."""
        self.nack(*deliveries)

    # -- state ---------------------------------------------------------------------------------

    def qsize(self) -> int:
        """Records waiting to be handed out (not counting those handed out, unacknowledged).

        After :meth:`close`, ``qsize``, :meth:`empty` and :meth:`full` keep answering for what
        the queue held when it closed (as the stdlib's do), rather than raising.
        """
        return self._store.pending_total

    def empty(self) -> bool:
        """``qsize() == 0``."""
        return self._store.pending_total == 0

    def full(self) -> bool:
        """Whether :meth:`put` would have to wait."""
        with self._lock:
            return self._bounded and self._waits.full(0)

    def oldest_enqueued_at(self) -> float | None:
        """When the oldest record waiting to be handed out was put, or None if none waits."""
        with self._lock:
            self._store.check_open()
            return self._store.peek_time()

    def sync(self) -> None:
        """fsync everything stored so far, and remove fully acknowledged chunk files now.

        With ``fsync="interval"`` both otherwise happen in the background every
        ``fsync_interval`` seconds.

        Raises:
            ClosedError: the queue was closed (closing already fsynced, unless
                ``fsync="never"``).
            StorageError: the fsync failed; what was stored stays stored (and is fsynced again
                by the next sync).
        """
        with self._lock:
            self._store.check_open()
        self._store.durability.unlink_deferred()
        self._intake.sync(None, "fsync failed", "records stay stored; the next sync tries again")

    def close(self) -> None:
        """Persist and release the directory. Later calls raise :class:`ClosedError`.

        Records handed out and not acknowledged are delivered again by the next instance.

        Raises:
            StorageError: the final fsync failed; the directory is released all the same and
                what was stored stays stored.
        """
        try:
            self._finalizer()
        except OSError as exc:
            raise storage_error(
                exc, self._store.path, "the final fsync failed", "records stay stored"
            ) from exc

    def leave_close_to_owner(self) -> None:
        """Do not close at interpreter exit: the owner (a spool, which first delivers what
        it can within its ``exit_timeout``) closes this queue itself. Otherwise an open queue
        is closed (and fsynced) by an exit hook that may run before the owner's."""
        self._finalizer.atexit = False

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<spoolkit.Queue path={self.path!r} qsize={self.qsize()}>"
