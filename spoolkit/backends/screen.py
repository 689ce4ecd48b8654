"""Screening what a backend read: poison records go to the dead letters, not a sink.

A record delivered more than ``max_deliveries`` times (its consumers died or stalled holding
it) or one the serializer cannot read is dead-lettered and acknowledged, never handed out.
Without dead letters bound, they are logged instead. Shared by the disk backend (which counts
deliveries in each record's ack word) and the Redis backend (Redis's own delivery counts).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from spoolkit.backends.base import Undecodable
from spoolkit.deadletter import DeadEntry, DeadError, DeadLetters
from spoolkit.errors import PermanentError

__all__ = ["screen"]

M = Any  # a message: .item, .enqueued_at and .deliveries


def screen(
    msgs: list[M],
    *,
    max_deliveries: int,
    dead: DeadLetters | None,
    encode: Callable[[Any], bytes],
    ack: Callable[..., None],
    log: Any,
    sink: str,
    record_id: Callable[[M], str],
) -> tuple[list[M], int]:
    """Dead-letter what was delivered too often or cannot be decoded; return the rest.

    Args:
        msgs: the messages just read.
        max_deliveries: deliveries after which a record is dead-lettered.
        dead: where dead letters go; None logs them instead (an undecodable record is then
            left pending, one over ``max_deliveries`` delivered anyway).
        encode: serializes an item for its dead letter.
        ack: acknowledges messages (once their dead letters are fsynced).
        log: the backend's logger.
        sink: the backend's description, named in the dead letters' errors.
        record_id: a message's record id.

    Returns:
        The messages to hand out, in order, and how many were dead-lettered.
    """
    bad = [m for m in msgs if m.deliveries > max_deliveries or type(m.item) is Undecodable]
    if not bad:
        return msgs, 0
    if dead is None:  # nowhere to put them: deliver what can be, log the rest
        for m in bad:
            undecodable = type(m.item) is Undecodable
            event = "undecodable_record" if undecodable else "max_deliveries_exceeded"
            log.error(event, record_id=record_id(m), deliveries=m.deliveries)
        return [m for m in msgs if type(m.item) is not Undecodable], 0
    now = time.time()
    entries = []
    for m in bad:
        if type(m.item) is Undecodable:
            error: BaseException = m.item.error
            payload = encode(m.item.describe())
        else:
            error = PermanentError(
                f"record {record_id(m)} was delivered {m.deliveries} times, more than "
                f"max_deliveries={max_deliveries} (its consumers died or stalled "
                "holding it); dead-lettered without another attempt",
                sink=sink,
            )
            payload = encode(m.item)
        entries.append(
            DeadEntry(
                record_id(m),
                payload,
                m.enqueued_at,
                DeadError.from_exception(error),
                m.deliveries,
                m.enqueued_at,
                now,
            )
        )
    dead.add(entries)  # fsynced before the entries leave the stream
    ack(*bad)
    log.error("records_dead_lettered", count=len(bad), first=record_id(bad[0]))
    gone = {id(m) for m in bad}
    return [m for m in msgs if id(m) not in gone], len(bad)
