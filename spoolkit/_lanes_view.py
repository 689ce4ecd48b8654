"""What ``flush`` needs to know of a backend: the records waiting in each lane, and each
record's lane.

``flush`` decides "delivered" by counting records, never by their timestamps (a wall clock
stepped back stamps records in the "future"): a lane hands its records out in the order they
were stored, records handed back going first, so once a worker has taken, net of what was handed
back, as many records of a lane as waited in it when ``flush`` was called, none of those waits
any more (see :meth:`spoolkit._supervisor.Supervisor.wait_delivered`).

A backend may answer for itself with ``waiting_by_lane() -> dict`` and ``lane_of(message)``
(any hashable lane key). The disk backends are read here; any other backend counts as one lane
(a Redis stream hands its entries out in order too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spoolkit.backends import Backend, DiskBackend, LanesBackend
from spoolkit.errors import ClosedError

__all__ = ["lane_key", "taken_over", "waiting_by_lane"]


def lane_key(backend: Backend) -> Callable[[Any], Any]:
    """A function naming the lane of a message ``backend`` handed out (None: one lane)."""
    own = getattr(backend, "lane_of", None)
    if callable(own):
        return own  # type: ignore[no-any-return]
    if isinstance(backend, (LanesBackend, DiskBackend)):
        return _store_of
    return _one_lane


def waiting_by_lane(backend: Backend) -> dict[Any, int]:
    """Records waiting in each lane of ``backend`` now (a lane closed under it counts 0)."""
    own = getattr(backend, "waiting_by_lane", None)
    if callable(own):
        return dict(own())
    if isinstance(backend, LanesBackend):
        return {lane.queue._store: _waiting(lane) for lane in backend._lanes()}
    if isinstance(backend, DiskBackend):
        return {backend.queue._store: _waiting(backend)}
    try:
        return {None: backend.waiting()}
    except ClosedError:
        return {None: 0}


def taken_over(backend: Backend) -> bool:
    """Whether a lane of ``backend`` was closed under it (a newer instance on its path in this
    process took it over: that instance delivers its records now)."""
    if isinstance(backend, LanesBackend):
        return not backend._closed and any(map(_taken, backend._lanes()))
    if isinstance(backend, DiskBackend):
        return _taken(backend)
    return False


def _taken(lane: DiskBackend) -> bool:
    return lane.queue.closed and "taken over" in lane.queue._store.closed_reason


def _waiting(lane: DiskBackend) -> int:
    return 0 if lane.queue.closed else lane.waiting()


def _store_of(message: Any) -> Any:
    return message._store


def _one_lane(message: Any) -> None:
    return None
