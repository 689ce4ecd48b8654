"""The backend over one local queue directory: :class:`DiskBackend`, a thin adapter of
:class:`spoolkit.Queue` to the :class:`~spoolkit.backends.Backend` contract.

Record ids are ``"<queue uid>-<record number>"``: the uid is fixed when the directory is
created and the number is the queue's own sequence number, kept across redeliveries, restarts
and dead-letter requeues. The queue counts every hand-out on disk (crashes count), which is
what a spool compares with :attr:`DiskBackend.max_deliveries` to dead-letter a record that
kills its consumer every time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from spoolkit.errors import ConfigError
from spoolkit.queue.facade import Delivery, Queue
from spoolkit.queue.framing import MAX_DELIVERIES
from spoolkit.queue.opening import TAKEN_OVER
from spoolkit.typing import Serializer

if TYPE_CHECKING:
    from spoolkit.backends.base import Backend

__all__ = ["DiskBackend"]


class DiskBackend:
    """A :class:`~spoolkit.backends.Backend` over one :class:`spoolkit.Queue` directory.

    Args:
        path: the queue directory.
        serializer: as for :class:`spoolkit.Queue`.
        fsync: as for :class:`spoolkit.Queue`.
        max_bytes: cap on the bytes of records on disk.
        chunksize: records per chunk file.
        max_deliveries: hand-outs after which a record that was never acknowledged is
            dead-lettered by the spool rather than handed out again; 1 to 254, or None to
            hand records out forever.

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
        # closed by its spool (or its caller), not by the queue's own exit hook: that one runs
        # before the spool's, which drains the queue within exit_timeout first
        self.queue.leave_close_to_owner()
        self._max_deliveries = max_deliveries
        self._prefix = self.queue.uid + "-"
        self._closed = False

    # -- what it is ----------------------------------------------------------------------------

    @property
    def uid(self) -> str:
        """The queue directory's uid."""
        return self.queue.uid

    @property
    def path(self) -> str:
        """The queue directory."""
        return self.queue.path

    @property
    def max_deliveries(self) -> int | None:
        """Hand-outs after which the spool dead-letters a record; None never does."""
        return self._max_deliveries

    @property
    def cheap_puts(self) -> bool:
        """True unless ``fsync="always"``: a put only copies into the page cache."""
        return self.queue.fsync != "always"

    def encode(self, item: Any) -> bytes:
        """``Queue.encode``."""
        return self.queue.encode(item)

    def decode(self, payload: bytes) -> Any:
        """``Queue.decode``."""
        return self.queue.decode(payload)

    # -- storing -------------------------------------------------------------------------------

    def put(self, item: Any, *, block: bool, timeout: float | None) -> None:
        """``Queue.put``: raises ``queue.Full`` when there is no room in time."""
        self.queue.put(item, block, timeout)

    def putter(self, *, block: bool, timeout: float | None) -> Callable[[Any], None]:
        """:meth:`Queue.putter <spoolkit.Queue.putter>`: no call of this backend's in between."""
        return self.queue.putter(block, timeout)

    def put_durable(self, item: Any, *, block: bool, timeout: float | None) -> str:
        """Store ``item``, fsync it, and return its record id."""
        q = self.queue
        return self._prefix + str(q.put_payload(q.encode(item), block, timeout, durable=True))

    def put_many(self, items: Iterable[Any]) -> None:
        """``Queue.put_many``."""
        self.queue.put_many(items)

    def restore(self, payload: bytes, record_id: str, enqueued_at: float) -> None:
        """Store ``payload`` again under ``record_id`` and fsync it (``Queue.restore``).

        Raises:
            ConfigError: ``record_id`` was not issued by this directory.
        """
        uid, _, number = record_id.rpartition("-")
        if uid != self.uid or not number.isdigit():
            raise ConfigError(f"record id {record_id!r} does not belong to {self.path!r}")
        self.queue.restore(payload, int(number), enqueued_at)

    # -- handing out ---------------------------------------------------------------------------

    def wait(self, timeout: float | None) -> bool:
        """``Queue.wait_for_records``."""
        return self.queue.wait_for_records(timeout)

    def get_batch(self, max_items: int, timeout: float | None) -> Sequence[Delivery]:
        """``Queue.get_batch``."""
        return self.queue.get_batch(max_items, timeout)

    def record_ids(self, messages: Sequence[Delivery]) -> list[str]:
        """``"<uid>-<seq>"`` of each message, as :attr:`Delivery.id`."""
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

    # -- what flush waits for: one lane, the directory (see Batches.wait_settled) ------------

    def waiting_by_lane(self) -> dict[str, int]:
        """Records waiting, keyed as :meth:`lane_of` keys them; 0 once a newer instance in
        this process took the queue over (its records are that instance's now)."""
        return {self.uid: 0 if self.taken_over() else self.waiting()}

    @staticmethod
    def lane_of(message: Delivery) -> str:
        """The lane a delivered record came from: its queue's uid (the id's first part)."""
        return message.queue_uid

    def flush_mark(self) -> None:
        """None: flush counts the records waiting by lane instead."""
        return

    def settled_through(self, mark: object) -> bool:
        """True: flush counts the records waiting by lane instead (see :meth:`flush_mark`)."""
        return True

    # -- counters and gauges -------------------------------------------------------------------

    @property
    def puts(self) -> int:
        """Records stored since this backend was opened (not counting :meth:`restore`)."""
        return self.queue.puts

    @property
    def undecodable(self) -> int:
        """Records skipped since the queue was opened because they could not be decoded
        (the queue logs each and leaves it on disk: it is never handed out)."""
        return self.queue.undecodable

    @property
    def lost_records(self) -> int:
        """Records found lost when the queue was opened (``Queue.recovery.lost_records``)."""
        return self.queue.recovery.lost_records

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

    # -- lanes and lifetime --------------------------------------------------------------------

    def lanes_held(self) -> list[str]:
        """``[]``: one directory, without the lanes of :class:`~spoolkit.backends.LanesBackend`."""
        return []

    def hand_over(self) -> bool:
        """False: a single directory has no lane to hand over."""
        return False

    def taken_over(self) -> bool:
        """Whether a newer instance on this directory in this process took the queue over."""
        return self.queue.closed_reason == TAKEN_OVER

    def closed_under(self) -> str:
        """Why the queue was closed under this backend (not by :meth:`close`), or ""."""
        return "" if self._closed else self.queue.closed_reason

    def close(self) -> None:
        """``Queue.close``."""
        self._closed = True
        self.queue.close()


if TYPE_CHECKING:  # mypy checks DiskBackend against the whole contract, member by member

    def _is_a_backend(backend: DiskBackend) -> Backend[Delivery]:
        return backend
