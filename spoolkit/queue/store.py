"""The disk store: chunk files, the records in them and their acknowledgements.

Not thread-safe by itself: callers hold ``store.lock`` around every method except :meth:`close`,
which takes it itself. What an fsync must cover is marked in :attr:`Store.durability`
(:mod:`spoolkit.queue.durability`), whose ``sync`` takes the lock itself. The blocking
conditions of the queue live here too, so that closing a store (or a newer instance taking the
directory over) wakes every waiter.
"""

from __future__ import annotations

import errno
import heapq
import os
import threading
import time
from collections import deque
from zlib import crc32 as _crc

from spoolkit._internal.log import get_logger
from spoolkit.errors import ClosedError, ConfigError, RecordTooLargeError
from spoolkit.queue import framing, meta
from spoolkit.queue.chunk import Chunk
from spoolkit.queue.durability import Durability
from spoolkit.queue.framing import (
    ACK_OFFSET,
    CHUNK_HEADER_SIZE,
    FIELDS,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    MAGIC,
    U32,
    ChunkHeader,
)
from spoolkit.queue.ioerrors import storage_error
from spoolkit.queue.opening import (
    RecoveryReport,
    check_tempdir,
    open_store,
    prepare_dir,
    register,
    take_over,
    unregister,
)

_ZERO4 = b"\0\0\0\0"
_HEADER = FRAME_HEADER_SIZE
_pack_fields = FIELDS.pack
_pack_u32 = U32.pack
_join = b"".join
_JOIN_CRC = 2048  # payloads shorter than this are checksummed with their header in one call
FSYNC_MODES = ("always", "interval", "never")
FREE_CHUNKS = 4  # fully acknowledged chunk files kept mapped for reuse as new chunks
FREE_CHUNK_BYTES = 16 * 1024 * 1024  # a larger one is deleted: it would hold space it may not need
OPEN_HANDED_OUT = 32
"""The most chunks kept open only because records handed out of them wait for acknowledgement
(two descriptors each: the file's and its map's). Past it, the least recently used is closed,
and opened again when its records are acknowledged or redelivered: ``get()`` without
``task_done()`` (common in pqueue code) must not run the process out of file descriptors."""


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
        lock_timeout: float = 0.0,
    ) -> None:
        if fsync not in FSYNC_MODES:
            raise ConfigError(f"fsync={fsync!r} is not one of {FSYNC_MODES}")
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ConfigError(f"chunksize must be a positive int, got {chunksize!r}")
        if fsync_interval <= 0:
            raise ConfigError(f"fsync_interval must be > 0 seconds, got {fsync_interval!r}")
        if max_record_bytes < 1 or max_record_bytes > 0xFFFF_FFFF:
            raise ConfigError("max_record_bytes must be between 1 and 4 GiB - 1")
        self.path = prepare_dir(path)
        if tempdir is not None:
            check_tempdir(tempdir, self.path)
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
        self.gen = 0  # bumped by each change an fsync should cover, new records aside: generation
        self.pending_total = 0
        self._sealed_bytes = 0  # bytes_used of every chunk but the head
        self.next_id = 0
        self.uid = b""  # set by open_store: a random id of the directory, kept in chunk headers
        self.uid_hex = ""  # uid in hex, as record ids show it: set with uid
        self.report = RecoveryReport()
        self._chunks: dict[int, Chunk] = {}
        self._unread: deque[Chunk] = deque()
        self._head: Chunk | None = None
        self._redeliver: list[tuple[int, int]] = []
        self._free: list[Chunk] = []  # fully acknowledged chunks kept for reuse
        self._handed_open: dict[Chunk, None] = {}  # open for acks only, least recent first
        self._avg_frame = 256
        self._log = get_logger(path=self.path)
        self.durability = Durability(
            self.path,
            self.lock,
            self._log,
            generation=self.generation,
            appended=lambda: self.next_id,
            head=lambda: self._head,
        )
        self._dirty = self.durability.dirty  # the same set: marked on acks and rolls
        take_over(self.path)
        self._dirlock = meta.DirLock(self.path, lock_timeout)
        try:
            open_store(self, serializer_name)
        except BaseException:
            self._close_files()
            raise
        register(self)
        if fsync == "interval":
            self.durability.start(fsync_interval)

    @property
    def bytes_used(self) -> int:
        """Bytes of the intact frames of every chunk not yet deleted (what ``max_bytes`` caps)."""
        head = self._head
        return self._sealed_bytes + (head.used if head is not None else 0)

    def generation(self) -> int:
        """A number that moves with every change an fsync should cover (read with the lock).

        New records move ``next_id``, everything else ``gen``, so that a put, which moves
        ``next_id`` anyway, updates nothing more.
        """
        return self.next_id + self.gen

    # -- writing -----------------------------------------------------------------------------

    def _roll(self) -> Chunk:
        old = self._head
        index = old.index + 1 if old is not None else 0
        header = ChunkHeader(index, self.chunksize, self.next_id, self.uid, time.time())
        chunk = None
        if self._free:
            chunk = self._free.pop()
            try:
                chunk.recycle(self.path, header)
            except OSError as exc:
                self._log.warning("chunk_recycle_failed", chunk=chunk.path, error=str(exc))
                chunk.delete()
                chunk = None
        if chunk is None:
            chunk = self._create(header)
        self._chunks[index] = chunk
        self._unread.append(chunk)
        self._head = chunk
        self.durability.dir_dirty = True
        if old is not None:
            if self.next_id != self.durability.synced_appended:  # appends leave no mark
                self._dirty.add(old)
            used = old.used
            self._sealed_bytes += used
            if used:
                self._avg_frame = max(64, used // max(1, old.count))
            if old is not self._unread[0]:
                old.unload()  # nothing in it was handed out yet: reload when the reader gets here
            self._maybe_delete(old)
        return chunk

    def _initial_bytes(self) -> int:
        """The size a new chunk is given: its records at the average frame size, plus a quarter."""
        return CHUNK_HEADER_SIZE + self.chunksize * self._avg_frame * 5 // 4

    def _create(self, header: ChunkHeader) -> Chunk:
        """A new chunk file; on a full disk, after reclaiming space, at the least size a chunk
        has (it then grows record by record).

        Raises:
            OSError: not even that could be reserved; no file is left behind.
        """
        size = self._initial_bytes()
        for attempt in range(3):
            try:
                return Chunk.create(self.path, header, size)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or attempt == 2:
                    raise
                if attempt == 0:
                    self._reclaim()
                else:
                    size = 0
        raise AssertionError("unreachable")

    def _reclaim(self) -> bool:
        """Give back the disk space of deleted chunks at once: the files kept for reuse and
        those whose removal was left to the background flusher. False if there was none."""
        durability = self.durability
        unlink, durability.unlink_later = durability.unlink_later, []
        for path in unlink:
            durability.unlink(path)
        for chunk in self._free:
            chunk.delete()
        reclaimed = bool(unlink or self._free)
        self._free.clear()
        durability.dir_dirty |= reclaimed
        return reclaimed

    def _make_room(self, chunk: Chunk, size: int) -> Chunk:
        """The chunk to write ``size`` bytes into at its ``wpos``, when ``chunk`` (the head) has
        no room for them.

        A head whose records are all acknowledged is not grown but rolled: the new chunk starts
        small and the old one is deleted, so a chunk grown large once (a burst, a full disk)
        does not stay large. Otherwise the head grows; if the disk is full, the files kept for
        reuse are deleted and the growth tried again.

        Raises:
            OSError: no space could be reserved (the store is unchanged).
        """
        if chunk.count and not chunk.unacked:
            chunk = self._roll()
        end = chunk.wpos + size
        if end > chunk.size:
            try:
                chunk.grow(end)
            except OSError:
                if not self._reclaim():
                    raise
                chunk.grow(end)
        return chunk

    def append(self, payload: bytes, record_id: int | None, enqueued_at: float) -> int:
        """Store one encoded record; returns its id.

        Raises:
            RecordTooLargeError: the payload is over ``max_record_bytes``.
            OSError: no space could be reserved for it (the store is unchanged).
        """
        n = len(payload)
        if n > self.max_record_bytes:
            raise RecordTooLargeError(n, self.max_record_bytes)
        chunk = self._head
        assert chunk is not None
        if chunk.count >= chunk.capacity:
            chunk = self._roll()
        start = chunk.wpos
        end = start + _HEADER + n
        if end > chunk.size:
            chunk = self._make_room(chunk, end - start)
            start = chunk.wpos
            end = start + _HEADER + n
        if record_id is None:
            record_id = self.next_id
            self.next_id = record_id + 1  # moves the generation, and marks the head: see durability
        else:
            self.gen += 1
            self._dirty.add(chunk)
        fields = _pack_fields(n, record_id, enqueued_at)
        # a short payload is checksummed with its fields in one call over a joined copy: the
        # same value as two chained calls, for less (the threshold, _JOIN_CRC: benchmarks.md)
        crc = (
            _crc(fields + payload, chunk.index)
            if n < _JOIN_CRC
            else _crc(payload, _crc(fields, chunk.index))
        )
        mm = chunk.mm
        assert mm is not None
        mm[start:end] = _join((MAGIC, fields, _pack_u32(crc), _ZERO4, payload))
        chunk.pending.append(start)
        chunk.wpos = end
        chunk.count += 1  # unacked and used are derived from count and wpos: see Chunk
        self.pending_total += 1  # no dirty mark: a sync covers the head when next_id moved
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
            chunk = self._head
            assert chunk is not None
            if chunk.count >= chunk.capacity:
                chunk = self._roll()
            room = chunk.capacity - chunk.count
            batch = payloads[i : i + room]
            size = sum(map(len, batch)) + FRAME_HEADER_SIZE * len(batch)
            start = chunk.wpos
            if start + size > chunk.size:
                grown = self._make_room(chunk, size)
                if grown is not chunk:  # rolled: the new chunk has room for a chunk's worth
                    continue
                start = chunk.wpos
            parts: list[bytes] = []
            add = parts.extend
            offsets: list[int] = []
            mark = offsets.append
            pos, rid, seed = start, self.next_id, chunk.index
            for p in batch:
                n = len(p)
                fields = fields_pack(n, rid, enqueued_at)
                crc = _crc(fields + p, seed) if n < _JOIN_CRC else _crc(p, _crc(fields, seed))
                add((MAGIC, fields, u32_pack(crc), _ZERO4, p))
                mark(pos)
                pos += FRAME_HEADER_SIZE + n
                rid += 1
            chunk.pending.extend(offsets)
            assert chunk.mm is not None
            chunk.mm[start:pos] = b"".join(parts)
            count = len(batch)
            self.next_id = rid
            chunk.wpos = pos
            chunk.count += count
            self.pending_total += count  # no dirty mark, as in append
            i += count

    # -- reading and acknowledging -----------------------------------------------------------

    def take_run(self, n: int) -> tuple[Chunk, list[int]] | None:
        """Hand out up to ``n`` pending positions from one chunk: redeliveries first, then in order.

        A redelivery comes alone (the heap orders them across chunks); otherwise the offsets
        are the next ones of the oldest chunk with records waiting.
        """
        if self._redeliver:
            index, off = heapq.heappop(self._redeliver)
            self.pending_total -= 1
            chunk = self._chunks[index]
            if chunk.mm is None:
                self.reopen(chunk)
            return chunk, [off]
        unread = self._unread
        while True:
            chunk = unread[0]
            pending = chunk.pending
            if pending:
                if n >= len(pending):
                    offs = list(pending)
                    pending.clear()
                else:
                    pop = pending.popleft
                    offs = [pop() for _ in range(n)]
                self.pending_total -= len(offs)
                return chunk, offs
            if chunk is self._head:
                return None
            unread.popleft()
            self._maybe_delete(chunk)
            if not chunk.deleted:  # records of it are handed out: open for their acks only
                self._keep_open(chunk)
            if not unread[0].loaded:
                self._load(unread[0])

    def take_one(self) -> tuple[Chunk, int] | None:
        """Hand out the next pending position, as ``take_run(1)`` would, without its list."""
        if not self._redeliver:
            chunk = self._unread[0]
            pending = chunk.pending
            if pending:
                self.pending_total -= 1
                return chunk, pending.popleft()
        run = self.take_run(1)
        return None if run is None else (run[0], run[1][0])

    def _keep_open(self, chunk: Chunk) -> None:
        """Count ``chunk`` among the chunks open for acknowledgements only, as the most recent;
        close the least recent past :data:`OPEN_HANDED_OUT`."""
        handed = self._handed_open
        handed.pop(chunk, None)
        handed[chunk] = None
        if len(handed) > OPEN_HANDED_OUT:
            oldest = next(iter(handed))
            del handed[oldest]
            oldest.unload()  # writes stay in the page cache; a sync goes by path

    def reopen(self, chunk: Chunk) -> None:
        """Map again a chunk closed by :meth:`_keep_open`, to acknowledge or redeliver records.

        Raises:
            StorageError: the file cannot be opened again (gone, or out of descriptors).
        """
        try:
            chunk.reload()
        except OSError as exc:
            raise storage_error(
                exc,
                self.path,
                f"cannot open chunk {os.path.basename(chunk.path)} again",
                "its records handed out stay on disk and are delivered again after a restart",
            ) from exc
        self._keep_open(chunk)

    def _load(self, chunk: Chunk) -> None:
        try:
            chunk.reload()
        except OSError as exc:  # the file went away or became unreadable under us
            self._log.error("chunk_unreadable", chunk=chunk.path, error=str(exc))
            self.pending_total -= chunk.unacked
            chunk.acked = chunk.count
            chunk.pending.clear()
            chunk.parked = None
            chunk.loaded = True

    @staticmethod
    def read(chunk: Chunk, off: int) -> tuple[int, float, int, bytes]:
        """Return ``(record_id, enqueued_at, crc, payload)`` of the frame at ``off``."""
        mm = chunk.mm
        assert mm is not None
        _m, n, rid, t, crc, _a = FRAME_HEADER.unpack_from(mm, off)
        body = off + FRAME_HEADER_SIZE
        return rid, t, crc, mm[body : body + n]

    def peek_time(self) -> float | None:
        """``enqueued_at`` of the next record :meth:`take` would hand out."""
        if self._redeliver:
            index, off = self._redeliver[0]
            return self.read(self._chunks[index], off)[1]
        for chunk in self._unread:
            if chunk.pending:
                return self.read(chunk, chunk.pending[0])[1]
            if chunk.unacked and not chunk.loaded:
                self._load(chunk)
                if chunk.pending:
                    return self.read(chunk, chunk.pending[0])[1]
        return None

    def ack(self, chunk: Chunk, off: int, crc: int) -> None:
        """Mark the frame at ``off`` acknowledged; delete its chunk once all of it is."""
        if chunk.mm is None:
            self.reopen(chunk)
        assert chunk.mm is not None
        chunk.mm[off + ACK_OFFSET : off + FRAME_HEADER_SIZE] = U32.pack(crc ^ framing.ACK_MASK)
        chunk.acked += 1
        self.gen += 1
        self._dirty.add(chunk)
        if chunk.acked == chunk.count:
            self._maybe_delete(chunk)

    def ack_run(self, chunk: Chunk, marks: list[tuple[int, int]]) -> None:
        """:meth:`ack` for several ``(offset, crc)`` frames of one chunk."""
        if chunk.mm is None:
            self.reopen(chunk)
        mm = chunk.mm
        assert mm is not None
        pack, mask = U32.pack, framing.ACK_MASK
        for off, crc in marks:
            mm[off + ACK_OFFSET : off + FRAME_HEADER_SIZE] = pack(crc ^ mask)
        chunk.acked += len(marks)
        self.gen += 1
        self._dirty.add(chunk)
        if chunk.acked == chunk.count:
            self._maybe_delete(chunk)

    def nack(self, chunk: Chunk, off: int) -> None:
        """Hand the record at ``off`` out again, before newer records."""
        heapq.heappush(self._redeliver, (chunk.index, off))
        self.pending_total += 1

    def _maybe_delete(self, chunk: Chunk) -> None:
        if chunk.unacked or chunk is self._head or chunk.deleted:
            return
        unread = self._unread
        if unread and chunk is unread[0]:
            if chunk.pending:
                return
            unread.popleft()  # fully handed out and acknowledged: the reader moves on
            if not unread[0].loaded:
                self._load(unread[0])
        self._chunks.pop(chunk.index, None)
        self._dirty.discard(chunk)
        self._sealed_bytes -= chunk.used
        self._handed_open.pop(chunk, None)
        if (
            chunk.recyclable
            and chunk.mm is not None
            and len(self._free) < FREE_CHUNKS
            and chunk.size <= FREE_CHUNK_BYTES
        ):
            try:
                chunk.retire(self.path, chunk.index)
            except OSError as exc:
                self._log.warning("chunk_retire_failed", chunk=chunk.path, error=str(exc))
            else:
                self._free.append(chunk)  # its file becomes a later chunk: see _roll
                self.durability.dir_dirty = True
                return
        chunk.delete(unlink=False)
        durability = self.durability
        if durability.background:
            durability.unlink_later.append(chunk.path)
        else:
            durability.unlink(chunk.path)
        durability.dir_dirty = True

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
        self.durability.stop()
        self.durability.unlink_deferred()
        try:
            if self.fsync != "never":
                self.durability.sync()
        finally:
            with self.lock:
                self._close_files()
            unregister(self)

    def _close_files(self) -> None:
        for chunk in self._free:
            chunk.delete()
        self._free.clear()
        for chunk in self._chunks.values():
            chunk.close()
        self._chunks.clear()
        self._unread.clear()
        self._dirlock.release()

    def forget_after_fork(self, parent: int) -> None:
        """In a forked child: let go of the parent's files without touching them.

        The child writes nothing, syncs nothing and removes nothing here: unmapping and
        closing its copies of the descriptors leaves the parent's files, maps and lock as
        they are. Called with :attr:`lock` held by the fork (released by the caller).
        """
        self.closed = True
        self.closed_reason = (
            f"opened by process {parent} before this process forked, which still holds it; a "
            "Queue belongs to one process: open a queue of this process's own on another "
            "directory, or use a Spool, whose lanes give every process its own"
        )
        self.durability.forget_after_fork()
        for chunk in (*self._chunks.values(), *self._free):
            chunk.close()  # unmaps and closes this process's copies: the files stay as they are
        self._chunks.clear()
        self._free.clear()
        self._unread.clear()
        self._dirlock.forget()

    def check_open(self) -> None:
        """Raise :class:`ClosedError` if closed (call with the lock held)."""
        if self.closed:
            raise ClosedError(f"queue at {self.path!r} was {self.closed_reason}")
