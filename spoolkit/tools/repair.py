"""``spoolkit fsck --repair``: rewrite damaged chunk files keeping every intact record.

Unlike the readers in :mod:`spoolkit.tools.inspect`, this takes locks: each lane's own (a lane a
live process holds is skipped, and reported with that process's pid) and the dead letters'
(waited for, as every process of the spool does). Each damaged chunk file is rewritten with
every intact frame copied byte for byte, so pending records stay pending and acknowledged
ones stay acknowledged.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from spoolkit.deadletter import LOCK_TIMEOUT
from spoolkit.errors import LockedError
from spoolkit.queue import framing, meta
from spoolkit.queue.chunk import parse_chunk_name
from spoolkit.queue.framing import ChunkHeader
from spoolkit.queue.lanes import lane_paths
from spoolkit.queue.recovery import MIN_CHUNK_FILE, PAGE
from spoolkit.tools.inspect import DEAD_DIR, FsckReport, fsck
from spoolkit.tools.inspect_files import Scan, header_uid, lane_label, spool_dir, walk
from spoolkit.tools.inspect_reports import DEAD_PREFIX

__all__ = ["RepairReport", "repair"]


@dataclass(frozen=True, slots=True)
class RepairReport:
    """What :func:`repair` did.

    Attributes:
        rewritten: names of the chunk files rewritten (``q00001``, ``lanes/2/q00000``...).
        kept_records: intact records copied into them (acknowledged or not).
        kept_pending: of those, the ones not yet acknowledged.
        dropped_bytes: damaged bytes left out.
        before: the check that found the damage.
        after: a fresh check of the repaired spool.
        skipped: the lanes left alone because a live process held them: (lane number, the
            pid in its lock file).
        refused: the lanes whose damaged chunks were left as they were, and why: a chunk
            whose header is damaged needs the lane's uid (the first part of every record id)
            and none was left in any chunk header or ``meta.json`` (``new_uid=True`` writes a
            new one).
        new_uids: the lanes given a new uid because ``new_uid=True`` and none was left:
            (lane number, the new uid). Their records' ids changed.
    """

    rewritten: tuple[str, ...]
    kept_records: int
    kept_pending: int
    dropped_bytes: int
    before: FsckReport
    after: FsckReport
    skipped: tuple[tuple[int, int | None], ...] = ()
    refused: tuple[tuple[int, str], ...] = ()
    new_uids: tuple[tuple[int, str], ...] = ()

    @property
    def skipped_damage(self) -> bool:
        """Whether damage remains in a lane that was skipped (and only there)."""
        held = {number for number, _pid in self.skipped}
        damaged = {lane.number for lane in self.after.lanes if lane.damaged_regions}
        dead = any(c.damage for c in self.after.dead_chunks)
        return bool(damaged) and damaged <= held and not dead


@dataclass(slots=True)
class _Tally:
    rewritten: list[str]
    kept: int = 0
    pending: int = 0
    dropped: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)
    new_uids: list[tuple[int, str]] = field(default_factory=list)


def repair(path: str | os.PathLike[str], *, new_uid: bool = False) -> RepairReport:
    """Rewrite every damaged chunk file keeping each intact record and its ack state.

    Lane by lane, takes the lane's lock for the time it is checked and rewritten; a lane that
    a live process holds is skipped (see :attr:`RepairReport.skipped`). The dead letters' lock
    is waited for (up to 30 s, as every process of the spool does). Each damaged chunk is
    rebuilt in a temp file (a fresh header where the old one was damaged, then every intact
    frame copied byte for byte, then zeros to whole pages as spoolkit writes chunk files),
    fsynced and renamed over the original, so a crash leaves the old file or the new one.
    Damaged bytes are dropped.

    A fresh header carries the lane's uid, the first part of every record id (which
    idempotent sinks key on): taken from any intact chunk header of the lane (checksummed),
    else from a well-formed ``meta.json``. When neither is left the lane's damaged chunks are
    not rewritten (see :attr:`RepairReport.refused`) unless ``new_uid`` is true; then a new
    random uid is written (:attr:`RepairReport.new_uids`), never an invented constant.

    Raises:
        PathError: ``path`` is not a readable spool directory.
        LockedError: another process held the dead letters for over 30 s.
        OSError: a chunk could not be rewritten (that chunk is left as it was).
    """
    p = spool_dir(path)
    before = fsck(p)
    tally = _Tally([])
    skipped: list[tuple[int, int | None]] = []
    for lane in lane_paths(p):
        number, prefix = lane_label(p, lane)
        try:
            lock = meta.DirLock(lane)
        except LockedError as exc:
            skipped.append((number, exc.pid))
            continue
        try:
            _rewrite_damaged(lane, prefix, tally, number, new_uid=new_uid)
        finally:
            lock.release()
    dead_dir = os.path.join(p, DEAD_DIR)
    if os.path.isdir(dead_dir):
        lock = meta.DirLock(dead_dir, wait=LOCK_TIMEOUT)
        try:
            _rewrite_damaged(dead_dir, DEAD_PREFIX, tally, -1, new_uid=new_uid)
        finally:
            lock.release()
    after = fsck(p)
    return RepairReport(
        tuple(tally.rewritten),
        tally.kept,
        tally.pending,
        tally.dropped,
        before,
        after,
        tuple(skipped),
        tuple(tally.refused),
        tuple(tally.new_uids),
    )


def _rewrite_damaged(
    directory: str, prefix: str, tally: _Tally, number: int, *, new_uid: bool
) -> None:
    """Rewrite each damaged chunk file of ``directory`` (whose lock this process holds).

    ``number`` names the lane in the report (-1: the dead letters).
    """
    info = meta.read_meta(directory) or {}
    found = list(walk(directory, prefix))
    damaged = [(name, data, scan) for name, data, scan in found if scan.damage]
    if not damaged:
        return
    text = header_uid(found, directory)
    uid = bytes.fromhex(text) if text is not None else None
    if uid is None and any(scan.header is None for _n, _d, scan in damaged):
        if not new_uid:
            tally.refused.append(
                (
                    number,
                    f"no intact chunk header and no meta.json of {directory} holds its uid, "
                    "the first part of every record id: rewriting would change the ids. "
                    "Rerun with --new-uid to write a new uid anyway (sinks that key on "
                    "record ids then see new ids)",
                )
            )
            return
        uid = os.urandom(16)
        tally.new_uids.append((number, uid.hex()))
    for name, data, scan in damaged:
        if scan.header is not None:
            header = scan.header
        else:
            assert uid is not None
            header = _fresh_header(name, scan, info, uid)
        parts = [framing.encode_chunk_header(header)]
        parts += [data[f.offset : f.end] for f in scan.frames]
        body = b"".join(parts)
        size = max(MIN_CHUNK_FILE, -(-len(body) // PAGE) * PAGE)
        meta.replace_atomically(directory, os.path.basename(name), body + bytes(size - len(body)))
        tally.rewritten.append(name)
        tally.kept += len(scan.frames)
        tally.pending += sum(1 for f in scan.frames if not f.acked)
        tally.dropped += sum(d.length for d in scan.damage)


def _fresh_header(name: str, scan: Scan, info: dict[str, Any], uid: bytes) -> ChunkHeader:
    index = parse_chunk_name(os.path.basename(name))
    assert index is not None
    ids = [f.record_id for f in scan.frames]
    chunksize = info.get("chunksize")
    capacity = 1
    if isinstance(chunksize, int) and not isinstance(chunksize, bool) and chunksize > 0:
        capacity = min(chunksize, 0xFFFF_FFFF)  # a damaged meta.json's huge number: capped
    created = min((f.enqueued_at for f in scan.frames), default=time.time())
    first = min(ids, default=0)
    return ChunkHeader(index, max(capacity, len(ids)), first, uid, created)
