"""Lanes on the command line: which a command holds, which live processes hold, how to say so.

A spool's lanes (:mod:`spoolkit.queue.lanes`) are named ``lane 0`` (the spool directory
itself), ``lane 1`` (``lanes/1``)... Commands that write (``fsck --repair``, ``drain``,
``dead requeue``, ``ship``) act on the lanes nobody holds and name the others with the pid of
the process holding each.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from spoolkit.tools import inspect as insp

__all__ = ["held_by_others", "holders", "lane_json"]


def held_by_others(path: str, mine: Collection[str] = ()) -> list[insp.LaneInfo]:
    """The lanes of the spool at ``path`` a live process holds, other than those in ``mine``
    (read without any lock, backlog included)."""
    return [lane for lane in insp.lanes(path) if lane.locked and lane.path not in mine]


def holders(held: Iterable[tuple[int, int | None]]) -> str:
    """``lane 2 (pid 4242), lane 3 (pid ?)`` for (lane number, pid) pairs."""
    return ", ".join(f"lane {n} (pid {pid or '?'})" for n, pid in held)


def lane_json(lane: insp.LaneInfo) -> dict[str, Any]:
    """What ``--json`` shows of one lane."""
    return {
        "lane": lane.number,
        "path": lane.path,
        "uid": lane.uid,
        "backlog": lane.backlog,
        "record_bytes": lane.record_bytes,
        "records": lane.records,
        "chunk_files": len(lane.chunks),
        "oldest_enqueued_at": lane.oldest_enqueued_at,
        "locked": lane.locked,
        "holder_pid": lane.holder_pid,
        "damaged_regions": lane.damaged_regions,
    }
