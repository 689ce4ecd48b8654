"""Opening files inside a spool without following a symlink someone planted there.

Whoever can write a spool directory could otherwise replace a file spoolkit opens (``lock``, a
chunk, ``meta.json``) or a subdirectory (``dead/``, ``lanes/``, ``lanes/<n>/``) with a symlink
to a file or directory elsewhere, and make spoolkit truncate or write *that*. Every file inside
a spool is therefore opened with ``O_NOFOLLOW`` (a symlink in its place fails with ``ELOOP``,
reported as :class:`~spoolkit.errors.PathError`), and every subdirectory is checked with
``lstat`` before spoolkit opens a store in it. The spool root itself may be a symlink: an
operator who points it elsewhere chose to (it is resolved once, when the spool is opened).
"""

from __future__ import annotations

import errno
import os
import stat

from spoolkit.errors import PathError
from spoolkit.queue.chunk import FREE_PREFIX, parse_chunk_name

__all__ = [
    "NOFOLLOW",
    "check_not_symlink",
    "open_nofollow",
    "refuse_planted_links",
    "symlink_error",
]

NAMES = frozenset(
    ("lock", "meta.json", "idle", "dead", "lanes", "consumers.lock", "pqueue-0.1", "info")
)
"""The names a spool directory's own files and subdirectories have (besides chunks ``qNNNNN``,
retired chunks ``.free-N`` and temporary ``*.tmp`` files)."""

NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def symlink_error(path: str) -> PathError:
    """The error for a symlink found where the spool keeps a file or directory of its own."""
    return PathError(
        f"{path!r} is a symbolic link, where spoolkit keeps a file or directory of its own; "
        "spoolkit never follows links inside a spool (someone with write access to the spool "
        "directory may have planted it): remove the link, check who can write the spool "
        "directory, and open the spool again",
        path,
    )


def open_nofollow(path: str, flags: int, mode: int = 0o600) -> int:
    """``os.open(path, flags | O_NOFOLLOW | O_CLOEXEC, mode)``.

    Raises:
        PathError: ``path`` is a symlink.
        OSError: any other error of ``open``.
    """
    try:
        return os.open(path, flags | NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise symlink_error(path) from exc
        raise


def check_not_symlink(path: str) -> None:
    """Refuse ``path`` if it is a symlink (a missing path is fine: it will be created).

    Raises:
        PathError: ``path`` is a symlink.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise symlink_error(path)


def _ours(name: str) -> bool:
    return (
        name in NAMES
        or parse_chunk_name(name) is not None
        or name.startswith(FREE_PREFIX)
        or name.endswith(".tmp")
    )


def refuse_planted_links(directory: str) -> None:
    """Refuse a spool directory in which one of the spool's own names is a symlink.

    Raises:
        PathError: naming the first such link.
    """
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_symlink() and _ours(entry.name):
                raise symlink_error(entry.path)
