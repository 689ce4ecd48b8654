"""JsonlSink: append records to a JSON Lines file, fsynced per batch, rotated by size."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Sequence

from spoolkit._internal.json_utf8 import json_utf8
from spoolkit.errors import ConfigError, PermanentError, SinkError, TransientError
from spoolkit.sinks._encode import ToJson, encode_batch
from spoolkit.typing import Record

__all__ = ["JsonlSink"]

# errno values no retry can fix: the path itself is wrong or forbidden.
_PERMANENT_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.ENAMETOOLONG,
        errno.ELOOP,
    }
)


class JsonlSink:
    """Append one JSON object per line to a file; each batch is on disk when ``write`` returns.

    Each line is ``{"id": ..., "enqueued_at": ..., "item": ...}`` unless ``to_json`` maps the
    record to another JSON-safe value. A batch is appended with one ``write``, then the file is
    ``fsync``-ed: durable, at the cost of one disk flush per batch (batch up for throughput).
    If the write fails half-way (disk full), the file is cut back to where the batch started,
    so a retry never leaves a torn line.

    With ``max_bytes``, a batch that would take the file past that size first rotates it:
    ``file.jsonl`` becomes ``file.jsonl.1``, ``.1`` becomes ``.2`` and so on; only ``keep`` old
    files are kept (``keep=0`` drops the full file). A batch is never split across files, so a
    file can exceed ``max_bytes`` by at most one batch when a single batch is larger.

    Workers share one file descriptor under a lock, so lines never interleave. Only one process
    should append to a given path. A file moved away by an outside tool (logrotate) is noticed
    and a fresh one is started. New files are created with mode ``0600``.

    Args:
        path: the file to append to. Its directory must exist.
        max_bytes: rotate before the file would grow past this many bytes; never when None.
        keep: how many rotated files to keep.
        to_json: maps a record to a JSON-safe value.

    Raises:
        ConfigError: ``max_bytes`` is not positive or ``keep`` is negative.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int | None = None,
        keep: int = 5,
        to_json: ToJson | None = None,
    ) -> None:
        if max_bytes is not None and (isinstance(max_bytes, bool) or max_bytes <= 0):
            raise ConfigError(f"max_bytes must be a positive number of bytes, not {max_bytes!r}")
        if isinstance(keep, bool) or keep < 0:
            raise ConfigError(f"keep must be 0 or more rotated files, not {keep!r}")
        self.path = os.path.abspath(os.fspath(path))
        self.max_bytes = max_bytes
        self.keep = keep
        self._to_json = to_json
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"JsonlSink({self.path!r})"

    def open(self) -> None:
        """Open (creating it if needed) the file now rather than at the first write.

        A failure that may pass (the directory is not there yet) is left to the first write,
        so the spool can start and buffer meanwhile.

        Raises:
            PermanentError: the path is forbidden or not a file.
        """
        with self._lock:
            try:
                self._current_fd()
            except OSError as exc:
                error = self._error(exc, "open")
                if isinstance(error, PermanentError):
                    raise error from exc

    def after_fork(self) -> None:
        """In a forked child: a lock of its own. The descriptor is shared with the parent,
        which is safe for appends (``O_APPEND``, one ``write`` per batch)."""
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the file. A later ``write`` opens it again."""
        with self._lock:
            self._close_fd()

    def write(self, batch: Sequence[Record]) -> None:
        """Append one line per record, then fsync the file.

        Raises:
            TransientError: an I/O error that may pass (disk full, I/O error).
            PermanentError: the path is forbidden or not a file, or no record of the batch
                could be encoded as JSON.
            PartialFailure: some records could not be encoded; the others were written.
        """
        if not batch:
            return
        encoded = encode_batch(batch, self._to_json)
        encoded.raise_if_all_bad(repr(self))
        data = json_utf8("".join(line + "\n" for _, line in encoded.ok))  # lone surrogates escaped
        with self._lock:
            try:
                self._append(data)
            except OSError as exc:
                raise self._error(exc, "append to") from exc
        encoded.raise_if_some_bad(repr(self))

    # -- internals (all called with the lock held) ------------------------------------------

    def _append(self, data: bytes) -> None:
        fd = self._current_fd()
        size = os.fstat(fd).st_size
        if self.max_bytes is not None and size > 0 and size + len(data) > self.max_bytes:
            self._rotate()
            fd = self._current_fd()
            size = 0
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            self._truncate(fd, size)
            raise

    def _current_fd(self) -> int:
        """The descriptor of the file now at ``path``, reopening it if it was moved away."""
        if self._fd is not None:
            try:
                same = os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return self._fd
            self._close_fd()
        existed = os.path.exists(self.path)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o600)
        if not existed:
            self._fsync_dir()
        return self._fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _rotate(self) -> None:
        self._close_fd()
        if self.keep == 0:
            os.unlink(self.path)
        else:
            for i in range(self.keep - 1, 0, -1):
                older = f"{self.path}.{i}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        dfd = os.open(os.path.dirname(self.path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @staticmethod
    def _truncate(fd: int, size: int) -> None:
        """Cut a half-written batch off so a retry starts on a clean line."""
        with contextlib.suppress(OSError):  # the write error is the one worth reporting
            os.ftruncate(fd, size)

    def _error(self, exc: OSError, doing: str) -> SinkError:
        """Map an ``OSError`` to a spoolkit error: the one place this sink does so."""
        message = f"cannot {doing} {self.path}: {exc.strerror or exc}"
        if exc.errno in _PERMANENT_ERRNOS:
            return PermanentError(message, sink=repr(self))
        return TransientError(message, sink=repr(self))
