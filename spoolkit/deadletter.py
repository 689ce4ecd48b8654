"""The dead-letter store: records no sink would take, kept with why, until someone decides.

Each spool keeps its dead letters in ``<spool path>/dead/``, itself a
:class:`spoolkit.Queue` (checksummed frames, ``fsync="always"``), opened for each operation
only, so that every process of a spool adds to it, and any of them (or the CLI) lists it, in
turn. Entries an operation takes and does not remove go back when it closes the store.

A record is written there and fsynced *before* the original is acknowledged, so a crash in
between leaves it in both places (delivered again, dead-lettered again: at least once, never
lost).

:meth:`DeadLetters.requeue` copies entries back into the spool under their old record ids,
fsyncs them, and only then removes them from the store: killed half-way, a requeued record may
stay in the dead letters too (requeue it again, or purge it; the sink sees it at least once).
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import threading
import traceback
import weakref
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from spoolkit._internal.log import get_logger
from spoolkit._internal.redact import redact_exception_text
from spoolkit.queue.facade import Delivery, Queue
from spoolkit.queue.safe_open import check_not_symlink
from spoolkit.typing import Record

__all__ = ["DeadError", "DeadLetter", "DeadLetters"]

_FORMAT = 1
LOCK_TIMEOUT = 30.0  # seconds an operation waits for another process's use of the store


@dataclass(frozen=True, slots=True)
class DeadError:
    """Why a record was dead-lettered: the stored description of the error, not an exception.

    A frozen record kept with each dead letter (:attr:`DeadLetter.error`): the error's type
    name, message and traceback as text, so that it can be written to disk, read back in
    another process and shown by the CLI. It is no exception class: it is never raised and
    cannot be caught. (The name reads like an exception's; it stays because it is public
    API, ``spoolkit.DeadError``.)

    Attributes:
        type: the qualified name of the exception type.
        message: ``str()`` of the exception.
        traceback: the formatted traceback text ("" when there was none).
    """

    type: str
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> DeadError:
        """Describe ``exc``."""
        kind = type(exc)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else (f"{kind.__module__}.{kind.__qualname__}")
        )
        # the error itself and what it was raised from; not the earlier attempts' errors
        # that tenacity leaves as implicit context
        text = "".join(traceback.format_exception(exc, chain=exc.__cause__ is not None))
        # a driver's exception in the chain may quote a URL or header a sink masked in its own
        return cls(name, redact_exception_text(exc, str(exc)), redact_exception_text(exc, text))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead record.

    Attributes:
        record: the record as its sink last saw it.
        error: the error of the last attempt.
        attempts: attempts made in the process that gave up.
        first_attempt_at: wall-clock time of the first of those attempts.
        last_attempt_at: wall-clock time of the last one.
    """

    record: Record
    error: DeadError
    attempts: int
    first_attempt_at: float
    last_attempt_at: float

    @property
    def id(self) -> str:
        """The record id."""
        return self.record.id


@dataclass(frozen=True, slots=True)
class DeadEntry:
    """What :meth:`DeadLetters.add` stores: a record still encoded, with its error."""

    record_id: str
    payload: bytes
    enqueued_at: float
    error: DeadError
    attempts: int
    first_attempt_at: float
    last_attempt_at: float

    @classmethod
    def build(  # noqa: PLR0917 - mirrors the fields
        cls,
        backend: Any,
        messages: Sequence[Any],
        attempts: Sequence[int],
        exc: BaseException,
        first_attempt_at: float,
        last_attempt_at: float,
    ) -> list[DeadEntry]:
        """Entries for ``messages`` of ``backend`` that failed with ``exc``, re-encoded."""
        error = DeadError.from_exception(exc)
        ids = backend.record_ids(messages)
        return [
            cls(
                rid,
                backend.encode(m.item),
                m.enqueued_at,
                error,
                n,
                first_attempt_at,
                last_attempt_at,
            )
            for rid, m, n in zip(ids, messages, attempts, strict=True)
        ]

    def to_wire(self) -> tuple[Any, ...]:
        """A plain tuple, stable across versions of this class."""
        e = self.error
        return (
            _FORMAT,
            self.record_id,
            self.payload,
            self.enqueued_at,
            (e.type, e.message, e.traceback),
            self.attempts,
            self.first_attempt_at,
            self.last_attempt_at,
        )

    @classmethod
    def from_wire(cls, data: tuple[Any, ...]) -> DeadEntry:
        """The inverse of :meth:`to_wire`."""
        _v, rid, payload, t, (etype, emsg, etb), attempts, first, last = data
        return cls(rid, payload, t, DeadError(etype, emsg, etb), attempts, first, last)


class _WireSerializer:
    """Pickles :meth:`DeadEntry.to_wire` tuples; loads them without resolving any global.

    An entry holds only tuples, strings, bytes and numbers, none of which needs a global to
    load, so refusing every global costs nothing and keeps the store safe to read even when
    someone else could write it: a pickle that names a class or function is undecodable
    (skipped and counted by the queue), never run. Named ``pickle`` (the format on disk).
    """

    name = "pickle"

    def dumps(self, obj: Any) -> bytes:
        """Pickle ``obj``."""
        return pickle.dumps(obj, 5)

    def loads(self, data: bytes) -> Any:
        """Unpickle plain data; any global raises ``pickle.UnpicklingError``."""
        return _NoGlobals(io.BytesIO(data)).load()


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"dead-letter entries hold no objects, found {module}.{name}")


class DeadLetters:
    """The dead letters of one spool (``spool.dead_letters``).

    Every method is thread-safe; :meth:`list`, :meth:`requeue` and :meth:`purge` read the whole
    store, so they cost time proportional to the number of dead letters.

    Args:
        path: the store's directory (``<spool path>/dead``).
        decode: turns a stored payload back into the item (the spool's serializer).
        restore: puts a payload back into the spool under its record id, durably.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        decode: Callable[[bytes], Any],
        restore: Callable[[bytes, str, float], None],
    ) -> None:
        self._path = os.fspath(path)
        self._decode = decode
        self._restore = restore
        self._lock = threading.Lock()
        _ALIVE.add(self)  # a forked child gets a fresh lock (see _after_fork_child)
        self._len = self._bytes = 0
        with self._opened() as q:  # creates and checks the store now, not at the first add
            self._path = q.path
        self._log = get_logger(path=self._path)
        self.undecodable = 0
        """Entries the last :meth:`list` left out because their item could not be decoded."""

    @contextlib.contextmanager
    def _opened(self) -> Iterator[Queue]:
        """The store, opened for one operation (every process of the spool shares it).

        Raises:
            PathError: ``dead`` is a symlink (a planted link would send dead letters
                elsewhere).
        """
        check_not_symlink(self._path)
        q = Queue(
            self._path,
            chunksize=256,
            serializer=_WireSerializer(),
            fsync="always",
            lock_timeout=LOCK_TIMEOUT,
        )
        try:
            yield q
        finally:
            self._len, self._bytes = q.unfinished_tasks, q.bytes_used
            q.close()

    @property
    def path(self) -> str:
        """The store's directory."""
        return self._path

    def add(self, entries: Sequence[DeadEntry]) -> None:
        """Store ``entries`` and fsync them before returning.

        Raises:
            OSError: the disk refused them; nothing may be acknowledged then.
            LockedError: another process held the store for over 30 s.
        """
        if entries:
            with self._lock, self._opened() as q:
                q.put_many([e.to_wire() for e in entries], durable=True)

    @staticmethod
    def _take_all(q: Queue) -> list[tuple[Delivery, DeadEntry]]:
        batch = q.get_batch(1 << 62, timeout=0)
        return [(d, DeadEntry.from_wire(d.item)) for d in batch]

    def _letter(self, entry: DeadEntry) -> DeadLetter | None:
        try:
            item = self._decode(entry.payload)
        except Exception as exc:
            self._log.error("dead_letter_undecodable", record_id=entry.record_id, error=repr(exc))
            return None
        record = Record(entry.record_id, item, entry.enqueued_at, entry.attempts)
        return DeadLetter(
            record, entry.error, entry.attempts, entry.first_attempt_at, entry.last_attempt_at
        )

    def list(self) -> list[DeadLetter]:
        """Every dead letter, oldest first.

        An entry whose item the spool's serializer cannot read back (its class was renamed,
        its key is gone) is left out, logged (``dead_letter_undecodable``) and counted in
        :attr:`undecodable`; it stays stored, and :meth:`requeue` and :meth:`purge` still act
        on it by id.
        """
        with self._lock, self._opened() as q:
            taken = self._take_all(q)
        letters = [self._letter(e) for _, e in taken]
        self.undecodable = letters.count(None)
        return [x for x in letters if x is not None]

    def _select(self, ids: Collection[str] | None, act: Callable[[DeadEntry], None] | None) -> int:
        wanted = None if ids is None else set(ids)
        with self._lock, self._opened() as q:
            taken = self._take_all(q)
            chosen = [(d, e) for d, e in taken if wanted is None or e.record_id in wanted]
            done: list[Delivery] = []
            try:
                for d, e in chosen:
                    if act is not None:
                        act(e)
                    done.append(d)
            finally:
                q.ack(*done)
        return len(done)

    def requeue(self, ids: Collection[str] | None = None) -> int:
        """Put dead letters back into the spool, each keeping its record id.

        Args:
            ids: the record ids to requeue; ``None`` for all of them.

        Returns:
            How many were requeued.
        """
        return self._select(ids, lambda e: self._restore(e.payload, e.record_id, e.enqueued_at))

    def purge(self, ids: Collection[str] | None = None) -> int:
        """Delete dead letters for good.

        Args:
            ids: the record ids to delete; ``None`` for all of them.

        Returns:
            How many were deleted.
        """
        return self._select(ids, None)

    def len(self) -> int:
        """How many dead letters there are (``len(spool.dead_letters)`` works too)."""
        with self._lock, self._opened():
            pass
        return self._len

    def __len__(self) -> int:
        return self.len()

    def bytes_used(self) -> int:
        """Bytes the store took on disk when this process last opened it (no disk access)."""
        return self._bytes

    def close(self) -> None:
        """Nothing to release: the store is open only during each operation."""

    def __repr__(self) -> str:
        return f"<spoolkit.DeadLetters path={self.path!r} len={len(self)}>"


_ALIVE: weakref.WeakSet[DeadLetters] = weakref.WeakSet()
"""Every DeadLetters object alive in this process."""


def _after_fork_child() -> None:
    """In a forked child: a fresh lock for every store (one held in the parent at the fork
    would be held forever); the store itself is opened afresh at each operation."""
    for dead in list(_ALIVE):
        dead._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_child)
