"""The disk store: chunk files, the records in them, acknowledgements and fsync.

Not thread-safe by itself: callers hold ``store.lock`` around every method except :meth:`sync`
and :meth:`close`, which take it themselves. The blocking conditions of the queue live here
too, so that closing a store (or a newer instance taking the directory over) wakes every
waiter.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import threading
import time
import weakref
from collections import deque
from zlib import crc32 as _crc

from spoolkit._disk import framing, meta, migrate
from spoolkit._disk.framing import (
    ACK_OFFSET,
    CHUNK_HEADER_SIZE,
    FIELDS,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    MAGIC,
    U32,
    ChunkHeader,
)
from spoolkit._disk.perms import make_private_dir
from spoolkit._disk.recovery import scan_chunk
from spoolkit._disk.segment import FREE_PREFIX, Segment, chunk_name, parse_chunk_name
from spoolkit._log import get_logger
from spoolkit.errors import ClosedError, ConfigError, FormatError, PathError, RecordTooLargeError

_ZERO4 = b"\0\0\0\0"
_OPEN: dict[str, weakref.ref[Store]] = {}
_OPEN_LOCK = threading.Lock()
FSYNC_MODES = ("always", "interval", "never")
FREE_CHUNKS = 4  # fully acknowledged chunk files kept mapped for reuse as new chunks


class RecoveryReport:
    """What opening the store found: damage skipped, records recovered."""

    __slots__ = ("damaged_bytes", "damaged_regions", "pending", "skipped_chunks")

    def __init__(self) -> None:
        self.pending = 0
        self.damaged_regions = 0
        self.damaged_bytes = 0
        self.skipped_chunks = 0


class Store:
    """Chunk files under one directory, owned by this process through an OS file lock."""

    def __init__(
        self,
        path: str,
        *,
        chunksize: int,
        serializer_name: str,
        fsync: str,
        fsync_interval: float,
        max_record_bytes: int,
        tempdir: str | None,
    ) -> None:
        if fsync not in FSYNC_MODES:
            raise ConfigError(f"fsync={fsync!r} is not one of {FSYNC_MODES}")
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ConfigError(f"chunksize must be a positive int, got {chunksize!r}")
        if fsync_interval <= 0:
            raise ConfigError(f"fsync_interval must be > 0 seconds, got {fsync_interval!r}")
        if max_record_bytes < 1 or max_record_bytes > 0xFFFF_FFFF:
            raise ConfigError("max_record_bytes must be between 1 and 4 GiB - 1")
        self.path = _prepare_dir(path)
        if tempdir is not None:
            _check_tempdir(tempdir, self.path)
        self.tempdir = tempdir
        self.chunksize = chunksize
        self.fsync = fsync
        self.max_record_bytes = max_record_bytes
        self.lock = threading.Lock()
        self.not_empty = threading.Condition(self.lock)
        self.not_full = threading.Condition(self.lock)
        self.all_done = threading.Condition(self.lock)
        self.closed = False
        self.closed_reason = ""
        self.gen = 0  # bumped by every change that an fsync should cover
        self.pending_total = 0
        self.bytes_used = 0
        self.next_id = 0
        self.report = RecoveryReport()
        self.fsync_errors = 0
        self._segs: dict[int, Segment] = {}
        self._unread: deque[Segment] = deque()
        self._head: Segment | None = None
        self._redeliver: list[tuple[int, int]] = []
        self._dirty: set[Segment] = set()
        self._unlink_later: list[str] = []
        self._free: list[Segment] = []  # fully acknowledged chunks kept for reuse
        self._dir_dirty = False
        self._synced = 0
        self._sync_cond = threading.Condition(threading.Lock())
        self._syncing = False
        self._avg_frame = 256
        self._log = get_logger(path=self.path)
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        _take_over(self.path)
        self._dirlock = meta.DirLock(self.path)
        try:
            self._open(serializer_name)
        except BaseException:
            self._close_files()
            raise
        with _OPEN_LOCK:
            _OPEN[self.path] = weakref.ref(self)
        if fsync == "interval":
            self._flusher = threading.Thread(
                target=_flush_loop, args=(self, fsync_interval), name="spoolkit-fsync", daemon=True
            )
            self._flusher.start()

    # -- opening -----------------------------------------------------------------------------

    def _open(self, serializer_name: str) -> None:
        migrated = migrate.pending_pqueue_items(self.path, serializer_name)
        info = meta.read_meta(self.path)
        for name in os.listdir(self.path):
            if name.endswith(meta.TMP_SUFFIX) or name.startswith(FREE_PREFIX):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.path, name))
        indexes = sorted(
            i for i in (parse_chunk_name(n) for n in os.listdir(self.path)) if i is not None
        )
        if migrated is not None:
            for i in indexes:  # a migration that did not finish: start it again
                os.unlink(os.path.join(self.path, chunk_name(i)))
            indexes, info = [], None
        if info is not None and int(info.get("format", 0)) > framing.FORMAT_VERSION:
            raise FormatError(
                f"spool at {self.path!r} uses format {info['format']}, newer than this "
                f"spoolkit reads ({framing.FORMAT_VERSION}); upgrade spoolkit",
                self.path,
            )
        meta_uid = bytes.fromhex(info["uid"]) if info and _valid_uid(info.get("uid")) else None
        uid = None  # a chunk header's (checksummed) wins over meta.json's (which is not)
        for i in indexes:
            uid = self._recover_chunk(i, uid, last=i == indexes[-1], fallback=meta_uid)
        self.uid = uid or meta_uid or os.urandom(16)
        self._check_serializer(info, serializer_name)
        fresh = {
            "format": framing.FORMAT_VERSION,
            "uid": self.uid.hex(),
            "serializer": serializer_name,
            "chunksize": self.chunksize,
        }
        if (
            info is None
            or info.get("serializer") != serializer_name
            or info.get("uid") != self.uid.hex()
        ):
            meta.write_meta(self.path, fresh, self.tempdir)
        if self._head is None:
            self._roll()
        if migrated is not None:
            now = time.time()
            for payload in migrated:
                self.append(payload, None, now)
            self._sync_all()
            meta.write_meta(self.path, {**fresh, "migrated_from_pqueue": True}, self.tempdir)
            migrate.finish(self.path)
        r = self.report
        r.pending = self.pending_total
        if r.damaged_regions or r.skipped_chunks:
            self._log.warning(
                "recovered_with_damage",
                damaged_regions=r.damaged_regions,
                damaged_bytes=r.damaged_bytes,
                skipped_chunks=r.skipped_chunks,
                pending=r.pending,
            )

    def _check_serializer(self, info: dict[str, object] | None, name: str) -> None:
        was = info.get("serializer") if info else None
        builtin = ("pickle", "json", "raw")
        if was in builtin and name in builtin and was != name and self.pending_total:
            raise ConfigError(
                f"spool at {self.path!r} holds {self.pending_total} record(s) written with "
                f"serializer={was!r}; open it with serializer={was!r} (or drain it first)"
            )

    def _recover_chunk(
        self, index: int, uid: bytes | None, *, last: bool, fallback: bytes | None = None
    ) -> bytes | None:
        seg = Segment(os.path.join(self.path, chunk_name(index)), index)
        try:
            seg.open()
        except OSError as exc:
            self._log.warning("chunk_unreadable", chunk=seg.path, error=str(exc))
            self.report.skipped_chunks += 1
            return uid
        assert seg.mm is not None
        scan = scan_chunk(seg.mm, index, self.max_record_bytes)
        h = scan.header
        if h is not None and h.version > framing.FORMAT_VERSION:
            seg.close()
            raise FormatError(
                f"chunk {seg.path!r} uses format {h.version}; upgrade spoolkit", self.path
            )
        if h is not None:
            uid = uid or h.uid
            self.next_id = max(self.next_id, h.first_id + h.capacity)
        self.next_id = max(self.next_id, scan.max_id + 1)
        self.report.damaged_regions += len(scan.damage)
        self.report.damaged_bytes += scan.damaged_bytes
        if scan.frames:
            self._avg_frame = max(64, scan.used // scan.frames)
        if not last and not scan.pending:
            seg.delete()
            return uid
        seg.capacity = h.capacity if h is not None else self.chunksize
        seg.first_id = h.first_id if h is not None else self.next_id
        seg.count = scan.frames
        seg.used = scan.used
        seg.unacked = len(scan.pending)
        self.pending_total += seg.unacked
        self.bytes_used += seg.used
        self._segs[index] = seg
        self._unread.append(seg)
        if last:
            self._head = seg
            seg.wpos = scan.end
            _zero_tail(seg, scan.end)
            if h is None:
                seg.mm[0:CHUNK_HEADER_SIZE] = framing.encode_chunk_header(
                    ChunkHeader(
                        index,
                        seg.capacity,
                        seg.first_id,
                        uid or fallback or b"\0" * 16,
                        time.time(),
                    )
                )
            seg.pending = deque(scan.pending)
            seg.loaded = True
        else:
            seg.pending = deque(scan.pending)
            seg.loaded = True
            if len(self._unread) > 1:
                seg.unload()
        return uid

    # -- writing -----------------------------------------------------------------------------

    def _roll(self) -> Segment:
        old = self._head
        index = old.index + 1 if old is not None else 0
        header = ChunkHeader(index, self.chunksize, self.next_id, self.uid, time.time())
        seg = None
        if self._free:
            seg = self._free.pop()
            try:
                seg.recycle(self.path, header)
            except OSError as exc:
                self._log.warning("chunk_recycle_failed", chunk=seg.path, error=str(exc))
                seg.delete()
                seg = None
        if seg is None:
            initial = CHUNK_HEADER_SIZE + self.chunksize * self._avg_frame * 5 // 4
            seg = Segment.create(self.path, header, initial)
        self._segs[index] = seg
        self._unread.append(seg)
        self._head = seg
        self._dir_dirty = True
        if old is not None:
            if old.used:
                self._avg_frame = max(64, old.used // max(1, old.count))
            if old is not self._unread[0]:
                old.unload()  # nothing in it was handed out yet: reload when the reader gets here
            self._maybe_delete(old)
        return seg

    def append(self, payload: bytes, record_id: int | None, enqueued_at: float) -> int:
        """Store one encoded record; returns its id.

        Raises:
            RecordTooLargeError: the payload is over ``max_record_bytes``.
            OSError: no space could be reserved for it (the store is unchanged).
        """
        n = len(payload)
        if n > self.max_record_bytes:
            raise RecordTooLargeError(n, self.max_record_bytes)
        seg = self._head
        assert seg is not None
        if seg.count >= seg.capacity:
            seg = self._roll()
        start = seg.wpos
        end = start + FRAME_HEADER_SIZE + n
        if end > seg.size:
            seg.grow(end)
        if record_id is None:
            record_id = self.next_id
            self.next_id = record_id + 1
        fields = FIELDS.pack(n, record_id, enqueued_at)
        crc = _crc(payload, _crc(fields, seg.index))
        assert seg.mm is not None
        seg.mm[start:end] = b"".join((MAGIC, fields, U32.pack(crc), _ZERO4, payload))
        seg.pending.append(start)
        seg.wpos = end
        seg.count += 1
        seg.unacked += 1
        seg.used += end - start
        self.pending_total += 1
        self.bytes_used += end - start
        self.gen += 1
        self._dirty.add(seg)
        return record_id

    def append_many(self, payloads: list[bytes], enqueued_at: float) -> None:
        """Store many encoded records, one memory copy per chunk they land in."""
        limit = self.max_record_bytes
        for p in payloads:
            if len(p) > limit:
                raise RecordTooLargeError(len(p), limit)
        i, total = 0, len(payloads)
        fields_pack, u32_pack = FIELDS.pack, U32.pack
        while i < total:
            seg = self._head
            assert seg is not None
            if seg.count >= seg.capacity:
                seg = self._roll()
            room = seg.capacity - seg.count
            batch = payloads[i : i + room]
            size = sum(map(len, batch)) + FRAME_HEADER_SIZE * len(batch)
            start = seg.wpos
            if start + size > seg.size:
                seg.grow(start + size)
            parts: list[bytes] = []
            add = parts.extend
            offsets: list[int] = []
            mark = offsets.append
            pos, rid, seed = start, self.next_id, seg.index
            for p in batch:
                n = len(p)
                fields = fields_pack(n, rid, enqueued_at)
                add((MAGIC, fields, u32_pack(_crc(p, _crc(fields, seed))), _ZERO4, p))
                mark(pos)
                pos += FRAME_HEADER_SIZE + n
                rid += 1
            seg.pending.extend(offsets)
            assert seg.mm is not None
            seg.mm[start:pos] = b"".join(parts)
            count = len(batch)
            self.next_id = rid
            seg.wpos = pos
            seg.count += count
            seg.unacked += count
            seg.used += size
            self.pending_total += count
            self.bytes_used += size
            self.gen += 1
            self._dirty.add(seg)
            i += count

    # -- reading and acknowledging -----------------------------------------------------------

    def take(self) -> tuple[Segment, int] | None:
        """Hand out the next pending record's position: redeliveries first, then in order."""
        if self._redeliver:
            index, off = heapq.heappop(self._redeliver)
            self.pending_total -= 1
            return self._segs[index], off
        unread = self._unread
        while True:
            seg = unread[0]
            if seg.pending:
                self.pending_total -= 1
                return seg, seg.pending.popleft()
            if seg is self._head:
                return None
            unread.popleft()
            self._maybe_delete(seg)
            if not unread[0].loaded:
                self._load(unread[0])

    def take_run(self, n: int) -> tuple[Segment, list[int]] | None:
        """Hand out up to ``n`` pending positions from one chunk (as :meth:`take`, in bulk).

        A redelivery comes alone (the heap orders them across chunks); otherwise the offsets
        are the next ones of the oldest chunk with records waiting.
        """
        if self._redeliver:
            index, off = heapq.heappop(self._redeliver)
            self.pending_total -= 1
            return self._segs[index], [off]
        unread = self._unread
        while True:
            seg = unread[0]
            pending = seg.pending
            if pending:
                if n >= len(pending):
                    offs = list(pending)
                    pending.clear()
                else:
                    pop = pending.popleft
                    offs = [pop() for _ in range(n)]
                self.pending_total -= len(offs)
                return seg, offs
            if seg is self._head:
                return None
            unread.popleft()
            self._maybe_delete(seg)
            if not unread[0].loaded:
                self._load(unread[0])

    def _load(self, seg: Segment) -> None:
        try:
            seg.reload()
        except OSError as exc:  # the file went away or became unreadable under us
            self._log.error("chunk_unreadable", chunk=seg.path, error=str(exc))
            self.pending_total -= seg.unacked
            seg.unacked = 0
            seg.pending.clear()
            seg.parked = None
            seg.loaded = True

    @staticmethod
    def read(seg: Segment, off: int) -> tuple[int, float, int, bytes]:
        """Return ``(record_id, enqueued_at, crc, payload)`` of the frame at ``off``."""
        mm = seg.mm
        assert mm is not None
        _m, n, rid, t, crc, _a = FRAME_HEADER.unpack_from(mm, off)
        body = off + FRAME_HEADER_SIZE
        return rid, t, crc, mm[body : body + n]

    def peek_time(self) -> float | None:
        """``enqueued_at`` of the next record :meth:`take` would hand out."""
        if self._redeliver:
            index, off = self._redeliver[0]
            return self.read(self._segs[index], off)[1]
        for seg in self._unread:
            if seg.pending:
                return self.read(seg, seg.pending[0])[1]
            if seg.unacked and not seg.loaded:
                self._load(seg)
                if seg.pending:
                    return self.read(seg, seg.pending[0])[1]
        return None

    def ack(self, seg: Segment, off: int, crc: int) -> None:
        """Mark the frame at ``off`` acknowledged; delete its chunk once all of it is."""
        assert seg.mm is not None
        seg.mm[off + ACK_OFFSET : off + FRAME_HEADER_SIZE] = U32.pack(crc ^ framing.ACK_MASK)
        seg.unacked -= 1
        self.gen += 1
        self._dirty.add(seg)
        if seg.unacked == 0:
            self._maybe_delete(seg)

    def ack_run(self, seg: Segment, marks: list[tuple[int, int]]) -> None:
        """:meth:`ack` for several ``(offset, crc)`` frames of one chunk."""
        mm = seg.mm
        assert mm is not None
        pack, mask = U32.pack, framing.ACK_MASK
        for off, crc in marks:
            mm[off + ACK_OFFSET : off + FRAME_HEADER_SIZE] = pack(crc ^ mask)
        seg.unacked -= len(marks)
        self.gen += 1
        self._dirty.add(seg)
        if seg.unacked == 0:
            self._maybe_delete(seg)

    def nack(self, seg: Segment, off: int) -> None:
        """Hand the record at ``off`` out again, before newer records."""
        heapq.heappush(self._redeliver, (seg.index, off))
        self.pending_total += 1

    def _maybe_delete(self, seg: Segment) -> None:
        if seg.unacked or seg is self._head or seg.deleted:
            return
        unread = self._unread
        if unread and seg is unread[0]:
            if seg.pending:
                return
            unread.popleft()  # fully handed out and acknowledged: the reader moves on
            if not unread[0].loaded:
                self._load(unread[0])
        self._segs.pop(seg.index, None)
        self._dirty.discard(seg)
        self.bytes_used -= seg.used
        if seg.recyclable and seg.mm is not None and len(self._free) < FREE_CHUNKS:
            try:
                seg.retire(self.path, seg.index)
            except OSError as exc:
                self._log.warning("chunk_retire_failed", chunk=seg.path, error=str(exc))
            else:
                self._free.append(seg)  # its file becomes a later chunk: see _roll
                self._dir_dirty = True
                return
        seg.delete(unlink=False)
        if self._flusher is not None:
            self._unlink_later.append(seg.path)
        else:
            self._unlink(seg.path)
        self._dir_dirty = True

    def _unlink(self, path: str) -> None:
        """Remove a fully acknowledged chunk file; if that fails, the next open removes it."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._log.warning("chunk_unlink_failed", chunk=path, error=str(exc))

    # -- durability --------------------------------------------------------------------------

    def sync(self, upto: int | None = None) -> None:
        """``fsync`` what changed since the last sync; concurrent callers share one fsync.

        Group commit: one caller (the leader) fsyncs everything written so far while the
        others wait; when it is done, every waiter whose write it covered returns at once.

        Args:
            upto: the generation the caller needs covered; ``None`` for everything so far.
        """
        with self._sync_cond:
            if upto is None:
                upto = self.gen
            while self._syncing:
                if self._synced >= upto:
                    return
                self._sync_cond.wait()
            if self._synced >= upto:
                return
            self._syncing = True
        target = self._synced
        try:
            with self.lock:
                target = self.gen
                segs = list(self._dirty)
                self._dirty.clear()
                dir_dirty, self._dir_dirty = self._dir_dirty, False
            try:
                for seg in segs:
                    seg.sync()
                if dir_dirty:
                    meta.fsync_dir(self.path)
            except BaseException:
                with self.lock:
                    self._dirty.update(s for s in segs if not s.deleted)
                    self._dir_dirty |= dir_dirty
                target = self._synced
                raise
        finally:
            with self._sync_cond:
                self._syncing = False
                self._synced = max(self._synced, target)
                self._sync_cond.notify_all()

    def unlink_deferred(self) -> None:
        """Remove the files of chunks deleted since the last call (off the ack path).

        A crash before that leaves fully acknowledged chunks, which the next open removes.
        """
        with self.lock:
            paths, self._unlink_later = self._unlink_later, []
        for path in paths:
            self._unlink(path)
        if paths:
            with self.lock:
                self._dir_dirty = True

    def _sync_all(self) -> None:
        for seg in self._segs.values():
            if seg.fd >= 0:
                seg.sync()
        meta.fsync_dir(self.path)

    # -- closing -----------------------------------------------------------------------------

    def close(self, reason: str = "closed") -> None:
        """Persist (unless ``fsync="never"``), unmap, release the lock. Idempotent."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.closed_reason = reason
            self.not_empty.notify_all()
            self.not_full.notify_all()
            self.all_done.notify_all()
        self._stop.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join()
        self.unlink_deferred()
        try:
            if self.fsync != "never":
                self.sync()
        finally:
            with self.lock:
                self._close_files()
            with _OPEN_LOCK:
                ref = _OPEN.get(self.path)
                if ref is not None and ref() is self:
                    del _OPEN[self.path]

    def _close_files(self) -> None:
        for seg in self._free:
            seg.delete()
        self._free.clear()
        for seg in self._segs.values():
            seg.close()
        self._segs.clear()
        self._unread.clear()
        self._dirlock.release()

    def check_open(self) -> None:
        """Raise :class:`ClosedError` if closed (call with the lock held)."""
        if self.closed:
            raise ClosedError(f"queue at {self.path!r} was {self.closed_reason}")


def _flush_loop(store: Store, interval: float) -> None:
    log = store._log
    while not store._stop.wait(interval):
        try:
            store.unlink_deferred()
            store.sync()
        except OSError as exc:
            store.fsync_errors += 1
            log.error("background_fsync_failed", error=str(exc))


def _take_over(path: str) -> None:
    with _OPEN_LOCK:
        ref = _OPEN.get(path)
    other = ref() if ref is not None else None
    if other is not None:
        other.close("taken over by a newer Queue on the same path in this process")


def _valid_uid(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value)
    )


def _zero_tail(seg: Segment, start: int) -> None:
    mm = seg.mm
    assert mm is not None
    step = 1 << 20
    for pos in range(start, seg.size, step):
        end = min(pos + step, seg.size)
        if any(mm[pos:end]):
            mm[pos:end] = bytes(end - pos)


def _prepare_dir(path: str) -> str:
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise PathError(f"spool path {path!r} is a file, not a directory; choose a directory", path)
    try:
        make_private_dir(path)
    except OSError as exc:
        raise PathError(f"cannot create spool directory {path!r}: {exc.strerror}", path) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise PathError(f"spool directory {path!r} is not writable by this user", path)
    return os.path.realpath(path)


def _check_tempdir(tempdir: str, path: str) -> None:
    if not os.path.isdir(tempdir):
        raise PathError(f"tempdir {tempdir!r} is not a directory", tempdir)
    if os.stat(tempdir).st_dev != os.stat(path).st_dev:
        raise PathError(
            f"tempdir {tempdir!r} is on another filesystem than {path!r}; an atomic rename "
            "needs both on the same one",
            tempdir,
        )
