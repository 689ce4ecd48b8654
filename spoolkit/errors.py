"""Errors raised by spoolkit.

Every error spoolkit raises on purpose derives from :class:`SpoolError`; where the meaning
matches a builtin, the error subclasses it too, so ``except ValueError`` keeps working.

```
SpoolError
├── ConfigError (ValueError)            a bad option, URL or argument; nothing was stored
│   └── PathError (OSError)             the spool path is a file, unwritable, or unusable
├── SerializationError (TypeError)      an item the serializer cannot encode; nothing was stored
├── RecordTooLargeError (ValueError)    an encoded record over ``max_record_bytes``
├── UndecodableRecordError (ValueError) a stored record its serializer cannot read back
│   └── TamperedRecordError             an encrypted record failed authentication
├── FormatError                         a directory written by an unknown, newer format
├── LockedError                         another process holds the spool directory (.pid)
├── StorageError (OSError)              the disk refused a write, fsync or rename (EIO, EROFS)
│   └── DiskFullError                   no space left (ENOSPC, EDQUOT) or file too large (EFBIG)
├── ClosedError                         the queue/spool was closed or taken over
├── SpoolFull (queue.Full)              ``when_full="raise"`` and the spool is at ``max_bytes``
├── SinkError                           raised by sinks; carries ``.sink``
│   ├── TransientError                  worth retrying (network blip, 5xx, 429)
│   ├── PermanentError                  never worth retrying: dead-letter at once
│   └── PartialFailure                  some records of a batch failed (``.failed``)
├── RetryExhausted                      every attempt failed; keeps ``.last_error``
├── UnknownDeferredError                a deferred call names no registered function
└── UnsupportedPlatformError            ``import spoolkit`` where fcntl or os.posix_fallocate
    (ImportError)                       is missing (Windows, macOS)
```

The queue re-exports :class:`queue.Empty` and :class:`queue.Full` as ``spoolkit.Empty`` and
``spoolkit.Full``, exactly as ``pqueue`` and the standard library do.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterable
from typing import Any

__all__ = [
    "ClosedError",
    "ConfigError",
    "DiskFullError",
    "FormatError",
    "LockedError",
    "PartialFailure",
    "PathError",
    "PermanentError",
    "PutCancelled",
    "RecordTooLargeError",
    "RetryExhausted",
    "SerializationError",
    "SinkError",
    "SpoolError",
    "SpoolFull",
    "TamperedRecordError",
    "StorageError",
    "TransientError",
    "UndecodableRecordError",
    "UnknownDeferredError",
    "UnsupportedPlatformError",
]


class SpoolError(Exception):
    """Root of every error spoolkit raises on purpose."""


class ConfigError(SpoolError, ValueError):
    """A bad option, URL or argument. Nothing was stored or changed."""


class PathError(ConfigError, OSError):
    """The spool path cannot be used: empty, a file, not writable, a directory of unrelated
    files, or a name inside the spool replaced by a symlink (planted files are never followed).

    Attributes:
        path: the offending path.
    """

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:
        return str(self.args[0])


class SerializationError(SpoolError, TypeError):
    """The serializer could not encode an item. The queue is unchanged."""


class RecordTooLargeError(SpoolError, ValueError):
    """An encoded record is larger than ``max_record_bytes`` (or can never fit in ``max_bytes``).

    The queue is unchanged.

    Attributes:
        size: the encoded size in bytes.
        limit: the configured limit.
        setting: the option that sets it: ``"max_record_bytes"`` or ``"max_bytes"``.
    """

    def __init__(self, size: int, limit: int, setting: str = "max_record_bytes") -> None:
        super().__init__(
            f"encoded record is {size} bytes, over {setting}={limit}; "
            f"raise {setting} or store the payload elsewhere and queue a reference"
        )
        self.size = size
        self.limit = limit
        self.setting = setting


class UndecodableRecordError(SpoolError, ValueError):
    """A stored record cannot be decoded: not in its serializer's format, or its key is missing.

    Raised by a serializer's ``loads``. The queue skips such a record for the session, logs
    it (``record_undecodable``) and counts it (``Queue.undecodable``, ``SpoolStats.undecodable``);
    it stays on disk and is tried again after a restart.
    """


class TamperedRecordError(UndecodableRecordError):
    """An encrypted record failed authentication: it was altered, or sealed with another key.

    Raised by :class:`spoolkit.crypto.EncryptedSerializer` before anything is decrypted, so
    the inner serializer never sees the bytes. Handled like any undecodable record.
    """


class FormatError(SpoolError):
    """The directory holds a spool in a format this version cannot read.

    Attributes:
        path: the spool directory.
    """

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class LockedError(SpoolError):
    """Another process holds the spool directory.

    Attributes:
        path: the spool directory.
        pid: the holder's process id, when it could be read.
    """

    def __init__(self, path: str, pid: int | None) -> None:
        holder = f"process {pid}" if pid else "another process"
        super().__init__(
            f"spool directory {path!r} is in use by {holder}; a queue directory (a Queue, or "
            "one lane of a Spool) holds one process at a time: wait for that process, use a "
            "different directory, or open the spool with Spool, whose lanes give every process "
            "its own (read-only tools such as `spoolkit inspect` need no lock)"
        )
        self.path = path
        self.pid = pid


class StorageError(SpoolError, OSError):
    """The disk refused an operation: an I/O error, a read-only filesystem, a failed rename.

    Records stored before are kept. The message says what became of the call's own records
    (not stored, or stored but not fsynced); ``errno`` is the underlying error's.

    Attributes:
        path: the spool directory.
        stored: for ``put_many``, how many of its items (a prefix) were stored; else None.
    """

    def __init__(
        self, message: str, *, path: str, errno: int | None = None, stored: int | None = None
    ) -> None:
        if errno is None:
            super().__init__(message)
        else:
            super().__init__(errno, message)
        self.path = path
        self.stored = stored

    def __str__(self) -> str:
        return str(self.args[-1])


class DiskFullError(StorageError):
    """No room for a record: ``ENOSPC``, ``EDQUOT``, or a file size limit (``EFBIG``).

    The record was not stored; puts work again once there is room.
    """


class ClosedError(SpoolError):
    """The queue or spool was closed, or taken over by a newer instance on the same path."""


class SpoolFull(SpoolError, queue.Full):
    """The spool reached ``max_bytes`` and ``when_full="raise"`` was chosen."""


class SinkError(SpoolError):
    """Base class of errors raised by sinks.

    Attributes:
        sink: a short, credential-free description of the sink, when known.
    """

    def __init__(self, message: str = "", *, sink: str | None = None) -> None:
        super().__init__(message)
        self.sink = sink


class TransientError(SinkError):
    """A failure worth retrying (the destination is down, busy or rate limiting).

    Attributes:
        retry_after: seconds the destination asked us to wait, when it said.
    """

    def __init__(
        self, message: str = "", *, sink: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, sink=sink)
        self.retry_after = retry_after


class PermanentError(SinkError):
    """A failure no retry can fix: the batch is dead-lettered at once."""


class PartialFailure(SinkError):
    """Some records of a batch failed; the others were accepted.

    Raise it from ``Sink.write`` with the records (or their ids) that failed: the rest of the
    batch is acknowledged and only the failed ones are retried.

    Attributes:
        failed: ids of the records that failed.
        cause: the underlying error, when there is one.
    """

    def __init__(
        self,
        failed: Iterable[Any],
        message: str = "",
        *,
        cause: BaseException | None = None,
        sink: str | None = None,
    ) -> None:
        ids = [getattr(r, "id", r) for r in failed]
        super().__init__(message or f"{len(ids)} record(s) of the batch failed", sink=sink)
        self.failed = ids
        self.cause = cause


class RetryExhausted(SpoolError):
    """Every attempt allowed by the retry policy failed.

    Attributes:
        attempts: how many attempts were made.
        last_error: the error of the last attempt.
    """

    def __init__(self, attempts: int, last_error: BaseException) -> None:
        super().__init__(f"gave up after {attempts} attempt(s): {last_error!r}")
        self.attempts = attempts
        self.last_error = last_error


class UnknownDeferredError(SpoolError, LookupError):
    """A deferred call names a function no ``@spool.deferred`` registered in this process.

    Attributes:
        name: the registered name the record asked for.
    """

    def __init__(self, name: str) -> None:
        super().__init__(
            f"no function is registered for deferred calls named {name!r}; import the "
            "module that defines it before starting the spool, then requeue the dead letter"
        )
        self.name = name


class UnsupportedPlatformError(SpoolError, ImportError):
    """spoolkit cannot run here: raised by ``import spoolkit`` where the calls its disk queue
    makes are missing (``fcntl``, ``os.posix_fallocate``: Windows, macOS). It runs on Linux,
    and on POSIX systems with the same calls."""


class PutCancelled(asyncio.CancelledError):
    """The ``CancelledError`` a cancelled ``aput``/``aput_many`` raises: it says what it stored.

    It is an ``asyncio.CancelledError`` (not a :class:`SpoolError`), so task cancellation
    works as usual.

    Attributes:
        stored: for ``aput``, whether the record was stored (True: it will be delivered;
            False: it was not, putting it again does not duplicate it). For ``aput_many``,
            how many items, from the first, were stored (the rest were not).
    """

    def __init__(self, stored: bool | int) -> None:
        super().__init__(f"put cancelled; stored={stored!r}")
        self.stored = stored
