"""What ``flush`` needs to know of a backend: the records waiting in each lane, and each
record's lane.

``flush`` decides "delivered" by counting records, never by their timestamps (a wall clock
stepped back stamps records in the "future"): a lane hands its records out in the order they
were stored, records handed back going first, so once a worker has taken, net of what was handed
back, as many records of a lane as waited in it when ``flush`` was called, none of those waits
any more (see :meth:`spoolkit.spool.supervisor.Supervisor.wait_delivered`).

A backend answers for itself with ``waiting_by_lane() -> dict`` and ``lane_of(message)``
(any hashable lane key), as the disk backends do. A backend whose records cannot be counted by
lane (a Redis stream's entries are also taken by other consumers, and reclaimed from dead ones)
offers a sequence mark instead (``flush_mark()``, ``settled_through(mark)``); only a backend
with neither makes ``flush`` fall back to the records' timestamps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spoolkit.backends import Backend

__all__ = ["closed_under", "lane_key", "lost_records", "waiting_by_lane"]


def lane_key(backend: Backend) -> Callable[[Any], Any]:
    """A function naming the lane of a message ``backend`` handed out (None: one lane)."""
    own = getattr(backend, "lane_of", None)
    return own if callable(own) else _one_lane


def waiting_by_lane(backend: Backend) -> dict[Any, int] | None:
    """Records waiting in each lane of ``backend`` now (a lane taken over counts 0), or None
    for a backend whose records cannot be counted by lane."""
    own = getattr(backend, "waiting_by_lane", None)
    return dict(own()) if callable(own) else None


def closed_under(backend: Backend) -> str:
    """Why a lane of ``backend`` was closed under it (not by ``backend.close()``), or "".

    "taken over" in the reason: a newer instance on its path in this process took it over
    (that instance delivers its records now). Any other reason (its queue's own exit
    finalizer, a fork): the records wait on disk for the next opener.
    """
    own = getattr(backend, "closed_under", None)
    return str(own()) if callable(own) else ""


def lost_records(backend: Backend) -> int:
    """Records found lost when the lanes ``backend`` holds were opened (a chunk file cut,
    emptied or deleted: each range also logged as a ``records_lost`` warning)."""
    return int(getattr(backend, "lost_records", 0))


def _one_lane(message: Any) -> None:
    return None
