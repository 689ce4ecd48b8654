"""Counters of a spool and the typed snapshot :meth:`Spool.stats` returns."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spoolkit._internal.redact import error_repr
from spoolkit.errors import ClosedError

if TYPE_CHECKING:
    from spoolkit.backends import Backend
    from spoolkit.retry import Clock
    from spoolkit.spool.pool import Pool

_BURST_QUIET = 1.0  # seconds without a drop that end a burst of drops

__all__ = ["Counters", "Drops", "SpoolStats", "snapshot"]


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
        undecodable: stored records skipped because their serializer could not read them
            back (a tampered or wrongly keyed encrypted record, a renamed pickled class); they
            stay on disk and are tried again after a restart.
        stuck_calls: sink calls that ran past ``sink_timeout`` and were abandoned (their batch
            handed to another worker); each also counts in ``worker_restarts``.
        stuck_threads: threads inside a sink call past ``sink_timeout`` now (gauge): abandoned
            ones still running plus stuck workers no longer replaced because abandoned ones
            reached the limit (2 per configured worker; see the Supervision docs).
        lost_records: records found lost when the lanes this process holds were opened (a
            chunk file cut, emptied or deleted): see the ``records_lost`` warnings, or
            ``spoolkit fsck``, for their ids.
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
    undecodable: int = 0
    stuck_calls: int = 0
    stuck_threads: int = 0
    lost_records: int = 0


class Counters:
    """Thread-safe counters shared by the spool, its workers and its supervisor."""

    __slots__ = (
        "dead_lettered",
        "delivered",
        "dropped",
        "last_error",
        "lock",
        "retried",
        "stuck_calls",
        "stuck_threads",
        "worker_restarts",
    )

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delivered = 0
        self.retried = 0
        self.dead_lettered = 0
        self.dropped = 0
        self.worker_restarts = 0
        self.stuck_calls = 0
        self.stuck_threads = 0  # a gauge the supervisor sets
        self.last_error: str | None = None

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def error(self, exc: BaseException) -> None:
        """Remember ``exc`` as the last error."""
        self.last_error = error_repr(exc)


class Drops:
    """Counts records dropped by a full spool and logs each burst of drops once.

    A burst starts with a drop and ends at the first record stored after a second (on the
    spool's clock) without drops; its start is logged as a warning, its end as info with the
    number dropped.
    """

    def __init__(
        self, counters: Counters, clock: Clock, log: Any, when_full: str, max_bytes: int | None
    ) -> None:
        self.counters = counters
        self.clock = clock
        self.log = log
        self.when_full = when_full
        self.max_bytes = max_bytes
        self.dropping = False
        self._burst = 0
        self._last = float("-inf")

    def dropped(self, n: int) -> None:
        """Count ``n`` dropped records; log if a burst starts."""
        c = self.counters
        with c.lock:
            c.dropped += n
            self._burst += n
        self._last = self.clock.monotonic()
        if not self.dropping:
            self.dropping = True
            self.log.warning(
                "spool_full_dropping", when_full=self.when_full, max_bytes=self.max_bytes
            )

    def stored(self) -> None:
        """A record was stored without a drop: end the burst after a quiet second."""
        if self.dropping and self.clock.monotonic() - self._last > _BURST_QUIET:
            self.dropping = False
            dropped, self._burst = self._burst, 0
            self.log.info("spool_full_ended", when_full=self.when_full, dropped=dropped)


def snapshot(counters: Counters, backend: Backend[Any], dead_bytes: int, pool: Pool) -> SpoolStats:
    """Read the counters and the backend's gauges into a :class:`SpoolStats`."""
    oldest = None
    with contextlib.suppress(ClosedError):
        oldest = backend.oldest_enqueued_at()
    times = [t for t in (oldest, pool.oldest_inflight()) if t is not None]
    # records are stamped by the backend with the real time.time(), not the spool's clock
    age = max(0.0, time.time() - min(times)) if times else 0.0
    c = counters
    with c.lock:
        return SpoolStats(
            enqueued=backend.puts,
            delivered=c.delivered,
            retried=c.retried,
            dead_lettered=c.dead_lettered,
            dropped=c.dropped,
            backlog=backend.backlog(),
            bytes_on_disk=backend.bytes_used() + dead_bytes,
            oldest_age=age,
            worker_restarts=c.worker_restarts,
            last_error=c.last_error,
            undecodable=backend.undecodable,
            stuck_calls=c.stuck_calls,
            stuck_threads=c.stuck_threads,
            lost_records=backend.lost_records,
        )
