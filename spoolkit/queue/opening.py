"""Opening a store: pqueue migration, chunk recovery, the directory and its metadata, and the
stores open in this process (a newer one takes a directory over from an older one).

These functions fill in a :class:`~spoolkit.queue.store.Store` being constructed; they are its
opening half, kept apart from the put/take/ack half.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING

from spoolkit.errors import ConfigError, FormatError, PathError
from spoolkit.queue import framing, meta, migrate
from spoolkit.queue.chunk import FREE_PREFIX, Chunk, chunk_name, parse_chunk_name
from spoolkit.queue.framing import CHUNK_HEADER_SIZE, ChunkHeader
from spoolkit.queue.perms import make_private_dir
from spoolkit.queue.recovery import (
    MIN_CHUNK_FILE,
    PAGE,
    ChunkFacts,
    LostRange,
    find_losses,
    scan_chunk,
)
from spoolkit.serializers import BUILTIN_NAMES

if TYPE_CHECKING:
    from spoolkit.queue.store import Store

_OPEN: dict[str, weakref.ref[Store]] = {}  # the store open on each directory in this process
TAKEN_OVER = "taken over by a newer Queue on the same path in this process"
"""The ``closed_reason`` of a queue another instance in this process opened on its path."""
_OPEN_LOCK = threading.Lock()


def is_open_here(path: str) -> bool:
    """Whether a store of this process has ``path`` (absolute, resolved) open."""
    with _OPEN_LOCK:
        ref = _OPEN.get(path)
    return ref is not None and ref() is not None


# -- fork: no child inherits a held lock or writes a parent's file ------------------------------

_forking: list[Store] = []


def _before_fork() -> None:
    """Take every open store's lock, so that no thread is half-way through a change."""
    _OPEN_LOCK.acquire()
    stores = [s for s in (r() for r in _OPEN.values()) if s is not None]
    for store in stores:
        store.lock.acquire()
    _forking[:] = stores


def _after_fork_parent() -> None:
    for store in reversed(_forking):
        store.lock.release()
    _forking.clear()
    _OPEN_LOCK.release()


def _after_fork_child() -> None:
    parent = os.getppid()
    for store in _forking:
        try:
            store.forget_after_fork(parent)
        finally:
            store.lock.release()
    _forking.clear()
    _OPEN.clear()
    _OPEN_LOCK.release()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child
)


def take_over(path: str) -> None:
    """Close the store this process has open on ``path``, if any (pqueue's reopen idiom)."""
    with _OPEN_LOCK:
        ref = _OPEN.get(path)
    other = ref() if ref is not None else None
    if other is not None:
        other.close(TAKEN_OVER)


def register(store: Store) -> None:
    """Record ``store`` as the one open on its directory in this process."""
    with _OPEN_LOCK:
        _OPEN[store.path] = weakref.ref(store)


def unregister(store: Store) -> None:
    """Forget ``store`` (if it is still the one recorded for its directory)."""
    with _OPEN_LOCK:
        ref = _OPEN.get(store.path)
        if ref is not None and ref() is store:
            del _OPEN[store.path]


class RecoveryReport:
    """What opening the store found: damage skipped, records recovered, records lost.

    Attributes:
        pending: records waiting after the open.
        damaged_regions: runs of bytes that held no intact frame (skipped).
        damaged_bytes: bytes in them.
        skipped_chunks: chunk files that could not be read at all.
        lost: ranges of record numbers that were written and are gone (see
            :func:`spoolkit.queue.recovery.find_losses`): a chunk file cut, emptied, deleted
            or damaged. Each is also logged as a ``records_lost`` warning.
        uid: the queue's uid, the first part of the record ids in :meth:`lost_ids`.
    """

    __slots__ = ("damaged_bytes", "damaged_regions", "lost", "pending", "skipped_chunks", "uid")

    def __init__(self) -> None:
        self.pending = 0
        self.damaged_regions = 0
        self.damaged_bytes = 0
        self.skipped_chunks = 0
        self.lost: list[LostRange] = []
        self.uid = ""

    @property
    def lost_records(self) -> int:
        """Records known lost (a range whose end is unknown counts as none: see ``lost``)."""
        return sum(r.count or 0 for r in self.lost)

    def lost_ids(self) -> list[str]:
        """Each lost range in the ids a user sees (``<uid>-<n>``), with where and why."""
        return [r.describe() for r in self.lost]


def open_store(store: Store, serializer_name: str) -> None:
    """Read the directory into ``store``: migrate pqueue files, recover chunks, write meta."""
    migrated = migrate.pending_pqueue_items(store.path, serializer_name)
    info = _checked_meta(store, meta.read_meta(store.path))
    for name in os.listdir(store.path):
        if name.endswith(meta.TMP_SUFFIX) or name.startswith(FREE_PREFIX) or name == meta.IDLE_MARK:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(store.path, name))
    indexes = sorted(
        i for i in (parse_chunk_name(n) for n in os.listdir(store.path)) if i is not None
    )
    if migrated is not None:
        for i in indexes:  # a migration that did not finish: start it again
            os.unlink(os.path.join(store.path, chunk_name(i)))
        indexes, info = [], None
    fmt = info.get("format", 0) if info is not None else 0
    if isinstance(fmt, int) and fmt > framing.FORMAT_VERSION:
        shown = str(fmt) if fmt < 10**6 else f"{str(fmt)[:6]}... ({len(str(fmt))} digits)"
        raise FormatError(
            f"spool at {store.path!r} uses format {shown} (meta.json), newer than this "
            f"spoolkit reads ({framing.FORMAT_VERSION}); upgrade spoolkit",
            store.path,
        )
    text = info.get("uid") if info is not None else None
    meta_uid = bytes.fromhex(text) if isinstance(text, str) and _valid_uid(text) else None
    uid = None  # a chunk header's (checksummed) wins over meta.json's (which is not)
    facts: list[ChunkFacts] = []
    for i in indexes:
        uid = _recover_chunk(store, i, uid, facts, last=i == indexes[-1])
    store.uid = uid or meta_uid or os.urandom(16)
    store.uid_hex = store.uid.hex()
    if uid is None and meta_uid is None and indexes:
        store._log.warning(
            "uid_not_found",
            detail="no chunk header and no meta.json holds the queue's uid: a new one is used, "
            "so the ids of the records on disk change",
            uid=store.uid.hex(),
        )
    head = store._head
    if head is not None and head.mm is not None and _header_missing(head):
        head.mm[0:CHUNK_HEADER_SIZE] = framing.encode_chunk_header(
            ChunkHeader(head.index, head.capacity, head.first_id, store.uid, time.time())
        )
    _report_losses(store, facts)
    _check_serializer(store, info, serializer_name)
    fresh = {
        "format": framing.FORMAT_VERSION,
        "uid": store.uid.hex(),
        "serializer": serializer_name,
        "chunksize": store.chunksize,
    }
    if (
        info is None
        or info.get("serializer") != serializer_name
        or info.get("uid") != store.uid.hex()
    ):
        meta.write_meta(store.path, fresh, store.tempdir)
    if store._head is None:
        store._roll()
    if migrated is not None:
        now = time.time()
        for payload in migrated:
            store.append(payload, None, now)
        store.durability.sync_all(store._chunks.values())
        meta.write_meta(store.path, {**fresh, "migrated_from_pqueue": True}, store.tempdir)
        migrate.finish(store.path)
    r = store.report
    r.pending = store.pending_total
    r.uid = store.uid.hex()
    if r.damaged_regions or r.skipped_chunks:
        store._log.warning(
            "recovered_with_damage",
            damaged_regions=r.damaged_regions,
            damaged_bytes=r.damaged_bytes,
            skipped_chunks=r.skipped_chunks,
            pending=r.pending,
        )


def _checked_meta(store: Store, info: dict[str, object] | None) -> dict[str, object] | None:
    """``meta.json``'s content if it has the shape spoolkit writes, else None (with a warning).

    A ``meta.json`` is not checksummed: one of the wrong shape (``{"format": "x"}``, a list,
    non-UTF-8 bytes...) is damage, recovered from as from a missing one: the uid comes from the
    (checksummed) chunk headers and a new ``meta.json`` is written. A ``format`` that is a
    number above the one this spoolkit writes is not damage but a newer spoolkit's, refused.
    """
    if info is None:
        if os.path.lexists(os.path.join(store.path, meta.META)):
            store._log.warning("meta_json_unreadable", file=os.path.join(store.path, meta.META))
        return None
    fmt = info.get("format", framing.FORMAT_VERSION)
    ok = isinstance(fmt, int) and not isinstance(fmt, bool) and fmt >= 0
    ok = ok and isinstance(info.get("serializer", ""), str)
    ok = ok and (info.get("uid") is None or _valid_uid(info.get("uid")))
    if ok:
        return info
    store._log.warning(
        "meta_json_damaged",
        file=os.path.join(store.path, meta.META),
        detail="not the shape spoolkit writes: recovered from the chunk headers, rewritten",
    )
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > framing.FORMAT_VERSION:
        return {"format": fmt}  # a newer spoolkit's: refused by the caller, never misread
    return None


def _header_missing(chunk: Chunk) -> bool:
    assert chunk.mm is not None
    return framing.decode_chunk_header(bytes(chunk.mm[:CHUNK_HEADER_SIZE])) is None


def _report_losses(store: Store, facts: list[ChunkFacts]) -> None:
    """Find the records written and gone (see ``find_losses``): report them and log each range.

    The newest chunk, when it was found cut short, is grown back to whole pages, so that the
    same cut is reported once (its missing records' numbers are never issued again: the next
    record is numbered past the chunk's capacity).
    """
    uid = store.uid.hex()
    lost = [dataclasses.replace(r, uid=uid) for r in find_losses(facts)]
    if not lost:
        return
    store.report.lost = lost
    for r in lost:
        store._log.warning(
            "records_lost",
            chunk=r.chunk,
            ids=r.ids(),
            first=r.first_id,
            last=r.last_id,
            count=r.count,
            reason=r.reason,
        )
    head = store._head
    if head is not None and facts and facts[-1].index == head.index and facts[-1].cut:
        whole = max(MIN_CHUNK_FILE, -(-head.size // PAGE) * PAGE)
        try:
            if whole > head.size:
                assert head.mm is not None
                os.posix_fallocate(head.fd, head.size, whole - head.size)  # zeros: free space
                head.mm.resize(whole)
                head.size = whole
        except OSError as exc:  # a full disk: the cut is reported again at the next open
            store._log.warning("chunk_regrow_failed", chunk=head.path, error=str(exc))


def _check_serializer(store: Store, info: dict[str, object] | None, name: str) -> None:
    was = info.get("serializer") if info else None
    if was in BUILTIN_NAMES and name in BUILTIN_NAMES and was != name and store.pending_total:
        raise ConfigError(
            f"spool at {store.path!r} holds {store.pending_total} record(s) written with "
            f"serializer={was!r}; open it with serializer={was!r} (or drain it first)"
        )


def _recover_chunk(
    store: Store, index: int, uid: bytes | None, facts: list[ChunkFacts], *, last: bool
) -> bytes | None:
    name = chunk_name(index)
    chunk = Chunk(os.path.join(store.path, name), index)
    try:
        size = os.stat(chunk.path).st_size
        chunk.open()
    except OSError as exc:
        store._log.warning("chunk_unreadable", chunk=chunk.path, error=str(exc))
        store.report.skipped_chunks += 1
        facts.append(ChunkFacts(name, index, 0, None, None, None, damaged=True))
        return uid
    assert chunk.mm is not None
    scan = scan_chunk(chunk.mm, index, store.max_record_bytes)
    assert scan.facts is not None
    facts.append(scan.facts.done(name, index, size, bool(scan.damage)))
    h = scan.header
    if h is not None and h.version > framing.FORMAT_VERSION:
        chunk.close()
        raise FormatError(
            f"chunk {chunk.path!r} uses format {h.version}; upgrade spoolkit", store.path
        )
    if h is not None:
        uid = uid or h.uid
        store.next_id = max(store.next_id, h.first_id + h.capacity)
    store.next_id = max(store.next_id, scan.max_id + 1)
    store.report.damaged_regions += len(scan.damage)
    store.report.damaged_bytes += scan.damaged_bytes
    if scan.frames:
        store._avg_frame = max(64, scan.used // scan.frames)
    if not last and not scan.pending:
        chunk.delete()
        return uid
    chunk.capacity = h.capacity if h is not None else store.chunksize
    chunk.first_id = h.first_id if h is not None else store.next_id
    chunk.count = scan.frames
    chunk.acked = scan.frames - len(scan.pending)
    chunk.wpos = scan.end
    chunk.gap = scan.end - CHUNK_HEADER_SIZE - scan.used
    store.pending_total += len(scan.pending)
    if not last:
        store._sealed_bytes += chunk.used  # the head's are counted from its wpos
    store._chunks[index] = chunk
    store._unread.append(chunk)
    if last:
        store._head = chunk
        _zero_tail(chunk, scan.end)  # its header, if damaged, is rewritten once the uid is known
        chunk.pending = deque(scan.pending)
        chunk.loaded = True
    else:
        chunk.pending = deque(scan.pending)
        chunk.loaded = True
        if len(store._unread) > 1:
            chunk.unload()
    return uid


def _valid_uid(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value)
    )


def _zero_tail(chunk: Chunk, start: int) -> None:
    mm = chunk.mm
    assert mm is not None
    step = 1 << 20
    for pos in range(start, chunk.size, step):
        end = min(pos + step, chunk.size)
        if any(mm[pos:end]):
            mm[pos:end] = bytes(end - pos)


_SPOOL_NAMES = frozenset(
    (meta.META, meta.LOCK, meta.IDLE_MARK, "dead", "lanes", "consumers.lock", migrate.BACKUP)
)
_IGNORED = frozenset(("lost+found",))  # a file system's own: a spool may be a mount point


def _check_contents(path: str) -> None:
    """Refuse a directory that holds files and nothing of a spool's (nor of a pqueue's).

    A directory full of unrelated files is almost certainly a wrong path (a home directory,
    a project): writing a spool into it would mix the two. Empty directories, spools, lanes,
    dead-letter stores and pqueue directories (``info`` and ``qNNNNN`` files) are fine;
    hidden entries alone do not make a directory unrelated.
    """
    try:
        names = os.listdir(path)
    except OSError:
        return  # unreadable: the open that follows says why
    visible = [n for n in names if not n.startswith(".") and n not in _IGNORED]
    if not visible:
        return
    if any(
        n in _SPOOL_NAMES or n == migrate.INFO or parse_chunk_name(n) is not None for n in names
    ):
        return
    shown = ", ".join(repr(n) for n in sorted(visible)[:3])
    more = f" and {len(visible) - 3} more" if len(visible) > 3 else ""
    raise PathError(
        f"{path!r} holds files that are not a spool's ({shown}{more}): choose an empty or new "
        "directory for the spool, or the path of an existing one",
        path,
    )


def prepare_dir(path: str) -> str:
    """Create (or check) a queue directory and return its resolved path.

    Raises:
        PathError: the path is empty, a file, not creatable or writable, or a directory of
            unrelated files.
    """
    if not os.fspath(path):
        raise PathError(
            "the spool path is empty: give a directory for the spool, such as "
            "'/var/spool/myapp' (an empty path would write into the current directory)",
            "",
        )
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise PathError(f"spool path {path!r} is a file, not a directory; choose a directory", path)
    try:
        make_private_dir(path)
    except OSError as exc:
        raise PathError(f"cannot create spool directory {path!r}: {exc.strerror}", path) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise PathError(f"spool directory {path!r} is not writable by this user", path)
    _check_contents(path)
    return os.path.realpath(path)


def check_tempdir(tempdir: str, path: str) -> None:
    if not os.path.isdir(tempdir):
        raise PathError(f"tempdir {tempdir!r} is not a directory", tempdir)
    if os.stat(tempdir).st_dev != os.stat(path).st_dev:
        raise PathError(
            f"tempdir {tempdir!r} is on another filesystem than {path!r}; an atomic rename "
            "needs both on the same one",
            tempdir,
        )
