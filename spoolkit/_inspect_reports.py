"""What the spool inspectors return: summaries, chunk details, peeked records, fsck findings.

Plain frozen records built by the readers in :mod:`spoolkit._inspect` (and checked by
:mod:`spoolkit._repair`); they hold no file handle and take no lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ChunkInfo",
    "DamagedRegion",
    "DeadLetterInfo",
    "FsckReport",
    "PeekedRecord",
    "SpoolInfo",
]


@dataclass(frozen=True, slots=True)
class DamagedRegion:
    """A run of bytes in a chunk file that holds no intact frame.

    Attributes:
        chunk: the chunk file's path in the spool (``q00003``, ``dead/q00000``).
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


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """What one chunk file holds.

    Attributes:
        name: the file's path in the spool (``q00003``, ``dead/q00000``).
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
class SpoolInfo:
    """A read-only summary of a spool directory (see :func:`inspect_spool`).

    Attributes:
        path: the spool directory.
        format: the format version in ``meta.json`` (None when it is missing).
        serializer: the serializer named in ``meta.json``.
        uid: the spool's id.
        backlog: records on disk not yet acknowledged (waiting, or handed out and in flight).
        record_bytes: bytes of the backlog's frames.
        bytes_on_disk: size of every file under the directory, dead letters included.
        chunks: the chunk files, in order.
        oldest_enqueued_at: when the oldest unacknowledged record was put (None if none).
        locked: whether a process holds the directory now.
        holder_pid: the pid in the lock file, when locked.
        dead_letters: records in the dead-letter store (``dead/``); 0 when there is none.
        last_error: the error of the most recent dead letter (``Type: message``), if any; a
            running spool's latest error of any kind is in ``Spool.stats().last_error``.
        damaged_regions: damaged regions seen while reading (run ``fsck`` for details).
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

    def oldest_age(self, now: float | None = None) -> float | None:
        """Seconds since the oldest unacknowledged record was put, or None when none is."""
        if self.oldest_enqueued_at is None:
            return None
        return max(0.0, (time.time() if now is None else now) - self.oldest_enqueued_at)


@dataclass(frozen=True, slots=True)
class PeekedRecord:
    """One unacknowledged record, read without consuming it (see :func:`peek`).

    Attributes:
        id: the record id.
        enqueued_at: when it was put, in seconds since the epoch.
        chunk: the chunk file holding it.
        offset: the frame's offset in that file.
        payload: the stored bytes.
        item: the decoded item; None when it could not be decoded (see ``decode_error``).
        decode_error: why decoding failed, or None.
        deliveries: how many times it was handed out without being acknowledged (0 if never).
    """

    id: int
    enqueued_at: float
    chunk: str
    offset: int
    payload: bytes
    item: Any
    decode_error: str | None = None
    deliveries: int = 0


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
    """

    id: str
    item: Any
    enqueued_at: float
    error_type: str
    error: str
    attempts: int
    last_attempt_at: float
    decode_error: str | None = None


@dataclass(frozen=True, slots=True)
class FsckReport:
    """What :func:`fsck` found.

    Attributes:
        path: the spool directory.
        chunks: every chunk file checked, in order, the dead letters' last.
        records: intact records in the spool's own chunks (acknowledged or not).
        pending: of those, the ones not yet acknowledged.
        dead_letters: intact, unacknowledged records in ``dead/``.
        warnings: things worth knowing that lose no record (a missing ``meta.json``...).
        live: whether another process held the spool while it was read: damage at the very
            end of the newest chunk may then be a record being written, not real damage.
    """

    path: str
    chunks: tuple[ChunkInfo, ...]
    records: int
    pending: int
    dead_letters: int = 0
    warnings: tuple[str, ...] = ()
    live: bool = False

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
        """Whether every checksum verified (no damaged region)."""
        return not self.damage
