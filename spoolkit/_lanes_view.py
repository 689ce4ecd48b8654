"""What ``flush`` needs to know of a backend: the records waiting in each lane, and each
record's lane.

``flush`` decides "delivered" by counting records, never by their timestamps (a wall clock
stepped back stamps records in the "future"): a lane hands its records out in the order they
were stored, records handed back going first, so once a worker has taken, net of what was handed
back, as many records of a lane as waited in it when ``flush`` was called, none of those waits
any more (see :meth:`spoolkit._supervisor.Supervisor.wait_delivered`).

A backend may answer for itself with ``waiting_by_lane() -> dict`` and ``lane_of(message)``
(any hashable lane key). The disk backends are read here. Any other backend cannot be counted
this way (a Redis stream's entries are also taken by other consumers, and reclaimed from dead
ones): :func:`waiting_by_lane` returns None and ``flush`` falls back to the records' timestamps
for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spoolkit.backends import Backend, DiskBackend, LanesBackend

__all__ = ["closed_under", "lane_key", "lost_records", "waiting_by_lane"]


def lane_key(backend: Backend) -> Callable[[Any], Any]:
    """A function naming the lane of a message ``backend`` handed out (None: one lane)."""
    own = getattr(backend, "lane_of", None)
    if callable(own):
        return own  # type: ignore[no-any-return]
    if isinstance(backend, (LanesBackend, DiskBackend)):
        return _store_of
    return _one_lane


def waiting_by_lane(backend: Backend) -> dict[Any, int] | None:
    """Records waiting in each lane of ``backend`` now (a lane taken over counts 0), or None
    for a backend whose records cannot be counted by lane."""
    own = getattr(backend, "waiting_by_lane", None)
    if callable(own):
        return dict(own())
    if isinstance(backend, LanesBackend):
        return {lane.queue._store: _waiting(lane) for lane in backend._lanes()}
    if isinstance(backend, DiskBackend):
        return {backend.queue._store: _waiting(backend)}
    return None


def closed_under(backend: Backend) -> str:
    """Why a lane of ``backend`` was closed under it (not by ``backend.close()``), or "".

    "taken over" in the reason: a newer instance on its path in this process took it over
    (that instance delivers its records now). Any other reason (its queue's own exit
    finalizer, a fork): the records wait on disk for the next opener.
    """
    if isinstance(backend, LanesBackend):
        lanes = [] if backend._closed else backend._lanes()
    elif isinstance(backend, DiskBackend):
        lanes = [backend]
    else:
        return ""
    reasons = [lane.queue._store.closed_reason for lane in lanes if lane.queue.closed]
    return next((r for r in reasons if "taken over" not in r), reasons[0] if reasons else "")


def lost_records(backend: Backend) -> int:
    """Records found lost when the lanes ``backend`` holds were opened (a chunk file cut,
    emptied or deleted: each range also logged as a ``records_lost`` warning)."""
    if isinstance(backend, LanesBackend):
        lanes = backend._final if backend._closed else backend._lanes()
    elif isinstance(backend, DiskBackend):
        lanes = [backend]
    else:
        return int(getattr(backend, "lost_records", 0))
    return sum(int(getattr(lane.queue.recovery, "lost_records", 0)) for lane in lanes)


def _waiting(lane: DiskBackend) -> int:
    """Records waiting in ``lane``; 0 if it was taken over (they are not this spool's now)."""
    if lane.queue.closed and "taken over" in lane.queue._store.closed_reason:
        return 0
    return lane.waiting()


def _store_of(message: Any) -> Any:
    return message._store


def _one_lane(message: Any) -> None:
    return None
