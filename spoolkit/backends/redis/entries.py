"""The Redis backend's stream entries, the messages it hands out for them, and the call
wrapper its reader and writer share.

Each entry has the fields ``d`` (the serialized item), ``t`` (``enqueued_at``, epoch seconds)
and, for a requeued dead letter, ``r`` (its record id).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

__all__ = ["RedisCall", "StreamMessage", "entry_fields", "text", "to_message"]

T = TypeVar("T")


class RedisCall(Protocol):
    """Runs a Redis call, mapping redis-py's errors (``RedisBackend._call``)."""

    def __call__(self, fn: Callable[[], T], /) -> T: ...


@dataclass(slots=True, eq=False)
class StreamMessage:
    """One delivery of a stream entry (what ``get_batch`` hands out).

    Attributes:
        entry_id: the stream entry id (what XACK takes).
        record_id: ``entry_id``, or for a requeued dead letter the id it had first.
        item: the decoded item (an :class:`~spoolkit.backends.base.Undecodable` when it
            could not be decoded).
        enqueued_at: when it was first put (epoch seconds).
        deliveries: Redis's delivery count of the entry (1 on its first delivery).
    """

    entry_id: str
    record_id: str
    item: Any
    enqueued_at: float
    deliveries: int


def text(value: Any) -> str:
    """A reply value from Redis (bytes or not) as a string."""
    return value.decode() if isinstance(value, bytes) else str(value)


def entry_fields(payload: bytes, enqueued_at: float, rid: str | None = None) -> Any:
    """The fields of a new entry: ``d``, ``t`` and, for a requeued dead letter, ``r``."""
    fields: dict[str, Any] = {"d": payload, "t": repr(enqueued_at)}
    if rid is not None:
        fields["r"] = rid
    return fields


def to_message(
    entry: Any, fields: Any, deliveries: int, item: Callable[[bytes | None, Any], Any]
) -> StreamMessage:
    """The message for an entry read from Redis; ``item(payload, fields)`` decodes its payload
    (an :class:`~spoolkit.backends.base.Undecodable` when it cannot)."""
    eid = text(entry)
    rid = text(fields[b"r"]) if b"r" in fields else eid
    enqueued_at = float(fields.get(b"t", 0.0))
    return StreamMessage(eid, rid, item(fields.get(b"d"), fields), enqueued_at, deliveries)
