"""The default backend: :class:`spoolkit.Queue` on local disk.

Record ids are ``"<queue uid>-<record number>"``: the uid is fixed when the directory is
created and the number is the queue's own record id, kept across redeliveries, restarts and
dead-letter requeues.

A record handed out more than ``max_deliveries`` times without being acknowledged (the queue
counts hand-outs on disk, so crashes count) is dead-lettered instead of handed out again:
a record that kills its consumer every time cannot stall the spool in a crash loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import Any

from spoolkit._internal.log import get_logger
from spoolkit.backends.screen import screen
from spoolkit.deadletter import DeadLetters
from spoolkit.errors import ConfigError
from spoolkit.queue.facade import Delivery, Queue
from spoolkit.queue.framing import MAX_DELIVERIES
from spoolkit.typing import Serializer

__all__ = ["DiskBackend"]

_deliveries = attrgetter("deliveries")


class DiskBackend:
    """A :class:`~spoolkit.backends.Backend` over one :class:`spoolkit.Queue` directory.

    Args:
        path: the queue directory.
        serializer: as for :class:`spoolkit.Queue`.
        fsync: as for :class:`spoolkit.Queue`.
        max_bytes: cap on the bytes of records on disk.
        chunksize: records per chunk file.
        max_deliveries: hand-outs after which a record that was never acknowledged is
            dead-lettered (once dead letters are bound, as a :class:`~spoolkit.Spool` does)
            rather than handed out again; 1 to 254, or None to hand records out forever.

    Raises:
        ConfigError: an invalid option.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        serializer: str | Serializer = "pickle",
        fsync: str = "interval",
        max_bytes: int | None = None,
        chunksize: int = 1000,
        max_deliveries: int | None = 10,
    ) -> None:
        if max_deliveries is not None and (
            isinstance(max_deliveries, bool)
            or not isinstance(max_deliveries, int)
            or not 1 <= max_deliveries < MAX_DELIVERIES
        ):
            raise ConfigError(
                f"max_deliveries must be an int from 1 to {MAX_DELIVERIES - 1}, or None; "
                f"got {max_deliveries!r}"
            )
        self.queue = Queue(
            path, chunksize=chunksize, serializer=serializer, fsync=fsync, max_bytes=max_bytes
        )
        # closed by its Spool (or its caller), not by the queue's own exit hook: that one runs
        # before the spool's, which drains the queue within exit_timeout first
        self.queue._finalizer.atexit = False
        self.max_deliveries = max_deliveries
        self.dead_lettered = 0
        """Records this backend dead-lettered itself (over ``max_deliveries``)."""
        self._dead: DeadLetters | None = None
        self._log = get_logger(path=self.queue.path)
        self._prefix = self.queue.uid + "-"
        self._first_id = self.queue._store.next_id
        # the queue's own put has the same signature: no extra frame on the hottest path
        self.put = self.queue.put  # type: ignore[method-assign]

    @property
    def uid(self) -> str:
        """The queue directory's uid."""
        return self.queue.uid

    @property
    def path(self) -> str:
        """The queue directory."""
        return self.queue.path

    @property
    def puts(self) -> int:
        """Records stored since this backend was opened (not counting dead-letter requeues).

        Counted by the queue under the lock it takes for every put anyway, so a
        :class:`~spoolkit.Spool` need not count its puts itself.
        """
        return self.queue._store.next_id - self._first_id

    @property
    def undecodable(self) -> int:
        """Records skipped since the queue was opened because they could not be decoded."""
        return self.queue.undecodable

    def encode(self, item: Any) -> bytes:
        """Serialize ``item`` with the queue's serializer."""
        return self.queue._encode(item)

    def decode(self, payload: bytes) -> Any:
        """Deserialize with the queue's serializer."""
        return self.queue._serializer.loads(payload)

    def put(self, item: Any, *, block: bool, timeout: float | None) -> None:
        """``Queue.put``: raises ``queue.Full`` when there is no room in time."""
        self.queue.put(item, block, timeout)

    @property
    def queue_put(self) -> Callable[[Any, bool, float | None], None]:
        """The queue's own ``put(item, block, timeout)``: what :meth:`put` calls, for a
        Spool's producers to call directly (see ``Spool._putter``)."""
        return self.queue.put

    def put_durable(self, item: Any, *, block: bool, timeout: float | None) -> str:
        """Store ``item``, fsync it, and return its record id.

        The queue's ``put`` does not return ids, so the id is taken first and the record is
        stored under it (the queue's ``_put_record``, as a dead-letter requeue does).
        """
        q = self.queue
        payload = q._encode(item)
        with q._lock:
            q._store.check_open()
            if q._bounded:
                q._waits.wait_for_room(len(payload), block, timeout)
            number = q._store.next_id
            q._store.next_id = number + 1
        q._put_record(payload, number, time.time())
        q._sync(None, "the record's fsync failed")
        return self._prefix + str(number)

    def put_many(self, items: Iterable[Any]) -> None:
        """Store every item, in order."""
        self.queue.put_many(items)

    def restore(self, payload: bytes, record_id: str, enqueued_at: float) -> None:
        """Store ``payload`` again under ``record_id`` and fsync it.

        Raises:
            ConfigError: ``record_id`` was not issued by this directory.
        """
        uid, _, number = record_id.rpartition("-")
        if uid != self.uid or not number.isdigit():
            raise ConfigError(f"record id {record_id!r} does not belong to {self.path!r}")
        self.queue._put_record(payload, int(number), enqueued_at)
        self.queue._sync(None, "the record's fsync failed")

    def wait(self, timeout: float | None) -> bool:
        """Wait until a record waits to be handed out, taking nothing."""
        q = self.queue
        with q._lock:
            q._store.check_open()
            return q._waits.wait_for_records(True, timeout)

    def bind_dead_letters(self, dead: DeadLetters) -> None:
        """Where records over ``max_deliveries`` go (a Spool binds its own dead letters)."""
        self._dead = dead

    def get_batch(self, max_items: int, timeout: float | None) -> Sequence[Delivery]:
        """``Queue.get_batch``, less the records over ``max_deliveries`` (dead-lettered).

        May return an empty batch before ``timeout`` when every record it took was
        dead-lettered.
        """
        batch = self.queue.get_batch(max_items, timeout)
        limit = self.max_deliveries
        if limit is None or not batch or max(map(_deliveries, batch)) <= limit:
            return batch
        try:
            rest, dead_lettered = screen(
                batch,
                max_deliveries=limit,
                dead=self._dead,
                encode=self.encode,
                ack=self.queue.ack,
                log=self._log,
                sink=f"disk queue {self.path}",
                record_id=self.record_id,
            )
        except BaseException:  # the dead letters could not be written: hand everything back
            self.queue.nack(*batch)
            raise
        self.dead_lettered += dead_lettered
        return rest

    def record_id(self, message: Delivery) -> str:
        """``"<uid>-<seq>"``, as :attr:`Delivery.id`."""
        return self._prefix + str(message.seq)

    def record_ids(self, messages: Sequence[Delivery]) -> list[str]:
        """``record_id`` of each message."""
        prefix = self._prefix
        return [prefix + str(m.seq) for m in messages]

    def ack(self, *messages: Delivery) -> None:
        """``Queue.ack``."""
        self.queue.ack(*messages)

    def nack(self, *messages: Delivery) -> None:
        """``Queue.nack``."""
        self.queue.nack(*messages)

    def drop_oldest(self) -> bool:
        """Take the oldest waiting record and acknowledge it unseen."""
        batch = self.queue.get_batch(1, timeout=0)
        if not batch:
            return False
        self.queue.ack(*batch)
        return True

    def waiting(self) -> int:
        """``Queue.qsize``."""
        return self.queue.qsize()

    def backlog(self) -> int:
        """``Queue.unfinished_tasks``."""
        return self.queue.unfinished_tasks

    def bytes_used(self) -> int:
        """``Queue.bytes_used``."""
        return self.queue.bytes_used

    def oldest_enqueued_at(self) -> float | None:
        """``Queue.oldest_enqueued_at``."""
        return self.queue.oldest_enqueued_at()

    # -- what flush and stats read (see spoolkit.spool.lanes_view) ---------------------------------

    @staticmethod
    def lane_of(message: Delivery) -> str:
        """The lane a delivered record came from: its queue's uid (the id's first part)."""
        return message.id.rpartition("-")[0]

    def waiting_by_lane(self) -> dict[str, int]:
        """Records waiting, keyed as :meth:`lane_of` keys them; 0 once a newer instance in
        this process took the queue over (its records are that instance's now)."""
        return {self.uid: 0 if self.taken_over() else self.waiting()}

    def taken_over(self) -> bool:
        """Whether a newer instance on this directory in this process took the queue over."""
        return self.queue.closed and "taken over" in self.queue._store.closed_reason

    def closed_under(self) -> str:
        """Why the queue was closed under this backend (not by :meth:`close`), or ""."""
        return self.queue._store.closed_reason if self.queue.closed else ""

    @property
    def lost_records(self) -> int:
        """Records found lost when the queue was opened (``Queue.recovery.lost_records``)."""
        return self.queue.recovery.lost_records

    def close(self) -> None:
        """``Queue.close``."""
        self.queue.close()
