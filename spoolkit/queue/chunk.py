"""One chunk file (``qNNNNN``): a preallocated, memory-mapped run of frames.

Writes go through a shared memory map: they reach the kernel's page cache at once, so a record
survives ``kill -9`` of the process without a system call per put; ``fsync`` makes them survive
a power loss. Space is reserved before it is mapped, the same way for a new file and for a
grown one (:func:`_reserve`), so a full disk is an ``OSError(ENOSPC)`` at the call that needed
the space, never a ``SIGBUS`` later.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
from array import array
from collections import deque

from spoolkit.queue import framing
from spoolkit.queue.framing import CHUNK_HEADER_SIZE, ChunkHeader

PAGE = 4096
FREE_PREFIX = ".free-"  # retired chunk files waiting to be reused
WRITE_OUT = 1024 * 1024
"""The most bytes of new chunk space written out at once: the pages the next records will
fill. Beyond that, space is only reserved (``posix_fallocate``), so a large chunk does not cost
its size in page cache and disk writes before it holds anything."""


def _reserve(fd: int, start: int, end: int, head: bytes = b"") -> None:
    """Reserve bytes ``start`` to ``end`` of a chunk file (past its end), writing ``head`` (a new
    chunk's header) then zeros over the first :data:`WRITE_OUT` of them.

    Writing the zeros reserves the space as ``posix_fallocate`` does (a full disk fails here,
    not as a ``SIGBUS`` at a later write through the map), and leaves the pages in the page
    cache, so the map's first writes fault nothing in (cheaper than reserving the space,
    writing the header, then faulting the pages in). Space past :data:`WRITE_OUT` bytes is
    reserved with ``posix_fallocate``.

    Raises:
        OSError: ``ENOSPC``, ``EFBIG`` (a write cut short is continued, so that the error
            that cut it is the one raised) or another write error. The file may have grown,
            with zeros: free space to a reader.
    """
    if end - start > WRITE_OUT:
        os.posix_fallocate(fd, start, end - start)
    data = memoryview(head + bytes(min(end - start, WRITE_OUT) - len(head)))
    done = 0
    while done < len(data):
        written = os.pwrite(fd, data[done:], start + done)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += written


def chunk_name(index: int) -> str:
    """File name of chunk ``index``, as pqueue names them."""
    return f"q{index:05d}"


def parse_chunk_name(name: str) -> int | None:
    """Index of a chunk file name, or None if ``name`` is not one."""
    if len(name) >= 6 and name[0] == "q" and name[1:].isdigit():
        return int(name[1:])
    return None


def _round_up(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


class Chunk:
    """An open chunk file and what the store knows of it.

    Attributes:
        index: chunk number (also the checksum seed of its frames).
        capacity: records it may hold before the store rolls to a new chunk.
        count: records written (or found) in it.
        wpos: where the next frame goes.
        acked: records acknowledged (:attr:`unacked` counts the others).
        pending: offsets of records not yet handed out, when loaded.
        gap: bytes before ``wpos`` that hold no intact frame (damage found on opening).
    """

    __slots__ = (
        "acked",
        "capacity",
        "count",
        "deleted",
        "fd",
        "first_id",
        "gap",
        "index",
        "loaded",
        "mm",
        "parked",
        "path",
        "pending",
        "recyclable",
        "size",
        "wpos",
    )

    def __init__(self, path: str, index: int) -> None:
        self.path = path
        self.index = index
        self.fd = -1
        self.mm: mmap.mmap | None = None
        self.size = 0
        self.capacity = 0
        self.first_id = 0
        self.count = 0
        self.wpos = CHUNK_HEADER_SIZE
        self.acked = 0
        self.gap = 0
        self.pending: deque[int] = deque()
        self.parked: array[int] | None = None
        self.loaded = False
        self.deleted = False
        self.recyclable = False  # wpos is known to bound every byte written

    @property
    def unacked(self) -> int:
        """Records not yet acknowledged. Derived, so that a put updates one count, not two."""
        return self.count - self.acked

    @property
    def used(self) -> int:
        """Bytes of the intact frames in it (what ``max_bytes`` counts). Derived from ``wpos``,
        so that a put does not update it."""
        return self.wpos - CHUNK_HEADER_SIZE - self.gap

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: str, header: ChunkHeader, initial_bytes: int) -> Chunk:
        """Create, preallocate and map a new chunk file, its header written.

        Raises:
            OSError: the file could not be created or its space reserved (``ENOSPC``); no
                file is left behind.
        """
        path = os.path.join(directory, chunk_name(header.index))
        chunk = cls(path, header.index)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            size = _round_up(max(initial_bytes, CHUNK_HEADER_SIZE + PAGE))
            _reserve(fd, 0, size, framing.encode_chunk_header(header))
            chunk.fd = fd
            chunk.size = size
            chunk.mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        chunk.capacity = header.capacity
        chunk.first_id = header.first_id
        chunk.loaded = True
        chunk.recyclable = True
        return chunk

    def retire(self, directory: str, token: int) -> None:
        """Erase this fully acknowledged chunk and set its file aside for reuse.

        The frames are zeroed, then the file is renamed to a hidden ``.free-N`` name: the
        chunk is gone (its name and its records), while the preallocated, mapped file waits
        to become a new chunk (:meth:`recycle`). A crash leaves a ``.free-N`` file, which the
        next open removes.

        Raises:
            OSError: the rename failed (the caller deletes the chunk instead).
        """
        mm = self.mm
        assert mm is not None
        mm[CHUNK_HEADER_SIZE : self.wpos] = bytes(self.wpos - CHUNK_HEADER_SIZE)
        path = os.path.join(directory, f"{FREE_PREFIX}{token}")
        os.rename(self.path, path)
        self.path = path

    def recycle(self, directory: str, header: ChunkHeader) -> None:
        """Turn a retired file into the new, empty chunk ``header`` describes.

        The header is written before the rename: a crash leaves either the ``.free-N`` file or
        an empty chunk, both harmless. Cheaper than creating, preallocating and mapping a file.

        Raises:
            OSError: the rename failed; the chunk is unchanged.
        """
        mm = self.mm
        assert mm is not None
        mm[0:CHUNK_HEADER_SIZE] = framing.encode_chunk_header(header)
        path = os.path.join(directory, chunk_name(header.index))
        os.rename(self.path, path)
        self.path = path
        self.index = header.index
        self.capacity = header.capacity
        self.first_id = header.first_id
        self.count = self.acked = self.gap = 0
        self.wpos = CHUNK_HEADER_SIZE
        self.pending.clear()
        self.parked = None
        self.loaded = True

    def open(self) -> None:
        """Map an existing chunk file (read-write). Growing an empty file to hold a header."""
        if self.mm is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size < CHUNK_HEADER_SIZE + PAGE:
                size = CHUNK_HEADER_SIZE + PAGE
                os.posix_fallocate(fd, 0, size)
            self.mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.size = size

    def close(self) -> None:
        """Unmap and close (idempotent)."""
        if self.mm is not None:
            self.mm.close()
            self.mm = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.loaded = False
        self.pending.clear()

    def unload(self) -> None:
        """Unmap and close, keeping the pending offsets (compactly) for :meth:`reload`."""
        self.parked = array("Q", self.pending)
        self.close()

    def reload(self) -> None:
        """Map the file again and restore the offsets :meth:`unload` kept."""
        self.open()
        if self.parked is not None:
            self.pending = deque(self.parked)
            self.parked = None
        self.loaded = True

    def delete(self, *, unlink: bool = True) -> None:
        """Close and (unless the caller unlinks later) remove the file."""
        self.close()
        self.deleted = True
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def grow(self, needed_end: int) -> None:
        """Make room up to ``needed_end`` bytes: double the file, or when the disk cannot give
        that much, grow it by what ``needed_end`` needs only.

        Doubling keeps growth rare; the smaller step keeps a chunk writable while the disk has
        room for the record itself (a doubled 40 MiB chunk must not need 40 MiB more).

        Raises:
            OSError: the space could not be reserved (``ENOSPC``, ``EFBIG``); the chunk is
                unchanged and still usable.
        """
        assert self.mm is not None
        new_size = _round_up(max(needed_end, self.size * 2))
        least = _round_up(needed_end)
        try:
            _reserve(self.fd, self.size, new_size)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EFBIG) or least >= new_size:
                raise
            new_size = least
            _reserve(self.fd, self.size, new_size)
        self.mm.resize(new_size)  # also cuts what a failed larger attempt left past it
        self.size = new_size

    def sync(self) -> None:
        """``fsync`` the file: data written through the map and the file's size.

        Works on an unloaded chunk too (by path), and is a no-op once it is deleted.
        """
        fd = self.fd
        if fd >= 0:
            try:
                os.fsync(fd)
            except OSError as exc:
                if exc.errno != errno.EBADF:  # closed under us: sync by path below
                    raise
            else:
                return
        if self.deleted:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
