"""Looking inside a spool directory from outside: inspect, peek, fsck and repair.

Everything here is read-only and takes no lock, so it works on a spool
that another process owns and is writing to. Chunk files are read whole, one at a time; a
chunk that vanishes between listing and reading was fully acknowledged and removed by its
owner, and is skipped. The tail of the newest chunk of a live spool may hold a record being
written at that very moment: it can read as a damaged region for a moment (see
:attr:`FsckReport.live`).

The records these readers return live in :mod:`spoolkit._inspect_reports` (re-exported
here). Rewriting damaged chunks is :func:`spoolkit._repair.repair`'s job.

A :class:`spoolkit.Spool` keeps its dead letters in ``<spool>/dead/``, itself a queue
directory: :func:`fsck` checks it too (its chunks are named ``dead/qNNNNN``)
and :func:`dead_letters` lists it.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from spoolkit._disk import framing, meta
from spoolkit._disk.framing import CHUNK_HEADER_SIZE, FRAME_HEADER_SIZE, ChunkHeader, Frame
from spoolkit._disk.segment import parse_chunk_name
from spoolkit._inspect_reports import (
    ChunkInfo,
    DamagedRegion,
    DeadLetterInfo,
    FsckReport,
    PeekedRecord,
    SpoolInfo,
)
from spoolkit.deadletter import DeadEntry
from spoolkit.errors import FormatError, PathError
from spoolkit.serializers import BUILTIN_NAMES, resolve
from spoolkit.typing import Serializer

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


def _pending(path: str) -> Iterator[tuple[str, Frame, bytes]]:
    """Every unacknowledged frame with its chunk's name and its payload, in delivery order
    (redeliveries aside)."""
    for name, data, scan in _walk(path):
        for f in scan.frames:
            if not f.acked:
                body = f.offset + FRAME_HEADER_SIZE
                yield name, f, data[body : body + f.length]


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


def _loads(path: str, serializer: str | Serializer | None = None) -> tuple[Any, str | None]:
    """The ``loads`` to decode records with (None if unknown), and the serializer's name.

    ``serializer`` is a built-in name or a serializer object; ``None`` takes the name in
    ``meta.json``.
    """
    if serializer is not None and not isinstance(serializer, str):
        return serializer.loads, getattr(serializer, "name", type(serializer).__name__)
    name = serializer or (meta.read_meta(path) or {}).get("serializer")
    if name in BUILTIN_NAMES:
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


def peek(
    path: str | os.PathLike[str], n: int = 10, *, serializer: str | Serializer | None = None
) -> list[PeekedRecord]:
    """The next ``n`` unacknowledged records in delivery order, without consuming them.

    Payloads are decoded with ``serializer`` (a built-in name or a serializer object, such as
    an ``EncryptedSerializer`` holding its key), by default the one named in ``meta.json``
    (``pickle``, ``json`` or ``raw``); with another serializer, or when decoding fails,
    ``item`` is None and ``decode_error`` says why. Decoding a pickle runs code chosen by
    whoever wrote the spool, exactly as the spool's own consumer does: peek only at spools
    you trust.

    Raises:
        PathError: ``path`` is not a readable spool directory.
        ValueError: ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    p = spool_dir(path)
    loads, name = _loads(p, serializer)
    out: list[PeekedRecord] = []
    for chunk, f, payload in _pending(p):
        if len(out) >= n:
            break
        item, error = _decode(loads, name, payload)
        out.append(
            PeekedRecord(
                f.record_id, f.enqueued_at, chunk, f.offset, payload, item, error, f.deliveries
            )
        )
    return out


def _decode(loads: Any, name: str | None, payload: bytes) -> tuple[Any, str | None]:
    if loads is None:
        return None, f"unknown serializer {name!r}"
    try:
        return loads(payload), None
    except Exception as exc:  # a record its own consumer could not decode either
        return None, f"{type(exc).__name__}: {exc}"


def dead_letters(
    path: str | os.PathLike[str], *, serializer: str | Serializer | None = None
) -> list[DeadLetterInfo]:
    """The dead letters of the spool at ``path``, oldest first, read without any lock.

    Items are decoded with ``serializer``, by default the spool's (see :func:`peek`).

    Raises:
        PathError: ``path`` is not a readable spool directory.
    """
    p = spool_dir(path)
    loads, name = _loads(p, serializer)
    out: list[DeadLetterInfo] = []
    for _chunk, _f, wire in _pending(os.path.join(p, DEAD_DIR)):
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
