"""What the backends over a server's stream (a Redis stream, a JetStream stream) share.

Both keep their records on a server that other processes read too, so their answers to the
:class:`~spoolkit.backends.base.Backend` contract's questions about lanes, local files and
damage are the same: one lane they cannot count (other consumers take records too, so ``flush``
waits for :meth:`~spoolkit.backends.base.Backend.settled_through` of a
:meth:`~spoolkit.backends.base.Backend.flush_mark`), no local directory, nothing lost on
opening. They also share encoding (a record that cannot be decoded is handed out as an
:class:`~spoolkit.backends.base.Undecodable`, for the spool to dead-letter), record ids
carried on the messages, and messages handed back kept here to hand out first.
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from spoolkit.backends.base import Undecodable
from spoolkit.errors import ClosedError, SerializationError
from spoolkit.typing import Serializer

__all__ = ["StreamBackend"]


class _Message(Protocol):
    @property
    def record_id(self) -> str: ...
    @property
    def item(self) -> Any: ...
    @property
    def enqueued_at(self) -> float: ...
    @property
    def deliveries(self) -> int: ...


M = TypeVar("M", bound=_Message)


class StreamBackend(Generic[M]):
    """The members a stream backend shares; a subclass reads, writes and acknowledges.

    A subclass sets ``_serializer``, ``_closed``, ``_description``, ``_lock`` (guarding
    ``_ready``), ``_ready`` and ``_max_deliveries`` and calls :meth:`_init_counters`; it
    implements the rest of :class:`~spoolkit.backends.base.Backend` (``get_batch`` hands
    out ``_ready`` first, ``ack``, the puts, the gauges).
    """

    _serializer: Serializer
    _closed: threading.Event
    _description: str
    _lock: threading.Lock
    _ready: collections.deque[M]
    _max_deliveries: int

    def _init_counters(self) -> None:
        self._counting = threading.Lock()  # puts come from any thread at once
        self._puts = 0
        self._undecodable = 0

    # -- what it is --------------------------------------------------------------------------

    @property
    def path(self) -> str | None:
        """None: the records are on a server; the spool keeps its dead letters in its own
        ``path``."""
        return None

    @property
    def max_deliveries(self) -> int:
        """Hand-outs after which the spool dead-letters a record (the server's delivery
        count, crashes of any consumer included)."""
        return self._max_deliveries

    @property
    def cheap_puts(self) -> bool:
        """False: a put is a round trip to the server."""
        return False

    def encode(self, item: Any) -> bytes:
        """Serialize ``item``.

        Raises:
            SerializationError: the serializer refused it.
        """
        try:
            return self._serializer.dumps(item)
        except Exception as exc:
            raise SerializationError(
                f"cannot serialize {type(item).__name__} item: {exc}; nothing was stored"
            ) from exc

    def decode(self, payload: bytes) -> Any:
        """Deserialize ``payload``."""
        return self._serializer.loads(payload)

    def _item(self, payload: bytes | None, fields: Any) -> Any:
        """The decoded ``payload``, or an :class:`Undecodable` of the record's raw ``fields``
        when it cannot be decoded or is missing (counted in :attr:`undecodable`)."""
        try:
            if payload is None:
                raise ValueError("the record has no payload")
            return self._serializer.loads(payload)
        except Exception as exc:
            with self._counting:
                self._undecodable += 1
            return Undecodable(fields, exc)

    def _stored(self, count: int) -> None:
        """Count ``count`` records stored by a put."""
        with self._counting:
            self._puts += count

    # -- storing -----------------------------------------------------------------------------

    def put(self, item: Any, *, block: bool, timeout: float | None) -> None:
        raise NotImplementedError

    def putter(self, *, block: bool, timeout: float | None) -> Callable[[Any], None]:
        """:meth:`put` with these options (each put is a round trip to the server anyway)."""
        return functools.partial(self.put, block=block, timeout=timeout)

    # -- handing out -------------------------------------------------------------------------

    def record_ids(self, messages: Sequence[M]) -> list[str]:
        """The record id of each message (for a requeued dead letter, the id it had first)."""
        return [m.record_id for m in messages]

    def nack(self, *messages: M) -> None:
        """Keep the messages here to hand out again first (they stay pending at the server,
        held by this consumer)."""
        if self._closed.is_set():
            raise ClosedError(f"{self._description} is closed")
        with self._lock:
            self._ready.extendleft(reversed(messages))

    def get_batch(self, max_items: int, timeout: float | None) -> Sequence[M]:
        raise NotImplementedError

    def ack(self, *messages: M) -> None:
        raise NotImplementedError

    def drop_oldest(self) -> bool:
        """Take one message and acknowledge it unseen; False when none waits."""
        batch = self.get_batch(1, 0)
        self.ack(*batch)
        return bool(batch)

    # -- what flush waits for ----------------------------------------------------------------

    def waiting_by_lane(self) -> dict[str, int] | None:
        """None: other consumers take records too, so they cannot be counted by lane;
        ``flush`` waits for :meth:`settled_through` of :meth:`flush_mark` instead."""
        return None

    def lane_of(self, message: M) -> str:
        """``""``: one lane."""
        return ""

    # -- counters ----------------------------------------------------------------------------

    @property
    def puts(self) -> int:
        """Records this backend stored since it was opened (not counting ``restore``)."""
        return self._puts

    @property
    def undecodable(self) -> int:
        """Records read since the backend was opened that could not be decoded (each was
        handed out as an :class:`Undecodable`, every time it was read)."""
        return self._undecodable

    @property
    def lost_records(self) -> int:
        """0: the server keeps the records; nothing is recovered on opening."""
        return 0

    def bytes_used(self) -> int:
        """0: the records are on the server, not on this host's disk."""
        return 0

    # -- lanes and lifetime ------------------------------------------------------------------

    def lanes_held(self) -> list[str]:
        """``[]``: no lanes."""
        return []

    def hand_over(self) -> bool:
        """False: no lanes to hand over (a producer-only process uses the disk lanes)."""
        return False

    def closed_under(self) -> str:
        """``""``: nothing closes the store under the spool."""
        return ""
