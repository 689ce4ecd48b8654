"""Opening a store: pqueue migration, chunk recovery, the directory and its metadata, and the
stores open in this process (a newer one takes a directory over from an older one).

These functions fill in a :class:`~spoolkit._disk.store.Store` being constructed; they are its
opening half, kept apart from the put/take/ack half.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING

from spoolkit._disk import framing, meta, migrate
from spoolkit._disk.framing import CHUNK_HEADER_SIZE, ChunkHeader
from spoolkit._disk.perms import make_private_dir
from spoolkit._disk.recovery import scan_chunk
from spoolkit._disk.segment import FREE_PREFIX, Segment, chunk_name, parse_chunk_name
from spoolkit.errors import ConfigError, FormatError, PathError
from spoolkit.serializers import BUILTIN_NAMES

if TYPE_CHECKING:
    from spoolkit._disk.store import Store

_OPEN: dict[str, weakref.ref[Store]] = {}  # the store open on each directory in this process
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
        other.close("taken over by a newer Queue on the same path in this process")


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
    """What opening the store found: damage skipped, records recovered."""

    __slots__ = ("damaged_bytes", "damaged_regions", "pending", "skipped_chunks")

    def __init__(self) -> None:
        self.pending = 0
        self.damaged_regions = 0
        self.damaged_bytes = 0
        self.skipped_chunks = 0


def open_store(store: Store, serializer_name: str) -> None:
    """Read the directory into ``store``: migrate pqueue files, recover chunks, write meta."""
    migrated = migrate.pending_pqueue_items(store.path, serializer_name)
    info = meta.read_meta(store.path)
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
    if info is not None and int(info.get("format", 0)) > framing.FORMAT_VERSION:
        raise FormatError(
            f"spool at {store.path!r} uses format {info['format']}, newer than this "
            f"spoolkit reads ({framing.FORMAT_VERSION}); upgrade spoolkit",
            store.path,
        )
    meta_uid = bytes.fromhex(info["uid"]) if info and _valid_uid(info.get("uid")) else None
    uid = None  # a chunk header's (checksummed) wins over meta.json's (which is not)
    for i in indexes:
        uid = _recover_chunk(store, i, uid, last=i == indexes[-1], fallback=meta_uid)
    store.uid = uid or meta_uid or os.urandom(16)
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
        store.durability.sync_all(store._segs.values())
        meta.write_meta(store.path, {**fresh, "migrated_from_pqueue": True}, store.tempdir)
        migrate.finish(store.path)
    r = store.report
    r.pending = store.pending_total
    if r.damaged_regions or r.skipped_chunks:
        store._log.warning(
            "recovered_with_damage",
            damaged_regions=r.damaged_regions,
            damaged_bytes=r.damaged_bytes,
            skipped_chunks=r.skipped_chunks,
            pending=r.pending,
        )


def _check_serializer(store: Store, info: dict[str, object] | None, name: str) -> None:
    was = info.get("serializer") if info else None
    if was in BUILTIN_NAMES and name in BUILTIN_NAMES and was != name and store.pending_total:
        raise ConfigError(
            f"spool at {store.path!r} holds {store.pending_total} record(s) written with "
            f"serializer={was!r}; open it with serializer={was!r} (or drain it first)"
        )


def _recover_chunk(
    store: Store, index: int, uid: bytes | None, *, last: bool, fallback: bytes | None = None
) -> bytes | None:
    seg = Segment(os.path.join(store.path, chunk_name(index)), index)
    try:
        seg.open()
    except OSError as exc:
        store._log.warning("chunk_unreadable", chunk=seg.path, error=str(exc))
        store.report.skipped_chunks += 1
        return uid
    assert seg.mm is not None
    scan = scan_chunk(seg.mm, index, store.max_record_bytes)
    h = scan.header
    if h is not None and h.version > framing.FORMAT_VERSION:
        seg.close()
        raise FormatError(
            f"chunk {seg.path!r} uses format {h.version}; upgrade spoolkit", store.path
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
        seg.delete()
        return uid
    seg.capacity = h.capacity if h is not None else store.chunksize
    seg.first_id = h.first_id if h is not None else store.next_id
    seg.count = scan.frames
    seg.acked = scan.frames - len(scan.pending)
    seg.wpos = scan.end
    seg.gap = scan.end - CHUNK_HEADER_SIZE - scan.used
    store.pending_total += len(scan.pending)
    if not last:
        store._sealed_bytes += seg.used  # the head's are counted from its wpos
    store._segs[index] = seg
    store._unread.append(seg)
    if last:
        store._head = seg
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
        if len(store._unread) > 1:
            seg.unload()
    return uid


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


def prepare_dir(path: str) -> str:
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


def check_tempdir(tempdir: str, path: str) -> None:
    if not os.path.isdir(tempdir):
        raise PathError(f"tempdir {tempdir!r} is not a directory", tempdir)
    if os.stat(tempdir).st_dev != os.stat(path).st_dev:
        raise PathError(
            f"tempdir {tempdir!r} is on another filesystem than {path!r}; an atomic rename "
            "needs both on the same one",
            tempdir,
        )
