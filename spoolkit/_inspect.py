"""Looking inside a spool directory from outside: inspect, peek, fsck and repair.

Everything here is read-only and takes no lock, so it works on a spool
that another process owns and is writing to. Chunk files are read whole, one at a time; a
chunk that vanishes between listing and reading was fully acknowledged and removed by its
owner, and is skipped. The tail of the newest chunk of a live spool may hold a record being
written at that very moment: it can read as a damaged region for a moment (see
:attr:`FsckReport.live`).

Rewriting damaged chunks is :func:`spoolkit._repair.repair`'s job.

A :class:`spoolkit.Spool` keeps its dead letters in ``<spool>/dead/``, itself a queue
directory: :func:`fsck` checks it too (its chunks are named ``dead/qNNNNN``)
and :func:`dead_letters` lists it.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from spoolkit._disk import framing, meta
from spoolkit._disk.framing import CHUNK_HEADER_SIZE, FRAME_HEADER_SIZE, ChunkHeader, Frame
from spoolkit._disk.segment import parse_chunk_name
from spoolkit.deadletter import DeadEntry
from spoolkit.errors import FormatError, PathError
from spoolkit.serializers import resolve

__all__ = [
    "ChunkInfo",
    "DamagedRegion",
    "DeadLetterInfo",
    "FsckReport",
    "PeekedRecord",
    "SpoolInfo",
    "dead_letters",
    "fsck",
    "inspect_spool",
    "peek",
    "spool_dir",
]

DEAD_DIR = "dead"
_MAX_LENGTH = 0xFFFF_FFFF  # the frame format's own limit: the owner's setting is not on disk


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
    """

    id: int
    enqueued_at: float
    chunk: str
    offset: int
    payload: bytes
    item: Any
    decode_error: str | None = None


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


@dataclass(slots=True)
class _Scan:
    header: ChunkHeader | None
    frames: list[Frame] = field(default_factory=list)
    damage: list[DamagedRegion] = field(default_factory=list)


# -- reading -----------------------------------------------------------------------------------


def spool_dir(path: str | os.PathLike[str]) -> str:
    """Check that ``path`` is a spool directory and return it, absolute.

    Raises:
        PathError: it does not exist, is not a directory, cannot be read, or holds no spool.
        FormatError: ``meta.json`` names a format newer than this spoolkit reads.
    """
    p = os.path.abspath(os.fspath(path))
    if not os.path.exists(p):
        raise PathError(f"no such spool directory: {p}", p)
    if not os.path.isdir(p):
        raise PathError(f"{p} is a file, not a spool directory", p)
    try:
        names = os.listdir(p)
    except OSError as exc:
        raise PathError(f"cannot read spool directory {p}: {exc.strerror}", p) from exc
    if meta.META not in names and not any(parse_chunk_name(n) is not None for n in names):
        raise PathError(f"{p} is not a spool directory (no meta.json and no chunk files)", p)
    fmt = (meta.read_meta(p) or {}).get("format")
    if isinstance(fmt, int) and fmt > framing.FORMAT_VERSION:
        raise FormatError(
            f"spool at {p} uses format {fmt}, newer than this spoolkit reads "
            f"({framing.FORMAT_VERSION}); upgrade spoolkit",
            p,
        )
    return p


def _chunk_names(path: str) -> list[str]:
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return []
    indexed = []
    for name in names:
        index = parse_chunk_name(name)
        if index is not None:
            indexed.append((index, name))
    return [name for _index, name in sorted(indexed)]


def _read(path: str) -> bytes | None:
    """The bytes of a file, or None when it vanished (its owner removed it)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _scan(data: bytes, name: str) -> _Scan:
    index = parse_chunk_name(os.path.basename(name))
    assert index is not None
    result = _Scan(framing.decode_chunk_header(data[:CHUNK_HEADER_SIZE]))
    if result.header is None and any(data[:CHUNK_HEADER_SIZE]):
        result.damage.append(DamagedRegion(name, 0, min(len(data), CHUNK_HEADER_SIZE)))
    for found in framing.scan(data, index, CHUNK_HEADER_SIZE, len(data), _MAX_LENGTH):
        if isinstance(found, Frame):
            result.frames.append(found)
        else:
            result.damage.append(DamagedRegion(name, found.start, found.end))
    if result.header is not None and result.header.version > framing.FORMAT_VERSION:
        raise FormatError(f"chunk {name} uses format {result.header.version}", name)
    return result


def _chunk_info(name: str, size: int, scan: _Scan) -> ChunkInfo:
    index = parse_chunk_name(os.path.basename(name))
    assert index is not None
    return ChunkInfo(
        name=name,
        index=index,
        size=size,
        frames=len(scan.frames),
        pending=sum(1 for f in scan.frames if not f.acked),
        record_bytes=sum(f.end - f.offset for f in scan.frames),
        header_ok=scan.header is not None,
        damage=tuple(scan.damage),
    )


def _walk(path: str, prefix: str = "") -> Iterator[tuple[str, bytes, _Scan]]:
    """Every chunk file still there, in order: its name (after ``prefix``), bytes, contents."""
    for name in _chunk_names(path):
        data = _read(os.path.join(path, name))
        if data is not None:
            yield prefix + name, data, _scan(data, prefix + name)


def _pending(path: str) -> Iterator[tuple[Frame, bytes]]:
    """Every unacknowledged frame with its payload, in delivery order (redeliveries aside)."""
    for _name, data, scan in _walk(path):
        for f in scan.frames:
            if not f.acked:
                body = f.offset + FRAME_HEADER_SIZE
                yield f, data[body : body + f.length]


def _tree_size(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _loads(path: str) -> tuple[Any, str | None]:
    """The ``loads`` of the serializer named in ``meta.json`` (None if unknown), and its name."""
    name = (meta.read_meta(path) or {}).get("serializer")
    if name in ("pickle", "json", "raw"):
        return resolve(name)[1].loads, name
    return None, _str_or_none(name)


def inspect_spool(path: str | os.PathLike[str]) -> SpoolInfo:
    """Summarise a spool directory without taking its lock.

    Reads every chunk file once: it costs one read of the spool's size on disk.

    Raises:
        PathError: ``path`` is not a readable spool directory.
        FormatError: the spool was written by a newer spoolkit.
    """
    p = spool_dir(path)
    locked = meta.is_locked(p)
    info = meta.read_meta(p) or {}
    chunks: list[ChunkInfo] = []
    backlog = record_bytes = damaged = 0
    oldest: float | None = None
    for name, data, scan in _walk(p):
        chunks.append(_chunk_info(name, len(data), scan))
        damaged += len(scan.damage)
        for f in scan.frames:
            if not f.acked:
                backlog += 1
                record_bytes += f.end - f.offset
                if oldest is None or f.enqueued_at < oldest:
                    oldest = f.enqueued_at
    dead = dead_letters(p)
    newest = max(dead, key=lambda d: d.last_attempt_at, default=None)
    fmt = info.get("format")
    return SpoolInfo(
        path=p,
        format=fmt if isinstance(fmt, int) else None,
        serializer=_str_or_none(info.get("serializer")),
        uid=_str_or_none(info.get("uid")),
        backlog=backlog,
        record_bytes=record_bytes,
        bytes_on_disk=_tree_size(p),
        chunks=tuple(chunks),
        oldest_enqueued_at=oldest,
        locked=locked,
        holder_pid=meta.holder_pid(p) if locked else None,
        dead_letters=len(dead),
        last_error=f"{newest.error_type}: {newest.error}" if newest else None,
        damaged_regions=damaged,
    )


def peek(path: str | os.PathLike[str], n: int = 10) -> list[PeekedRecord]:
    """The next ``n`` unacknowledged records in delivery order, without consuming them.

    Payloads are decoded with the serializer named in ``meta.json`` (``pickle``, ``json`` or
    ``raw``); with another serializer, or when decoding fails, ``item`` is None and
    ``decode_error`` says why. Decoding a pickle runs code chosen by whoever wrote the spool,
    exactly as the spool's own consumer does: peek only at spools you trust.

    Raises:
        PathError: ``path`` is not a readable spool directory.
        ValueError: ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    p = spool_dir(path)
    loads, name = _loads(p)
    out: list[PeekedRecord] = []
    for f, payload in _pending(p):
        if len(out) >= n:
            break
        item, error = _decode(loads, name, payload)
        out.append(PeekedRecord(f.record_id, f.enqueued_at, "", f.offset, payload, item, error))
    return out


def _decode(loads: Any, name: str | None, payload: bytes) -> tuple[Any, str | None]:
    if loads is None:
        return None, f"unknown serializer {name!r}"
    try:
        return loads(payload), None
    except Exception as exc:  # a record its own consumer could not decode either
        return None, f"{type(exc).__name__}: {exc}"


def dead_letters(path: str | os.PathLike[str]) -> list[DeadLetterInfo]:
    """The dead letters of the spool at ``path``, oldest first, read without any lock.

    Items are decoded with the spool's serializer (see :func:`peek` about pickles).

    Raises:
        PathError: ``path`` is not a readable spool directory.
    """
    p = spool_dir(path)
    loads, name = _loads(p)
    out: list[DeadLetterInfo] = []
    for _f, wire in _pending(os.path.join(p, DEAD_DIR)):
        try:
            entry = DeadEntry.from_wire(pickle.loads(wire))
        except Exception:  # noqa: S112 - not a dead-letter entry: fsck reports damage
            continue
        item, error = _decode(loads, name, entry.payload)
        e = entry.error
        out.append(
            DeadLetterInfo(
                id=entry.record_id,
                item=item,
                enqueued_at=entry.enqueued_at,
                error_type=e.type,
                error=e.message,
                attempts=entry.attempts,
                last_attempt_at=entry.last_attempt_at,
                decode_error=error,
            )
        )
    return out


def fsck(path: str | os.PathLike[str]) -> FsckReport:
    """Verify the checksum of every chunk header and record frame; report damaged regions.

    Read-only and lock-free. Damage is any run of non-zero bytes that is not an intact frame
    (flipped bits, a torn write, garbage); zeros after the last frame are preallocated space.
    The dead letters (``dead/``) are checked too.

    Raises:
        PathError: ``path`` is not a readable spool directory.
        FormatError: the spool was written by a newer spoolkit.
    """
    p = spool_dir(path)
    live = meta.is_locked(p)
    warnings: list[str] = []
    if meta.read_meta(p) is None:
        warnings.append(
            "meta.json is missing or unreadable: the next open writes a new one with the "
            "serializer it is given"
        )
    chunks: list[ChunkInfo] = []
    records = pending = dead = 0
    for name, data, scan in _walk_all(p):
        chunks.append(_chunk_info(name, len(data), scan))
        unacked = sum(1 for f in scan.frames if not f.acked)
        if name.startswith(DEAD_DIR):
            dead += unacked
        else:
            records += len(scan.frames)
            pending += unacked
    return FsckReport(p, tuple(chunks), records, pending, dead, tuple(warnings), live)


def _walk_all(p: str) -> Iterator[tuple[str, bytes, _Scan]]:
    yield from _walk(p)
    yield from _walk(os.path.join(p, DEAD_DIR), DEAD_DIR + "/")
