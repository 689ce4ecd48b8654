"""Counters of a spool and the typed snapshot :meth:`Spool.stats` returns."""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["Counters", "SpoolStats"]


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot of a spool, from :meth:`spoolkit.Spool.stats`.

    Counters count since this :class:`~spoolkit.Spool` object was created (they restart at zero
    with the process); gauges describe the spool now.

    Attributes:
        enqueued: records put (data records and deferred calls).
        delivered: records the sink (or a deferred function) took.
        retried: record attempts beyond the first (a batch of 10 retried twice counts 20).
        dead_lettered: records moved to the dead letters.
        dropped: records discarded by ``when_full="drop_newest"``/``"drop_oldest"``.
        backlog: records not yet acknowledged, waiting or in flight (gauge).
        bytes_on_disk: bytes of the spool and its dead letters on disk (gauge).
        oldest_age: seconds since the oldest record not yet delivered was put; 0 when none.
        worker_restarts: workers restarted after a crash or a stuck sink call.
        last_error: ``repr`` of the last sink or worker error, or None.
    """

    enqueued: int
    delivered: int
    retried: int
    dead_lettered: int
    dropped: int
    backlog: int
    bytes_on_disk: int
    oldest_age: float
    worker_restarts: int
    last_error: str | None


class Counters:
    """Thread-safe counters shared by the spool, its workers and its supervisor."""

    __slots__ = (
        "dead_lettered",
        "delivered",
        "dropped",
        "enqueued",
        "last_error",
        "lock",
        "retried",
        "worker_restarts",
    )

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.enqueued = 0
        self.delivered = 0
        self.retried = 0
        self.dead_lettered = 0
        self.dropped = 0
        self.worker_restarts = 0
        self.last_error: str | None = None

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def error(self, exc: BaseException) -> None:
        """Remember ``exc`` as the last error."""
        self.last_error = repr(exc)
