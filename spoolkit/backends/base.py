"""The contract between a :class:`~spoolkit.Spool` and the store under it: :class:`Backend`.

A backend is a durable queue with per-message acknowledgement. It stores encoded items and
hands them out as *messages* (:class:`Message`: the item, when it was first stored, how many
times it was handed out), each named by a stable record id (``Record.id``, the idempotency key
sinks see). A message handed out stays in the store until :meth:`Backend.ack`; a
:meth:`Backend.nack`, or a crash of the process holding it, hands it out again, before newer
ones.

The Spool owns every policy above that: batching, retries, and dead-lettering (a message
handed out more than :attr:`Backend.max_deliveries` times, or whose item is
:class:`Undecodable`, goes to the spool's dead letters and is acknowledged there, in
:mod:`spoolkit.spool.screen`). A backend never dead-letters on its own.

To write a backend, implement every member below. The smallest honest one keeps one lane:
``waiting_by_lane()`` returns ``{"": self.waiting()}``, ``lane_of()`` returns ``""``,
``flush_mark()`` returns None and ``settled_through()`` True, ``putter()`` is
``functools.partial(self.put, block=block, timeout=timeout)``,
``puts``/``undecodable``/``lost_records`` count what they say (0 if never),
``closed_under()`` returns ``""``, ``hand_over()`` returns False, ``lanes_held()`` returns
``[]`` and ``path`` is None. ``tests/test_backend_written_from_the_contract.py`` is one, in
memory, in 150 lines: a Spool runs on it, retrying, flushing and dead-lettering.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ["Backend", "Message", "Undecodable"]


class Message(Protocol):
    """What a backend hands out."""

    @property
    def item(self) -> Any:
        """The stored item, decoded; an :class:`Undecodable` when it could not be."""

    @property
    def enqueued_at(self) -> float:
        """When the record was first stored, in seconds since the epoch."""

    @property
    def deliveries(self) -> int:
        """How many times the record was handed out, this time included (crashes count)."""


M = TypeVar("M", bound=Message)


@runtime_checkable
class Backend(Protocol[M]):
    """The storage under a spool, handing out messages of type ``M``.

    Every method may be called from several threads at once. After :meth:`close`, every
    method but the counters raises :class:`~spoolkit.errors.ClosedError`.
    """

    # -- what it is ----------------------------------------------------------------------------

    @property
    def uid(self) -> str:
        """A stable id of this store, the prefix of its record ids."""

    @property
    def path(self) -> str | None:
        """The local directory the store lives in (the spool keeps its dead letters there),
        or None for a remote store (the spool's ``path`` is then used)."""

    @property
    def max_deliveries(self) -> int | None:
        """Hand-outs after which the spool dead-letters a message instead of delivering it;
        None never does."""

    @property
    def cheap_puts(self) -> bool:
        """Whether :meth:`put` only copies into memory (no network, no fsync), so an asyncio
        producer may call it on its event loop."""

    def encode(self, item: Any) -> bytes:
        """Serialize ``item``; raise :class:`~spoolkit.errors.SerializationError` if it can't."""

    def decode(self, payload: bytes) -> Any:
        """The inverse of :meth:`encode`."""

    # -- storing -------------------------------------------------------------------------------

    def put(self, item: Any, *, block: bool, timeout: float | None) -> None:
        """Store ``item``. Raise ``queue.Full`` when there is no room in time."""

    def putter(self, *, block: bool, timeout: float | None) -> Callable[[Any], None]:
        """:meth:`put` with these options, prepared once for producers that put on every call
        (``functools.partial(self.put, block=block, timeout=timeout)`` will do). It may raise
        :class:`~spoolkit.errors.ClosedError` once it no longer applies (the disk lanes: this
        process's lane changed hands): ask for a new one and put again."""

    def put_durable(self, item: Any, *, block: bool, timeout: float | None) -> str:
        """Store ``item`` durably (fsynced, or acknowledged by a server) and return its
        record id."""

    def put_many(self, items: Iterable[Any]) -> None:
        """Store every item in order (waiting for room), or none if one can't be serialized."""

    def restore(self, payload: bytes, record_id: str, enqueued_at: float) -> None:
        """Store an encoded record again under its old id (a dead-letter requeue), durably.

        Raises:
            ConfigError: ``record_id`` was not issued by this store.
        """

    # -- handing out ---------------------------------------------------------------------------

    def wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` for a message to be waiting, taking none; False on timeout."""

    def get_batch(self, max_items: int, timeout: float | None) -> Sequence[M]:
        """Hand out up to ``max_items`` messages, waiting up to ``timeout`` for the first;
        handed-back messages first, then in the order they were stored."""

    def record_ids(self, messages: Sequence[M]) -> list[str]:
        """The record id of each message, in order."""

    def ack(self, *messages: M) -> None:
        """Acknowledge: the messages are done and leave the store."""

    def nack(self, *messages: M) -> None:
        """Hand the messages back, to be handed out again before newer ones."""

    def drop_oldest(self) -> bool:
        """Remove the oldest waiting message unseen (``when_full="drop_oldest"``); False
        when none waits."""

    # -- what flush waits for ------------------------------------------------------------------

    def waiting_by_lane(self) -> dict[str, int] | None:
        """Messages waiting now in each lane (a lane hands its messages out in order), or None
        for a store whose messages cannot be counted so (other consumers take them too): flush
        then waits for :meth:`settled_through` of :meth:`flush_mark`."""

    def lane_of(self, message: M) -> str:
        """The lane ``message`` was handed out from, as :meth:`waiting_by_lane` keys it."""

    def flush_mark(self) -> object | None:
        """For a store without lanes: a mark of everything stored so far; None when nothing
        is unsettled."""

    def settled_through(self, mark: object) -> bool:
        """Whether everything stored up to ``mark`` was acknowledged."""

    # -- counters and gauges (cheap: no I/O) ---------------------------------------------------

    @property
    def puts(self) -> int:
        """Records stored since the backend was opened (not counting :meth:`restore`)."""

    @property
    def undecodable(self) -> int:
        """Records skipped since the backend was opened because they could not be decoded."""

    @property
    def lost_records(self) -> int:
        """Records found lost when the store was opened (damage recovery could not undo)."""

    def waiting(self) -> int:
        """Messages waiting to be handed out."""

    def backlog(self) -> int:
        """Messages not acknowledged yet (waiting plus handed out)."""

    def bytes_used(self) -> int:
        """Bytes the store takes."""

    def oldest_enqueued_at(self) -> float | None:
        """``enqueued_at`` of the next message to be handed out, or None."""

    # -- lanes and lifetime --------------------------------------------------------------------

    def lanes_held(self) -> list[str]:
        """The lanes this process holds, its own first (``[]`` for a store without lanes)."""

    def hand_over(self) -> bool:
        """Producer-only: let this process's lane go to a consuming process, if one runs;
        whether it did (False for a store without lanes)."""

    def closed_under(self) -> str:
        """Why the store was closed under the spool (not by :meth:`close`), or ``""``. A reason
        with "taken over" in it means a newer instance in this process holds the store now
        and delivers its records; any other, that they wait in the store for the next
        opener."""

    def close(self) -> None:
        """Persist and release the store. Blocked ``get_batch`` callers get ClosedError."""


class Undecodable:
    """The item of a stored record its serializer cannot read: the spool dead-letters it as
    a description of the raw record, with the error."""

    def __init__(self, fields: Any, error: Exception) -> None:
        self.fields, self.error = fields, error

    def describe(self) -> dict[str, str]:
        """The record's raw fields, each as the ``repr`` of its value."""
        return {_text(k): repr(v) for k, v in self.fields.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
