"""Waiting with the standard library's rules: for room to put, for records to get.

A bounded queue (``maxsize``, ``max_bytes``) makes ``put`` wait for room; every queue makes
``get`` wait for records. Both follow ``queue.Queue``: ``block=False`` never waits, a
negative ``timeout`` is a ``ValueError`` even when no wait is needed, and closing the queue
wakes every waiter with ``ClosedError``. The queue's facade holds its lock (the one under the
store's conditions) around every call here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from queue import Full
from threading import Condition

from spoolkit.errors import RecordTooLargeError
from spoolkit.queue.framing import FRAME_HEADER_SIZE
from spoolkit.queue.store import Store

__all__ = ["Waits"]

_monotonic = time.monotonic


def _check_timeout(block: bool, timeout: float | None) -> None:
    if block and timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


class Waits:
    """The bounds of one queue, and the waits for room and for records.

    Attributes:
        bounded: whether ``put`` may have to wait (``maxsize > 0`` or a ``max_bytes``).
        getters: callers waiting for records now: a put notifies one only when there is one.
    """

    __slots__ = ("_store", "bounded", "getters", "max_bytes", "maxsize")

    def __init__(self, store: Store, maxsize: int, max_bytes: int | None) -> None:
        self._store = store
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.bounded = maxsize > 0 or max_bytes is not None
        self.getters = 0

    def full(self, size: int) -> bool:
        """Whether a record of ``size`` payload bytes has no room now."""
        store = self._store
        if 0 < self.maxsize <= store.pending_total:
            return True
        return (
            self.max_bytes is not None
            and store.bytes_used + size + FRAME_HEADER_SIZE > self.max_bytes
        )

    def check_size(self, size: int) -> None:
        """Refuse a record that could never fit under ``max_bytes``."""
        if self.max_bytes is not None and size + FRAME_HEADER_SIZE > self.max_bytes:
            raise RecordTooLargeError(size + FRAME_HEADER_SIZE, self.max_bytes, "max_bytes")

    def wait_for_room(self, size: int, block: bool, timeout: float | None) -> None:
        """Return once a record of ``size`` payload bytes fits.

        Raises:
            Full: no room at once (``block=False``) or within ``timeout``.
            RecordTooLargeError: it could never fit under ``max_bytes``.
            ValueError: ``timeout`` is negative.
            ClosedError: the queue was closed meanwhile.
        """
        _check_timeout(block, timeout)
        self.check_size(size)
        if not self.full(size):
            return
        if not block:
            raise Full
        if not self._wait(self._store.not_full, lambda: not self.full(size), timeout):
            raise Full

    def wait_for_records(self, block: bool, timeout: float | None) -> bool:
        """Whether a record waits to be handed out, waiting for one as ``block``/``timeout`` say.

        Raises:
            ValueError: ``timeout`` is negative.
            ClosedError: the queue was closed meanwhile.
        """
        store = self._store
        _check_timeout(block, timeout)
        if store.pending_total:
            return True
        if not block:
            return False
        self.getters += 1
        try:
            return self._wait(store.not_empty, lambda: store.pending_total > 0, timeout)
        finally:
            self.getters -= 1

    def _wait(self, condition: Condition, ready: Callable[[], bool], timeout: float | None) -> bool:
        """Wait on ``condition`` until ``ready()``; False if ``timeout`` passed first."""
        store = self._store
        deadline = None if timeout is None else _monotonic() + timeout
        while not ready():
            store.check_open()
            if deadline is None:
                condition.wait()
            else:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    return False
                condition.wait(remaining)
        store.check_open()
        return True
