"""Looking inside a spool directory from outside: inspect, peek, fsck and repair.

A spool has lanes (:mod:`spoolkit.queue.lanes`): the directory itself is lane 0, and
``lanes/1``, ``lanes/2``... are more, each a queue directory that one process at a time holds.
Every reader here covers every lane and adds them up; chunk files of lane ``n`` are named
``lanes/n/qNNNNN`` from the spool.

Everything here is read-only and takes no lock, so it works on a spool whose lanes other
processes hold and write to. Chunk files are read whole, one at a time; a
chunk that vanishes between listing and reading was fully acknowledged and removed by its
owner, and is skipped. The tail of the newest chunk of a live spool may hold a record being
written at that very moment: it can read as a damaged region for a moment (see
:attr:`FsckReport.live`).

The records these readers return live in :mod:`spoolkit.tools.inspect_reports` (re-exported
here); the chunk-file readers under them in :mod:`spoolkit.tools.inspect_files`. Rewriting damaged
chunks is :func:`spoolkit.tools.repair.repair`'s job.

A :class:`spoolkit.Spool` keeps its dead letters in ``<spool>/dead/``, itself a queue
directory: :func:`fsck` checks it too (its chunks are named ``dead/qNNNNN``)
and :func:`dead_letters` lists it.
"""

from __future__ import annotations

import heapq
import itertools
import os
import pickle
from collections.abc import Iterator
from typing import Any

from spoolkit.deadletter import DeadEntry
from spoolkit.queue import meta
from spoolkit.queue.lanes import lane_paths
from spoolkit.serializers import BUILTIN_NAMES, resolve
from spoolkit.tools.inspect_files import (
    DEAD_DIR,
    chunk_info,
    header_uid,
    lane_label,
    losses,
    pending,
    spool_dir,
    tree_size,
    walk,
)
from spoolkit.tools.inspect_reports import (
    DEAD_PREFIX,
    ChunkInfo,
    DamagedRegion,
    DeadLetterInfo,
    FsckReport,
    LaneInfo,
    LostRecords,
    PeekedRecord,
    SpoolInfo,
)
from spoolkit.typing import Serializer

__all__ = [
    "DEAD_DIR",
    "ChunkInfo",
    "DamagedRegion",
    "DeadLetterInfo",
    "FsckReport",
    "LaneInfo",
    "LostRecords",
    "PeekedRecord",
    "SpoolInfo",
    "dead_letters",
    "fsck",
    "inspect_spool",
    "lane_numbers",
    "lanes",
    "peek",
    "serializer_name",
    "spool_dir",
]


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _loads(serializer: str | Serializer | None) -> tuple[Any, str | None]:
    """The ``loads`` to decode records with (None if unknown), and the serializer's name.

    ``serializer`` is a built-in name, a serializer object, or the name in ``meta.json``.
    """
    if serializer is not None and not isinstance(serializer, str):
        return serializer.loads, getattr(serializer, "name", type(serializer).__name__)
    if serializer in BUILTIN_NAMES:
        return resolve(serializer)[1].loads, serializer
    return None, serializer


def _read_lane(root: str, path: str) -> LaneInfo:
    """One lane, every chunk read once, without its lock."""
    number, prefix = lane_label(root, path)
    locked = meta.is_locked(path)
    found = list(walk(path, prefix))
    uid = header_uid(found, path)
    chunks: list[ChunkInfo] = []
    backlog = record_bytes = 0
    oldest: float | None = None
    for name, data, scan in found:
        chunks.append(chunk_info(name, len(data), scan))
        for f in scan.frames:
            if not f.acked:
                backlog += 1
                record_bytes += f.end - f.offset
                if oldest is None or f.enqueued_at < oldest:
                    oldest = f.enqueued_at
    return LaneInfo(
        number=number,
        path=path,
        uid=uid,
        chunks=tuple(chunks),
        backlog=backlog,
        record_bytes=record_bytes,
        oldest_enqueued_at=oldest,
        locked=locked,
        holder_pid=meta.holder_pid(path) if locked else None,
        lost=losses(found, uid),
    )


def lanes(path: str | os.PathLike[str]) -> list[LaneInfo]:
    """Every lane of the spool at ``path`` (lane 0, the directory itself, first), read without
    any lock: each chunk file is read once.

    Raises:
        PathError: ``path`` is not a readable spool directory.
        FormatError: the spool was written by a newer spoolkit.
    """
    p = spool_dir(path)
    return [_read_lane(p, lane) for lane in lane_paths(p)]


def _spool_meta(p: str) -> dict[str, Any]:
    """The ``meta.json`` of lane 0, else of the first lane that has one ({} if none does)."""
    for lane in lane_paths(p):
        info = meta.read_meta(lane)
        if info is not None:
            return info
    return {}


def serializer_name(path: str | os.PathLike[str]) -> str | None:
    """The serializer the spool's ``meta.json`` names (lane 0's, else another lane's).

    Raises:
        PathError: ``path`` is not a readable spool directory.
    """
    return _str_or_none(_spool_meta(spool_dir(path)).get("serializer"))


def inspect_spool(path: str | os.PathLike[str]) -> SpoolInfo:
    """Summarise a spool directory, every lane added up, without taking any lock.

    Reads every chunk file once: it costs one read of the spool's size on disk.

    Raises:
        PathError: ``path`` is not a readable spool directory.
        FormatError: the spool was written by a newer spoolkit.
    """
    p = spool_dir(path)
    found = [_read_lane(p, lane) for lane in lane_paths(p)]
    info = _spool_meta(p)
    dead = dead_letters(p)
    newest = max(dead, key=lambda d: d.last_attempt_at, default=None)
    held = [lane for lane in found if lane.locked]
    times = [lane.oldest_enqueued_at for lane in found if lane.oldest_enqueued_at is not None]
    fmt = info.get("format")
    return SpoolInfo(
        path=p,
        format=fmt if isinstance(fmt, int) else None,
        serializer=_str_or_none(info.get("serializer")),
        uid=found[0].uid,
        backlog=sum(lane.backlog for lane in found),
        record_bytes=sum(lane.record_bytes for lane in found),
        bytes_on_disk=tree_size(p),
        chunks=tuple(c for lane in found for c in lane.chunks),
        oldest_enqueued_at=min(times, default=None),
        locked=bool(held),
        holder_pid=held[0].holder_pid if held else None,
        dead_letters=len(dead),
        last_error=f"{newest.error_type}: {newest.error}" if newest else None,
        damaged_regions=sum(lane.damaged_regions for lane in found),
        lanes=tuple(found),
        lost=tuple(r for lane in found for r in lane.lost),
    )


def peek(
    path: str | os.PathLike[str], n: int = 10, *, serializer: str | Serializer | None = None
) -> list[PeekedRecord]:
    """The next ``n`` unacknowledged records of every lane, oldest first, without consuming
    them.

    Each lane's records come in its delivery order; the lanes are merged by the time their
    records were put (consumers take the lanes in turn, so this is the order in which a
    single consumer would meet them, give or take a batch). Payloads are decoded with
    ``serializer`` (a built-in name or a serializer object, such as an ``EncryptedSerializer``
    holding its key), by default the one named in the lane's ``meta.json`` (``pickle``,
    ``json`` or ``raw``); with another serializer, or when decoding fails, ``item`` is None
    and ``decode_error`` says why. Decoding a pickle runs code chosen by whoever wrote the
    spool, exactly as the spool's own consumer does: peek only at spools you trust.

    Raises:
        PathError: ``path`` is not a readable spool directory.
        ValueError: ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    p = spool_dir(path)
    if n == 0:
        return []
    default = _str_or_none(_spool_meta(p).get("serializer"))
    streams = [_peek_lane(p, lane, serializer, default) for lane in lane_paths(p)]
    merged = heapq.merge(*streams, key=lambda r: r.enqueued_at)
    return list(itertools.islice(merged, n))


def _peek_lane(
    root: str, path: str, serializer: str | Serializer | None, default: str | None
) -> Iterator[PeekedRecord]:
    """The unacknowledged records of one lane, decoded as they are reached."""
    number, prefix = lane_label(root, path)
    info = meta.read_meta(path) or {}
    loads, name = _loads(serializer or _str_or_none(info.get("serializer")) or default)
    uid = _str_or_none(info.get("uid"))
    for chunk, f, payload in pending(path, prefix):
        item, error = _decode(loads, name, payload)
        yield PeekedRecord(
            f.record_id,
            f.enqueued_at,
            chunk,
            f.offset,
            payload,
            item,
            error,
            f.deliveries,
            number,
            uid,
        )


def _decode(loads: Any, name: str | None, payload: bytes) -> tuple[Any, str | None]:
    if loads is None:
        return None, f"unknown serializer {name!r}"
    try:
        return loads(payload), None
    except Exception as exc:  # a record its own consumer could not decode either
        return None, f"{type(exc).__name__}: {exc}"


def lane_numbers(path: str | os.PathLike[str]) -> dict[str, int]:
    """The lane number of each lane uid of the spool at ``path`` (lanes with no uid left out).

    Raises:
        PathError: ``path`` is not a readable spool directory.
    """
    p = spool_dir(path)
    out: dict[str, int] = {}
    for lane in lane_paths(p):
        uid = _str_or_none((meta.read_meta(lane) or {}).get("uid"))
        if uid is not None:
            out[uid] = lane_label(p, lane)[0]
    return out


def dead_letters(
    path: str | os.PathLike[str],
    *,
    serializer: str | Serializer | None = None,
    decode: bool = True,
) -> list[DeadLetterInfo]:
    """The dead letters of the spool at ``path`` (every lane's: they share ``dead/``), oldest
    first, read without any lock.

    Items are decoded with ``serializer``, by default the spool's (see :func:`peek`); with
    ``decode=False`` they are not (``item`` is None), for when only ids and errors matter.

    Raises:
        PathError: ``path`` is not a readable spool directory.
    """
    p = spool_dir(path)
    loads, name = _loads(serializer or _str_or_none(_spool_meta(p).get("serializer")))
    numbers = lane_numbers(p)
    out: list[DeadLetterInfo] = []
    for _chunk, _f, wire in pending(os.path.join(p, DEAD_DIR)):
        try:
            entry = DeadEntry.from_wire(pickle.loads(wire))
        except Exception:  # noqa: S112 - not a dead-letter entry: fsck reports damage
            continue
        item, error = _decode(loads, name, entry.payload) if decode else (None, None)
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
                lane=numbers.get(entry.record_id.rpartition("-")[0]),
            )
        )
    return out


def fsck(path: str | os.PathLike[str]) -> FsckReport:
    """Verify the checksum of every chunk header and record frame of every lane; report
    damaged regions.

    Read-only and lock-free. Damage is any run of non-zero bytes that is not an intact frame
    (flipped bits, a torn write, garbage); zeros after the last frame are preallocated space.
    The dead letters (``dead/``) are checked too.

    Raises:
        PathError: ``path`` is not a readable spool directory.
        FormatError: the spool was written by a newer spoolkit.
    """
    p = spool_dir(path)
    found = [_read_lane(p, lane) for lane in lane_paths(p)]
    warnings: list[str] = []
    for lane in found:
        if meta.read_meta(lane.path) is None and (lane.number == 0 or lane.chunks):
            where = "" if lane.number == 0 else f"{lane.name} ({lane.path}): "
            warnings.append(
                f"{where}meta.json is missing or unreadable: the next open writes a new one "
                "with the serializer it is given"
            )
    dead_dir = os.path.join(p, DEAD_DIR)
    dead = list(walk(dead_dir, DEAD_PREFIX))
    chunks = [c for lane in found for c in lane.chunks]
    chunks += [chunk_info(name, len(data), scan) for name, data, scan in dead]
    return FsckReport(
        p,
        tuple(chunks),
        records=sum(lane.records for lane in found),
        pending=sum(lane.backlog for lane in found),
        dead_letters=sum(1 for _n, _d, scan in dead for f in scan.frames if not f.acked),
        warnings=tuple(warnings),
        live=any(lane.held_by_other() for lane in found),
        lanes=tuple(found),
        dead_lost=losses(dead, header_uid(dead, dead_dir)),
    )
