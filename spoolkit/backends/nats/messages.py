"""The JetStream backend's stream messages and the messages it hands out for them.

Each stream message carries the serialized item as its data and two headers:
``Spoolkit-Enqueued-At`` (``enqueued_at``, epoch seconds) and, for a requeued dead letter,
``Spoolkit-Record-Id`` (its record id; otherwise the id is the stream sequence number).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg

__all__ = ["JetStreamMessage", "enqueued_at", "headers", "to_message"]

ENQUEUED = "Spoolkit-Enqueued-At"
RECORD = "Spoolkit-Record-Id"


@dataclass(slots=True, eq=False)
class JetStreamMessage:
    """One delivery of a stream message (what ``get_batch`` hands out).

    Attributes:
        seq: the stream sequence number.
        record_id: ``str(seq)``, or for a requeued dead letter the id it had first.
        item: the decoded item (an :class:`~spoolkit.backends.base.Undecodable` when it
            could not be decoded).
        enqueued_at: when it was first put (epoch seconds).
        deliveries: JetStream's delivery count (1 on its first delivery).
        msg: the nats-py message (what is acknowledged).
    """

    seq: int
    record_id: str
    item: Any
    enqueued_at: float
    deliveries: int
    msg: Msg


def headers(enqueued_at: float, record_id: str | None = None) -> dict[str, str]:
    """The headers of a new stream message (``record_id``: a requeued dead letter's)."""
    found = {ENQUEUED: repr(enqueued_at)}
    if record_id is not None:
        found[RECORD] = record_id
    return found


def enqueued_at(found: dict[str, str] | None) -> float:
    """``enqueued_at`` from a stream message's headers (0.0 when it has none, or one that
    is not a number: a message of another writer is still handed out)."""
    try:
        return float((found or {}).get(ENQUEUED, 0.0))
    except ValueError:
        return 0.0


def to_message(msg: Msg, item: Callable[[bytes | None, Any], Any]) -> JetStreamMessage:
    """The message for one delivery; ``item(payload, fields)`` decodes its data (an
    :class:`~spoolkit.backends.base.Undecodable` when it cannot)."""
    meta = msg.metadata
    seq = int(meta.sequence.stream)
    found = msg.headers or {}
    return JetStreamMessage(
        seq,
        found.get(RECORD, str(seq)),
        item(msg.data, {"data": msg.data, "headers": found}),
        enqueued_at(found),
        int(meta.num_delivered),
        msg,
    )
