"""What the spool inspectors return: summaries, chunk details, peeked records, fsck findings.

Plain frozen records built by the readers in :mod:`spoolkit.tools.inspect` (and checked by
:mod:`spoolkit.tools.repair`); they hold no file handle and take no lock.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from spoolkit.queue.recovery import LostRange

__all__ = [
    "ChunkInfo",
    "DamagedRegion",
    "DeadLetterInfo",
    "FsckReport",
    "LaneInfo",
    "LostRecords",
    "PeekedRecord",
    "SpoolInfo",
]

DEAD_PREFIX = "dead/"  # how chunk files of the dead-letter store are named from the spool


@dataclass(frozen=True, slots=True)
class DamagedRegion:
    """A run of bytes in a chunk file that holds no intact frame.

    Attributes:
        chunk: the chunk file's path in the spool (``q00003``, ``lanes/2/q00000``,
            ``dead/q00000``).
        start: offset of the first damaged byte.
        end: offset just past the last damaged byte.
    """

    chunk: str
    start: int
    end: int

    @property
    def length(self) -> int:
        """Bytes in the region."""
        return self.end - self.start


LostRecords = LostRange
"""Records that were written to a lane and are gone, with the lane's uid: see
:class:`spoolkit.queue.recovery.LostRange` (and :func:`~spoolkit.queue.recovery.find_losses`
for what shows a loss)."""


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """What one chunk file holds.

    Attributes:
        name: the file's path in the spool (``q00003``, ``lanes/2/q00000``, ``dead/q00000``).
        index: chunk number.
        size: file size in bytes (chunk files are preallocated: most of it may be zeros).
        frames: intact records, acknowledged or not.
        pending: intact records not yet acknowledged.
        record_bytes: bytes taken by intact frames.
        header_ok: whether the 64-byte chunk header checks out.
        damage: regions that hold no intact frame.
    """

    name: str
    index: int
    size: int
    frames: int
    pending: int
    record_bytes: int
    header_ok: bool
    damage: tuple[DamagedRegion, ...] = ()


@dataclass(frozen=True, slots=True)
class LaneInfo:
    """One lane of a spool: a queue directory one process writes at a time.

    Attributes:
        number: 0 for the spool directory itself, ``n`` for ``lanes/n``.
        path: the lane's directory.
        uid: the lane's id (the first part of the record ids it issues), if known.
        chunks: its chunk files, in order (named from the spool: ``lanes/2/q00000``).
        backlog: records not yet acknowledged.
        record_bytes: bytes of the backlog's frames.
        oldest_enqueued_at: when its oldest unacknowledged record was put (None if none).
        locked: whether a live process holds the lane now (writing or delivering it).
        holder_pid: the pid in the lane's lock file, when locked.
        lost: records written to the lane and gone (a chunk file cut, emptied, deleted...).
    """

    number: int
    path: str
    uid: str | None
    chunks: tuple[ChunkInfo, ...]
    backlog: int
    record_bytes: int
    oldest_enqueued_at: float | None
    locked: bool
    holder_pid: int | None
    lost: tuple[LostRecords, ...] = ()

    @property
    def name(self) -> str:
        """``lane 0``, ``lane 2``...: how the command line names it."""
        return f"lane {self.number}"

    @property
    def records(self) -> int:
        """Intact records in its chunks, acknowledged or not."""
        return sum(c.frames for c in self.chunks)

    @property
    def damaged_regions(self) -> int:
        """Damaged regions seen in its chunks."""
        return sum(len(c.damage) for c in self.chunks)

    def held_by_other(self) -> bool:
        """Whether another process than this one holds the lane."""
        return self.locked and self.holder_pid != os.getpid()

    def oldest_age(self, now: float | None = None) -> float | None:
        """Seconds since its oldest unacknowledged record was put, or None when none is."""
        return _age(self.oldest_enqueued_at, now)


@dataclass(frozen=True, slots=True)
class SpoolInfo:
    """A read-only summary of a spool directory, every lane added up (see
    :func:`inspect_spool`).

    Attributes:
        path: the spool directory.
        format: the format version in ``meta.json`` (None when it is missing).
        serializer: the serializer named in ``meta.json``.
        uid: the id of lane 0 (the spool directory itself).
        backlog: records on disk not yet acknowledged (waiting, or handed out and in flight).
        record_bytes: bytes of the backlog's frames.
        bytes_on_disk: size of every file under the directory, lanes and dead letters included.
        chunks: the chunk files of every lane, lane by lane, in order (not the dead letters').
        oldest_enqueued_at: when the oldest unacknowledged record was put (None if none).
        locked: whether a live process holds a lane now.
        holder_pid: the pid holding the first lane held, when locked (every holder is in
            ``lanes``).
        dead_letters: records in the dead-letter store (``dead/``); 0 when there is none.
        last_error: the error of the most recent dead letter (``Type: message``), if any; a
            running spool's latest error of any kind is in ``Spool.stats().last_error``.
        damaged_regions: damaged regions seen while reading (run ``fsck`` for details).
        lanes: every lane, lane 0 first.
        lost: records written and gone, every lane's (run ``fsck`` for details).
    """

    path: str
    format: int | None
    serializer: str | None
    uid: str | None
    backlog: int
    record_bytes: int
    bytes_on_disk: int
    chunks: tuple[ChunkInfo, ...]
    oldest_enqueued_at: float | None
    locked: bool
    holder_pid: int | None
    dead_letters: int
    last_error: str | None
    damaged_regions: int
    lanes: tuple[LaneInfo, ...] = ()
    lost: tuple[LostRecords, ...] = ()

    @property
    def lost_records(self) -> int:
        """Records known lost (ranges of unknown length count none: see ``lost``)."""
        return sum(r.count or 0 for r in self.lost)

    def oldest_age(self, now: float | None = None) -> float | None:
        """Seconds since the oldest unacknowledged record was put, or None when none is."""
        return _age(self.oldest_enqueued_at, now)


def _age(t: float | None, now: float | None) -> float | None:
    if t is None:
        return None
    return max(0.0, (time.time() if now is None else now) - t)


@dataclass(frozen=True, slots=True)
class PeekedRecord:
    """One unacknowledged record, read without consuming it (see :func:`peek`).

    Attributes:
        id: the record's number in its lane.
        enqueued_at: when it was put, in seconds since the epoch.
        chunk: the chunk file holding it.
        offset: the frame's offset in that file.
        payload: the stored bytes.
        item: the decoded item; None when it could not be decoded (see ``decode_error``).
        decode_error: why decoding failed, or None.
        deliveries: how many times it was handed out without being acknowledged (0 if never).
        lane: the number of the lane holding it.
        uid: that lane's id, if known.
    """

    id: int
    enqueued_at: float
    chunk: str
    offset: int
    payload: bytes
    item: Any
    decode_error: str | None = None
    deliveries: int = 0
    lane: int = 0
    uid: str | None = None

    @property
    def record_id(self) -> str:
        """The id a sink sees (``"<lane uid>-<number>"``), or the bare number without a uid."""
        return f"{self.uid}-{self.id}" if self.uid else str(self.id)


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    """One dead letter, read without the lock (see :func:`dead_letters`).

    Attributes:
        id: the record id its sink saw (``"<spool uid>-<number>"``).
        item: the decoded item (None when it could not be decoded: see ``decode_error``).
        enqueued_at: when it was first put.
        error_type: the qualified name of the last error's type.
        error: the last error's message.
        attempts: attempts made before it was dead-lettered.
        last_attempt_at: when the last attempt failed.
        decode_error: why the item could not be decoded, or None.
        lane: the number of the lane that issued its record id (None if no lane of the spool
            did).
    """

    id: str
    item: Any
    enqueued_at: float
    error_type: str
    error: str
    attempts: int
    last_attempt_at: float
    decode_error: str | None = None
    lane: int | None = None


@dataclass(frozen=True, slots=True)
class FsckReport:
    """What :func:`fsck` found.

    Attributes:
        path: the spool directory.
        chunks: every chunk file checked, lane by lane, in order, the dead letters' last.
        records: intact records in the lanes' chunks (acknowledged or not).
        pending: of those, the ones not yet acknowledged.
        dead_letters: intact, unacknowledged records in ``dead/``.
        warnings: things worth knowing that lose no record (a missing ``meta.json``...).
        live: whether another process held a lane while it was read: damage at the very end
            of that lane's newest chunk may then be a record being written, not real damage.
        lanes: every lane, lane 0 first (their chunks are in ``chunks`` too).
        dead_lost: records gone from the dead letters' chunk files (the lanes' are in
            ``lanes``; both in :attr:`lost`).
    """

    path: str
    chunks: tuple[ChunkInfo, ...]
    records: int
    pending: int
    dead_letters: int = 0
    warnings: tuple[str, ...] = ()
    live: bool = False
    lanes: tuple[LaneInfo, ...] = ()
    dead_lost: tuple[LostRecords, ...] = ()

    @property
    def lost(self) -> tuple[LostRecords, ...]:
        """Records written and gone, every lane's then the dead letters'."""
        return tuple(r for lane in self.lanes for r in lane.lost) + self.dead_lost

    @property
    def lost_records(self) -> int:
        """Records known lost (ranges of unknown length count none: see :attr:`lost`)."""
        return sum(r.count or 0 for r in self.lost)

    @property
    def lane_chunks(self) -> tuple[ChunkInfo, ...]:
        """The lanes' chunk files: what ``inspect`` counts as the spool's chunk files."""
        return tuple(c for lane in self.lanes for c in lane.chunks)

    @property
    def dead_chunks(self) -> tuple[ChunkInfo, ...]:
        """The dead-letter store's chunk files."""
        return tuple(c for c in self.chunks if c.name.startswith(DEAD_PREFIX))

    @property
    def damage(self) -> tuple[DamagedRegion, ...]:
        """Every damaged region, chunk by chunk."""
        return tuple(d for c in self.chunks for d in c.damage)

    @property
    def damaged_bytes(self) -> int:
        """Bytes in damaged regions."""
        return sum(d.length for d in self.damage)

    @property
    def ok(self) -> bool:
        """Whether every checksum verified (no damaged region) and no record was lost."""
        return not self.damage and not self.lost
