"""Reading the chunk files of a queue directory (a lane, the dead letters) without its lock.

The primitives under :mod:`spoolkit.tools.inspect` and :mod:`spoolkit.tools.repair`: list the chunk
files, read each whole (one that vanished meanwhile was fully acknowledged and removed by its
owner: skipped), and scan it into intact frames and damaged regions.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from spoolkit.errors import FormatError, PathError
from spoolkit.queue import framing, meta
from spoolkit.queue.chunk import parse_chunk_name
from spoolkit.queue.framing import CHUNK_HEADER_SIZE, FRAME_HEADER_SIZE, ChunkHeader, Frame
from spoolkit.queue.recovery import ChunkFacts, FactsBuilder, LostRange, find_losses
from spoolkit.queue.safe_open import open_nofollow
from spoolkit.tools.inspect_reports import ChunkInfo, DamagedRegion, LostRecords

__all__ = [
    "DEAD_DIR",
    "Scan",
    "chunk_info",
    "chunk_names",
    "header_uid",
    "losses",
    "lane_label",
    "pending",
    "read_file",
    "scan_chunk",
    "spool_dir",
    "tree_size",
    "walk",
]

DEAD_DIR = "dead"
_MAX_LENGTH = 0xFFFF_FFFF  # the frame format's own limit: the owner's setting is not on disk


@dataclass(slots=True)
class Scan:
    """One chunk file read: its header (None when damaged or missing), intact frames, damage."""

    header: ChunkHeader | None
    frames: list[Frame] = field(default_factory=list)
    damage: list[DamagedRegion] = field(default_factory=list)

    def facts(self, name: str, size: int) -> ChunkFacts:
        """What loss detection needs of this chunk file (``name`` of ``size`` bytes)."""
        index = parse_chunk_name(os.path.basename(name))
        assert index is not None
        build = FactsBuilder(self.header.first_id if self.header is not None else None)
        events = [(f.offset, f) for f in self.frames] + [(d.start, d) for d in self.damage]
        for _pos, found in sorted(events, key=lambda e: e[0]):
            if isinstance(found, Frame):
                build.frame(found.record_id, found.acked or found.deliveries > 0, found.acked)
            else:
                build.damage(found.start)
        return build.done(name, index, size, bool(self.damage))


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


def lane_label(root: str, path: str) -> tuple[int, str]:
    """The number of the lane at ``path`` of the spool at ``root`` (0 for ``root`` itself, n
    for ``lanes/n``) and the prefix of its files' names in the spool (``""``, ``lanes/n/``)."""
    if path == root:
        return 0, ""
    return int(os.path.basename(path)), os.path.relpath(path, root) + "/"


def chunk_names(path: str) -> list[str]:
    """The chunk files in the directory ``path``, in order ([] when it does not exist)."""
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


def read_file(path: str) -> bytes | None:
    """The bytes of a file, or None when it vanished (its owner removed it).

    Raises:
        PathError: ``path`` is a symlink (planted in the spool: never followed, even to read).
    """
    try:
        fd = open_nofollow(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read()


def scan_chunk(data: bytes, name: str) -> Scan:
    """The header, intact frames and damaged regions of the chunk file ``name`` holding ``data``."""
    index = parse_chunk_name(os.path.basename(name))
    assert index is not None
    result = Scan(framing.decode_chunk_header(data[:CHUNK_HEADER_SIZE]))
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


def chunk_info(name: str, size: int, scan: Scan) -> ChunkInfo:
    """What :func:`scan_chunk` found in the chunk file ``name`` of ``size`` bytes."""
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


def losses(found: list[tuple[str, bytes, Scan]], uid: str | None) -> tuple[LostRecords, ...]:
    """The records written and gone from one queue directory, from its chunk files as
    :func:`walk` returned them (see :func:`spoolkit.queue.recovery.find_losses`)."""
    ranges: list[LostRange] = find_losses([s.facts(n, len(d)) for n, d, s in found])
    return tuple(dataclasses.replace(r, uid=uid) for r in ranges)


def header_uid(found: list[tuple[str, bytes, Scan]], directory: str) -> str | None:
    """A queue directory's uid: the first intact chunk header's (checksummed), as an open
    takes it, else the one in its ``meta.json`` when well formed."""
    for _name, _data, scan in found:
        if scan.header is not None:
            return scan.header.uid.hex()
    uid = (meta.read_meta(directory) or {}).get("uid")
    if isinstance(uid, str) and len(uid) == 32 and all(c in "0123456789abcdef" for c in uid):
        return uid
    return None


def walk(path: str, prefix: str = "") -> Iterator[tuple[str, bytes, Scan]]:
    """Every chunk file still there, in order: its name (after ``prefix``), bytes, contents."""
    for name in chunk_names(path):
        data = read_file(os.path.join(path, name))
        if data is not None:
            yield prefix + name, data, scan_chunk(data, prefix + name)


def pending(path: str, prefix: str = "") -> Iterator[tuple[str, Frame, bytes]]:
    """Every unacknowledged frame with its chunk's name and its payload, in delivery order
    (redeliveries aside)."""
    for name, data, scan in walk(path, prefix):
        for f in scan.frames:
            if not f.acked:
                body = f.offset + FRAME_HEADER_SIZE
                yield name, f, data[body : body + f.length]


def tree_size(path: str) -> int:
    """Bytes of every file under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total
