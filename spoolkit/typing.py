"""The small extension points of spoolkit: records, sinks and serializers.

A sink is anything with ``write(batch)``; ``open()`` and ``close()`` are optional. A serializer
is anything with ``dumps(obj) -> bytes`` and ``loads(bytes) -> obj``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = ["AsyncSink", "Record", "Serializer", "Sink"]


class Record(NamedTuple):
    """One record handed to a sink: an immutable named tuple (cheap to build per record).

    Attributes:
        id: unique within its spool and stable across restarts, redeliveries and dead-letter
            requeues: use it as an idempotency key.
        item: the object that was put.
        enqueued_at: when it was first put, in seconds since the epoch (UTC).
        attempts: how many times a sink has been handed this record, this one included.
    """

    id: str
    item: Any
    enqueued_at: float
    attempts: int = 1


@runtime_checkable
class Sink(Protocol):
    """Where a spool delivers records.

    ``write`` returning normally means every record of the batch was accepted. Raising any
    exception fails the batch (it is retried per the retry policy);
    :class:`spoolkit.errors.PermanentError` dead-letters it at once, and
    :class:`spoolkit.errors.PartialFailure` retries only the records it names. A sink may also
    define ``open()`` (called when the spool starts) and ``close()`` (called when it stops),
    and ``after_fork()``, called in a child forked while the spool existed: drop (without
    closing) connections shared with the parent and replace locks; the child opens its own.
    Several workers may call ``write`` at once: a sink must be thread-safe, or the spool must
    run with ``workers=1``. ``write`` may be ``async def``: see :class:`AsyncSink`.
    """

    def write(self, batch: Sequence[Record]) -> None:
        """Deliver ``batch`` or raise."""


@runtime_checkable
class AsyncSink(Protocol):
    """A sink whose ``write`` is ``async def``: the :class:`Sink` contract, awaited on the
    consumer pool's event loop (one per spool). ``open()``/``close()`` may be ``async def``
    too, and a ``concurrency`` attribute caps the batches in flight (default: the spool's
    ``workers``)."""

    async def write(self, batch: Sequence[Record]) -> None:
        """Deliver ``batch`` or raise."""


@runtime_checkable
class Serializer(Protocol):
    """Turns items into bytes and back."""

    def dumps(self, obj: Any) -> bytes:
        """Encode ``obj``; raise ``TypeError`` or ``ValueError`` when it cannot be encoded."""

    def loads(self, data: bytes) -> Any:
        """Decode what ``dumps`` produced."""
