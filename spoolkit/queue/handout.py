"""What a queue has handed out and not yet had acknowledged: deliveries, by record position.

The queue's facade holds its lock around every call here. Reading records in bulk and
acknowledging them in runs per chunk live here, on the hot path of ``get_batch`` and ``ack``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from spoolkit.errors import ClosedError
from spoolkit.queue.framing import (
    ACK_OFFSET,
    DELIVERY_MASK,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    MAX_DELIVERIES,
    U32,
)
from spoolkit.queue.store import Store

__all__ = ["Delivery", "Handout"]

_unpack_header = FRAME_HEADER.unpack_from
_pack_word_into = U32.pack_into
_HEADER = FRAME_HEADER_SIZE
_MASK = DELIVERY_MASK
_get_ident = threading.get_ident


class Delivery:
    """One record handed out by :meth:`Queue.get_batch`, to :meth:`Queue.ack` or :meth:`Queue.nack`.

    Attributes:
        seq: the record's sequence number in its queue: unique there, the same on every
            delivery of the record (the number in :attr:`id`).
        item: the object that was put.
        enqueued_at: when it was put, in seconds since the epoch.
        deliveries: how many times the record has been handed out without being acknowledged,
            this time included, across restarts (counted on disk; at most 255). More than 1
            means a consumer took it before and died, stalled or handed it back.
    """

    __slots__ = ("_chunk", "_crc", "_off", "_store", "deliveries", "enqueued_at", "item", "seq")

    def __init__(  # noqa: PLR0917 - built on the hot path, positional on purpose
        self,
        store: Store,
        chunk: Any,
        off: int,
        crc: int,
        rid: int,
        t: float,
        item: Any,
        deliveries: int = 1,
    ) -> None:
        self._store = store
        self._chunk = chunk
        self._off = off
        self._crc = crc
        self.seq = rid
        self.enqueued_at = t
        self.item = item
        self.deliveries = deliveries

    @property
    def queue_uid(self) -> str:
        """The uid of the queue directory that handed it out: the first part of :attr:`id`."""
        return self._store.uid_hex

    @property
    def id(self) -> str:
        """The record's id, ``"<queue uid>-<seq>"``: the form :attr:`spoolkit.Record.id`, dead
        letters and the CLI use, unique across spool directories."""
        return f"{self._store.uid_hex}-{self.seq}"

    def __repr__(self) -> str:
        return (
            f"Delivery(id={self.id!r}, enqueued_at={self.enqueued_at}, item={self.item!r}, "
            f"deliveries={self.deliveries})"
        )


class Handout:
    """The deliveries of one queue instance not yet acknowledged, and who got which.

    Attributes:
        outstanding: deliveries by ``(chunk index, offset)``, oldest handed out first.
        undecodable: records skipped because the serializer could not read them back.
    """

    __slots__ = ("_handed", "_loads", "_log", "_store", "outstanding", "undecodable")

    def __init__(self, store: Store, loads: Callable[[bytes], Any], log: Any) -> None:
        self._store = store
        self._loads = loads
        self._log = log
        self.outstanding: dict[tuple[int, int], Delivery] = {}
        self._handed: dict[int, deque[tuple[int, int]]] = {}  # thread -> what get() gave it
        self.undecodable = 0

    def take_into(self, out: list[Delivery], max_items: int) -> None:
        """Append up to ``max_items`` deliveries to ``out``: redeliveries first, then in order.

        A record the serializer cannot read is skipped, logged and counted; it stays on disk
        and is delivered again after a restart.
        """
        store = self._store
        while len(out) < max_items:
            run = store.take_run(max_items - len(out))
            if run is None:
                return
            self._deliver(run[0], run[1], out)

    def take_one(self) -> Delivery | None:
        """The next delivery, as :meth:`take_into` would hand it out, or None: the path of
        ``get``, without a batch's run of offsets."""
        take = self._store.take_one
        out: list[Delivery] = []
        while not out:
            found = take()
            if found is None:
                return None
            self._deliver(found[0], found[1:], out)
        return out[0]

    def _deliver(self, chunk: Any, offs: Sequence[int], out: list[Delivery]) -> None:
        """Decode the records at ``offs`` of ``chunk``, count each hand-out on disk, remember
        them and append them to ``out``; skip (log and count) what cannot be decoded."""
        outstanding, loads, store = self.outstanding, self._loads, self._store
        mm, index = chunk.mm, chunk.index
        assert mm is not None  # a chunk with records handed out stays mapped
        for off in offs:
            _magic, n, rid, t, crc, word = _unpack_header(mm, off)
            body = off + _HEADER
            try:
                item = loads(mm[body : body + n])
            except Exception as exc:
                self.undecodable += 1
                self._log.error("record_undecodable", record_id=rid, error=repr(exc))
                continue
            # count the hand-out on disk (see framing.deliveries_in): one 4-byte store
            # handed out before (the high bits match): one more, saturating; else the first
            high, low = (crc ^ _MASK) & 0xFFFF_FF00, word & 0xFF
            count = low + (low < MAX_DELIVERIES) if (word & 0xFFFF_FF00) == high else 1
            _pack_word_into(mm, off + ACK_OFFSET, high | count)
            d = Delivery(store, chunk, off, crc, rid, t, item, count)
            outstanding[index, off] = d
            out.append(d)

    def got(self, d: Delivery) -> None:
        """Remember that ``get`` handed ``d`` to the calling thread (for ``task_done``)."""
        ident = _get_ident()
        handed = self._handed.get(ident)
        if handed is None:
            handed = self._handed[ident] = deque()
        handed.append((d._chunk.index, d._off))

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Mark deliveries acknowledged on disk, one run per chunk; repeats are ignored.

        Raises:
            ClosedError: a delivery came from another queue instance (the rest are acked).
        """
        store, outstanding = self._store, self.outstanding
        chunk: Any = None
        marks: list[tuple[int, int]] = []
        try:
            for d in deliveries:
                key = (d._chunk.index, d._off)
                if outstanding.get(key) is d:
                    del outstanding[key]
                    if d._chunk is not chunk:  # one ack_run per run of the same chunk
                        if marks:
                            store.ack_run(chunk, marks)
                        chunk, marks = d._chunk, []
                    marks.append((d._off, d._crc))
                elif d._store is not store:
                    self._foreign(d)
        finally:
            if marks:
                store.ack_run(chunk, marks)

    def nack(self, deliveries: Sequence[Delivery]) -> None:
        """Hand deliveries back to the store, to be taken again before newer records."""
        for d in deliveries:
            key = (d._chunk.index, d._off)
            if self.outstanding.get(key) is d:  # else acked already, or nacked and taken again
                del self.outstanding[key]
                self._store.nack(d._chunk, d._off)
            elif d._store is not self._store:
                self._foreign(d)

    def pop_for_task_done(self) -> Delivery:
        """The delivery ``task_done`` acknowledges: the oldest ``get`` gave this thread, else
        the oldest outstanding one.

        Raises:
            ValueError: nothing handed out is waiting for acknowledgement.
        """
        ident = _get_ident()
        handed = self._handed.get(ident)
        d = None
        while handed:
            d = self.outstanding.pop(handed.popleft(), None)
            if d is not None:
                break
        if handed is not None and not handed:
            del self._handed[ident]
        if d is None:
            if not self.outstanding:
                raise ValueError("task_done() called too many times")
            d = self.outstanding.pop(next(iter(self.outstanding)))
        return d

    def _foreign(self, d: Delivery) -> None:
        raise ClosedError(
            f"delivery {d.id} was handed out by another Queue instance on "
            f"{self._store.path!r}; it will be delivered again by this one"
        )
