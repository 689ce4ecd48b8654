"""Fault injection at the file-I/O seam: ``os`` calls that fail on demand under one directory.

spoolkit's disk code reaches the operating system through a handful of ``os`` functions
(``pwrite`` and ``posix_fallocate`` to reserve chunk space, ``fsync``, ``write``
and ``replace`` for ``meta.json``, ``open``/``rename``/``unlink`` for chunk files); chunk data
itself goes through a memory map, whose writes cannot fail once the space is reserved.
:class:`Faults` wraps those functions so that, while a fault is armed, calls on paths under a
chosen directory raise ``OSError``.
"""

from __future__ import annotations

import errno as errno_mod
import logging
import os
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spoolkit.errors import DiskFullError
from tests.helpers import spoolkit_logs_to

FD_CALLS = ("fsync", "write", "pwrite", "posix_fallocate")  # first argument: a file descriptor
PATH_CALLS = ("open", "rename", "replace", "unlink")  # first argument: a path


@dataclass
class _Rule:
    code: int
    under: str
    only: Callable[[tuple[Any, ...]], bool] | None


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class Faults:
    """Arm and clear failures of ``os`` functions for paths under a directory.

    Attributes:
        hits: how many calls each armed function failed.
        hit: set whenever an armed function fails.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._rules: dict[str, _Rule] = {}
        self._lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.hit = threading.Event()
        for name in (*FD_CALLS, *PATH_CALLS):
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))

    def fail(
        self,
        name: str,
        code: int,
        under: str | os.PathLike[str],
        only: Callable[[tuple[Any, ...]], bool] | None = None,
    ) -> None:
        """Make ``os.<name>`` raise ``OSError(code)`` for paths under ``under``.

        Args:
            name: ``fsync``, ``write``, ``pwrite``, ``posix_fallocate``, ``open``, ``rename``,
                ``replace`` or ``unlink``.
            code: the errno, e.g. ``errno.ENOSPC``.
            under: the directory whose files fail (resolved).
            only: a further filter on the call's arguments.
        """
        with self._lock:
            self._rules[name] = _Rule(code, os.path.realpath(under), only)

    def clear(self, *names: str) -> None:
        """Stop failing ``names`` (all of them when none is given)."""
        with self._lock:
            for name in names or list(self._rules):
                self._rules.pop(name, None)

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            rule = self._rules.get(name)
            if rule is not None:
                target = args[0]
                path = _fd_path(target) if name in FD_CALLS else os.path.abspath(target)
                inside = path == rule.under or path.startswith(rule.under + os.sep)
                if inside and (rule.only is None or rule.only(args)):
                    with self._lock:
                        self.hits[name] += 1
                    self.hit.set()
                    raise OSError(rule.code, os.strerror(rule.code), path)
            return real(*args, **kwargs)

        return call


def creating(args: tuple[Any, ...]) -> bool:
    """``only`` filter: an ``os.open`` call that may create the file."""
    return len(args) > 1 and bool(args[1] & os.O_CREAT)


ENOSPC = errno_mod.ENOSPC
EIO = errno_mod.EIO
EROFS = errno_mod.EROFS


class LogEvents(logging.Handler):
    """Collects spoolkit's log events; :meth:`expect` gives an Event set when one is logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[dict[str, object]] = []
        self.seen: dict[str, threading.Event] = {}

    def expect(self, name: str) -> threading.Event:
        """An Event set once event ``name`` is logged (from now on)."""
        self.seen[name] = event = threading.Event()
        return event

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record's event dict; wake whoever expects it."""
        fields = getattr(record, "spoolkit", {})
        self.events.append(fields)
        event = self.seen.get(str(fields.get("event")))
        if event is not None:
            event.set()


@contextmanager
def log_events() -> Iterator[LogEvents]:
    """Collect the ``spoolkit`` logger's events, at every level, while inside."""
    with spoolkit_logs_to(LogEvents()) as handler:
        yield handler


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("CI") != "true",
    reason="mounting a tmpfs needs root (under CI=true this runs, and fails without root)",
)
"""For tests that mount a real small filesystem: skipped on a developer's machine without root,
never under ``CI=true``, where the suite runs as root and a skip would hide a broken setup."""


@contextmanager
def tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` (``"256k"``) mounted on a new directory ``mnt`` while inside.

    Mounting needs root."""
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def fill_until_full(
    put: Callable[[bytes], object], item: Callable[[int], bytes]
) -> tuple[list[bytes], DiskFullError]:
    """``put(item(i))`` for i = 0, 1, ... until a put raises DiskFullError.

    Returns the items that were stored, in order, and that error."""
    stored: list[bytes] = []
    while True:
        data = item(len(stored))
        try:
            put(data)
        except DiskFullError as exc:
            return stored, exc
        stored.append(data)
