"""Screening what workers take: poison records go to the dead letters, never to a sink.

The one place a record is dead-lettered before delivery, whatever the backend: one handed out
more than the backend's ``max_deliveries`` times (its consumers died or stalled holding it: a
record that kills its consumer every time must not stall the spool in a crash loop), or one
its serializer cannot read (the backend hands it out as an
:class:`~spoolkit.backends.base.Undecodable`). Each is written to the dead letters, fsynced,
and only then acknowledged. Records a sink refuses are dead-lettered by the workers, after
their retries (:mod:`spoolkit.spool.pool`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

from spoolkit.backends.base import Backend, Undecodable
from spoolkit.deadletter import DeadEntry, DeadError, DeadLetters
from spoolkit.errors import PermanentError
from spoolkit.spool.stats import Counters

__all__ = ["screened"]

_deliveries = attrgetter("deliveries")
_item = attrgetter("item")


def screened(
    backend: Backend[Any], dead: DeadLetters, counters: Counters, log: Any
) -> Callable[[int, float | None], Sequence[Any]]:
    """``backend.get_batch`` less the poison records, which it dead-letters and acknowledges.

    The returned function may return an empty batch before its timeout when every record it
    took was dead-lettered. If the dead letters cannot be written, the whole batch is handed
    back (nack) and the error raised: nothing is acknowledged unless it is stored somewhere.
    """
    get_batch = backend.get_batch
    limit = backend.max_deliveries

    def take(max_items: int, timeout: float | None) -> Sequence[Any]:
        batch = get_batch(max_items, timeout)
        if not batch:
            return batch
        if (limit is None or max(map(_deliveries, batch)) <= limit) and Undecodable not in set(
            map(type, map(_item, batch))
        ):
            return batch
        bad = [m for m in batch if _poison(m, limit)]
        try:
            _dead_letter(bad, backend, dead, limit, log)
        except BaseException:
            backend.nack(*batch)
            raise
        counters.add("dead_lettered", len(bad))
        gone = {id(m) for m in bad}
        return [m for m in batch if id(m) not in gone]

    return take


def _poison(message: Any, limit: int | None) -> bool:
    return type(message.item) is Undecodable or (limit is not None and message.deliveries > limit)


def _dead_letter(
    bad: list[Any], backend: Backend[Any], dead: DeadLetters, limit: int | None, log: Any
) -> None:
    """Store ``bad`` in the dead letters (fsynced), then acknowledge them."""
    ids = backend.record_ids(bad)
    now = time.time()
    entries = []
    for rid, m in zip(ids, bad, strict=True):
        if type(m.item) is Undecodable:
            error: BaseException = m.item.error
            payload = backend.encode(m.item.describe())
            log.error("undecodable_record", record_id=rid, error=repr(error))
        else:
            error = PermanentError(
                f"record {rid} was delivered {m.deliveries} times, more than "
                f"max_deliveries={limit} (its consumers died or stalled holding it); "
                "dead-lettered without another attempt",
                sink=f"backend {backend.uid}",
            )
            payload = backend.encode(m.item)
        entries.append(
            DeadEntry(
                rid,
                payload,
                m.enqueued_at,
                DeadError.from_exception(error),
                m.deliveries,
                m.enqueued_at,
                now,
            )
        )
    dead.add(entries)
    backend.ack(*bad)
    log.error("records_dead_lettered", count=len(bad), first=ids[0])
