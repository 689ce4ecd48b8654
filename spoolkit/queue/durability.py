"""What the next fsync must cover, and who runs it.

The store marks what it changes: the chunks acknowledged in, or rolled away from, since the
last sync (:attr:`Durability.dirty`), the directory when chunk files appear, are renamed or are
removed (:attr:`Durability.dir_dirty`), and, with a background flusher, the files of deleted
chunks whose removal waits off the ack path (:attr:`Durability.unlink_later`). Appends to the
head chunk mark nothing, so a put does no bookkeeping for the fsync: a sync covers the head
chunk whenever new records were appended since the last one (the store's next record id
moved), and a chunk rolled away from is marked if records were appended since the last sync.
A record appended under an id of its own (a dead-letter requeue) is marked as any other
change.
:meth:`Durability.sync` fsyncs what is marked for all the callers waiting at once (group
commit); with ``fsync="interval"`` a background thread removes the waiting files and syncs
every ``interval`` seconds.

The store's lock guards the marks: the store changes them with it held, and this module
takes it to read and clear them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from spoolkit.queue import meta
from spoolkit.queue.chunk import Chunk
from spoolkit.queue.groupcommit import GroupCommit


class Durability:
    """The fsync side of one store.

    Args:
        path: the store's directory.
        lock: the store's lock.
        log: the store's logger.
        generation: returns the store's generation (read with the lock held).
        appended: returns the store's next record id, which moves with every new record
            appended to the head chunk (read with the lock held).
        head: returns the head chunk.
    """

    def __init__(
        self,
        path: str,
        lock: threading.Lock,
        log: Any,
        *,
        generation: Callable[[], int],
        appended: Callable[[], int],
        head: Callable[[], Chunk | None],
    ) -> None:
        self.path = path
        self.dirty: set[Chunk] = set()
        self.dir_dirty = False
        self.unlink_later: list[str] = []
        self.errors = 0
        """Background fsyncs that failed (logged as ``background_fsync_failed``)."""
        self._lock = lock
        self._generation = generation
        self._appended = appended
        self._head = head
        self.synced_appended = 0
        """The store's next record id when the last successful sync began."""
        self._log = log
        self._commit = GroupCommit()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def background(self) -> bool:
        """Whether a background flusher runs (``fsync="interval"``)."""
        return self._thread is not None

    def forget_after_fork(self) -> None:
        """In a forked child: the flusher thread did not come along; sync nothing from here."""
        self._thread = None
        self.dirty.clear()
        self.unlink_later.clear()
        self._stop = threading.Event()  # the parent's may be mid-use: a fresh one, set
        self._stop.set()

    def start(self, interval: float) -> None:
        """Start the background flusher: remove waiting files and sync every ``interval`` s."""
        self._thread = threading.Thread(
            target=self._loop, args=(interval,), name="spoolkit-fsync", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the background flusher (waiting for it, unless called from it)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.unlink_deferred()
                self.sync()
            except OSError as exc:
                self.errors += 1
                self._log.error("background_fsync_failed", error=str(exc))

    def sync(self, upto: int | None = None) -> None:
        """``fsync`` what changed since the last sync; concurrent callers share one fsync.

        Group commit (:class:`~spoolkit.queue.groupcommit.GroupCommit`): one caller fsyncs
        everything written so far while the others wait; when it is done, every waiter whose
        write it covered returns at once.

        Args:
            upto: the generation the caller needs covered; ``None`` for everything so far.
        """
        self._commit.run(self._generation() if upto is None else upto, self._fsync_dirty)

    def _fsync_dirty(self) -> int:
        """fsync every chunk written since the last call (and the directory if names changed);
        return the generation covered. On failure, what was dirty stays dirty."""
        with self._lock:
            target = self._generation()
            appended = self._appended()
            chunks = list(self.dirty)
            self.dirty.clear()
            head = self._head()
            if appended != self.synced_appended and head is not None and head not in chunks:
                chunks.append(head)  # appends to the head chunk mark nothing: see the store
            dir_dirty, self.dir_dirty = self.dir_dirty, False
        try:
            for chunk in chunks:
                chunk.sync()
            if dir_dirty:
                meta.fsync_dir(self.path)
        except BaseException:
            with self._lock:
                self.dirty.update(s for s in chunks if not s.deleted)
                self.dir_dirty |= dir_dirty
            raise
        self.synced_appended = appended  # flushes run one at a time (group commit)
        return target

    def unlink_deferred(self) -> None:
        """Remove the files of chunks deleted since the last call (off the ack path).

        A crash before that leaves fully acknowledged chunks, which the next open removes.
        """
        with self._lock:
            paths, self.unlink_later = self.unlink_later, []
        for path in paths:
            self.unlink(path)
        if paths:
            with self._lock:
                self.dir_dirty = True

    def unlink(self, path: str) -> None:
        """Remove a fully acknowledged chunk file; if that fails, the next open removes it."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._log.warning("chunk_unlink_failed", chunk=path, error=str(exc))

    def sync_all(self, chunks: Iterable[Chunk]) -> None:
        """fsync every open chunk of ``chunks`` and the directory, whatever is marked."""
        for chunk in chunks:
            if chunk.fd >= 0:
                chunk.sync()
        meta.fsync_dir(self.path)
