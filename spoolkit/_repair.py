"""``spoolkit fsck --repair``: rewrite damaged chunk files keeping every intact record.

Unlike the readers in :mod:`spoolkit._inspect`, this takes the directory lock (it refuses if
another process owns the spool) and rewrites each damaged chunk file with every intact frame
copied byte for byte, so pending records stay pending and acknowledged ones stay acknowledged.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from spoolkit._disk import framing, meta
from spoolkit._disk.framing import ChunkHeader
from spoolkit._disk.segment import parse_chunk_name
from spoolkit._inspect import DEAD_DIR, FsckReport, _Scan, _walk, fsck, spool_dir

__all__ = ["RepairReport", "repair"]


@dataclass(frozen=True, slots=True)
class RepairReport:
    """What :func:`repair` did.

    Attributes:
        rewritten: names of the chunk files rewritten.
        kept_records: intact records copied into them (acknowledged or not).
        kept_pending: of those, the ones not yet acknowledged.
        dropped_bytes: damaged bytes left out.
        before: the check that found the damage.
        after: a fresh check of the repaired spool.
    """

    rewritten: tuple[str, ...]
    kept_records: int
    kept_pending: int
    dropped_bytes: int
    before: FsckReport
    after: FsckReport


def repair(path: str | os.PathLike[str]) -> RepairReport:
    """Rewrite every damaged chunk file keeping each intact record and its ack state.

    Takes the directory locks (the spool's and its dead letters') for the duration: the spool
    must not be open elsewhere. Each damaged chunk is rebuilt in a temp file (a fresh header
    where the old one was damaged, then every intact frame copied byte for byte), fsynced and
    renamed over the original, so a crash leaves the old file or the new one. Damaged bytes
    are dropped.

    Raises:
        PathError: ``path`` is not a readable spool directory.
        LockedError: another process owns the spool (its pid is in the message).
        OSError: a chunk could not be rewritten (that chunk is left as it was).
    """
    p = spool_dir(path)
    dead_dir = os.path.join(p, DEAD_DIR)
    locks = [meta.DirLock(p)]
    try:
        if os.path.isdir(dead_dir):
            locks.append(meta.DirLock(dead_dir))
        before = fsck(p)
        rewritten: list[str] = []
        kept = kept_pending = dropped = 0
        for directory, prefix in ((p, ""), (dead_dir, DEAD_DIR + "/")):
            info = meta.read_meta(directory) or {}
            for name, data, scan in _walk(directory, prefix):
                if not scan.damage:
                    continue
                header = scan.header or _fresh_header(name, scan, info)
                parts = [framing.encode_chunk_header(header)]
                parts += [data[f.offset : f.end] for f in scan.frames]
                meta.replace_atomically(directory, os.path.basename(name), b"".join(parts))
                rewritten.append(name)
                kept += len(scan.frames)
                kept_pending += sum(1 for f in scan.frames if not f.acked)
                dropped += sum(d.length for d in scan.damage)
        after = fsck(p)
    finally:
        for lock in reversed(locks):
            lock.release()
    return RepairReport(tuple(rewritten), kept, kept_pending, dropped, before, after)


def _fresh_header(name: str, scan: _Scan, info: dict[str, Any]) -> ChunkHeader:
    index = parse_chunk_name(os.path.basename(name))
    assert index is not None
    uid = info.get("uid")
    raw_uid = bytes.fromhex(uid) if isinstance(uid, str) and len(uid) == 32 else bytes(16)
    ids = [f.record_id for f in scan.frames]
    chunksize = info.get("chunksize")
    capacity = chunksize if isinstance(chunksize, int) and chunksize > 0 else 1
    created = min((f.enqueued_at for f in scan.frames), default=time.time())
    return ChunkHeader(index, max(capacity, len(ids)), min(ids, default=0), raw_uid, created)
