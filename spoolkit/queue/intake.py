"""The put side of a queue: encoded records stored under the lock, a getter woken, an fsync.

The queue's facade serializes items and calls here with their payloads (``Queue.put``,
``put_many``, ``put_payload``, ``restore``); :mod:`spoolkit.queue.handout` is the other side,
what is handed out and acknowledged. Every method takes the store's lock itself and fsyncs
(group commit, shared with concurrent callers) after releasing it.
"""

from __future__ import annotations

import time

from spoolkit.errors import RecordTooLargeError
from spoolkit.queue.ioerrors import NOT_STORED, NOT_SYNCED, storage_error
from spoolkit.queue.store import Store
from spoolkit.queue.waits import Waits

__all__ = ["Intake"]

_now = time.time


class Intake:
    """Stores the encoded records of one queue instance.

    Attributes:
        first_seq: the sequence number the next record had when the queue was opened.
    """

    __slots__ = ("_always", "_bounded", "_lock", "_not_empty", "_store", "_waits", "first_seq")

    def __init__(self, store: Store, waits: Waits, *, always: bool) -> None:
        self._store = store
        self._waits = waits
        self._lock = store.lock
        self._not_empty = store.not_empty
        self._bounded = waits.bounded  # fixed for the queue's life: read on every put
        self._always = always
        self.first_seq = store.next_id

    @property
    def puts(self) -> int:
        """Records stored since the queue was opened, not counting :meth:`restore`."""
        return self._store.next_id - self.first_seq

    def put(self, payload: bytes, block: bool, timeout: float | None, durable: bool) -> int:
        """Store ``payload`` at the tail, waiting for room if bounded; return its sequence number.

        Raises:
            as ``Queue.put``.
        """
        store = self._store
        waits = self._waits
        lock = self._lock
        sync = durable or self._always
        gen = 0
        lock.acquire()  # not `with`: the per-record path of every put
        try:
            if store.closed:
                store.check_open()
            if self._bounded:
                waits.wait_for_room(len(payload), block, timeout)
            try:
                seq = store.append(payload, None, _now())
            except OSError as exc:
                raise storage_error(exc, store.path, "cannot store the record", NOT_STORED) from exc
            if sync:
                gen = store.generation()
            if waits.getters:
                self._not_empty.notify()
        finally:
            lock.release()
        if sync:
            self.sync(gen, "the record's fsync failed")
        return seq

    def put_many(self, payloads: list[bytes], durable: bool) -> None:
        """Store ``payloads`` in order: one copy per chunk, or one by one when bounded.

        Raises:
            as ``Queue.put_many``.
        """
        if not payloads:
            return
        store = self._store
        # refused before anything is stored, as put would refuse it
        longest = max(map(len, payloads))
        if longest > store.max_record_bytes:
            raise RecordTooLargeError(longest, store.max_record_bytes)
        self._waits.check_size(longest)
        stored = 0
        try:
            if self._bounded:
                for p in payloads:
                    with self._lock:
                        store.check_open()
                        self._waits.wait_for_room(len(p), True, None)
                        store.append(p, None, _now())
                        stored += 1
                        self._not_empty.notify()
            else:
                with self._lock:
                    store.check_open()
                    first = store.next_id
                    try:
                        store.append_many(payloads, _now())
                    finally:
                        stored = store.next_id - first
                        if stored:
                            self._not_empty.notify_all()
        except OSError as exc:
            outcome = f"the first {stored} of {len(payloads)} items were stored, the rest not"
            raise storage_error(
                exc, store.path, "cannot store the items", outcome, stored=stored
            ) from exc
        if durable or self._always:
            self.sync(None, "the items' fsync failed")

    def restore(self, payload: bytes, seq: int, enqueued_at: float) -> None:
        """Store ``payload`` again under ``seq`` and ``enqueued_at``, ignoring the bounds, and
        fsync it.

        Raises:
            as ``Queue.restore``.
        """
        store = self._store
        with self._lock:
            store.check_open()
            try:
                store.append(payload, seq, enqueued_at)
            except OSError as exc:
                raise storage_error(exc, store.path, "cannot store the record", NOT_STORED) from exc
            self._not_empty.notify()
        self.sync(None, "the record's fsync failed")

    def sync(self, gen: int | None, doing: str, outcome: str = NOT_SYNCED) -> None:
        """fsync through generation ``gen`` (None: everything), raising a typed error.

        Raises:
            StorageError: the fsync failed; ``doing`` and ``outcome`` say what of it.
        """
        try:
            self._store.durability.sync(gen)
        except OSError as exc:
            raise storage_error(exc, self._store.path, doing, outcome) from exc
