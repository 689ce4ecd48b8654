"""Private spool directories: created ``0700`` whatever the umask; looser ones are reported.

A spool's records (and, with the pickle serializer, code that runs when they are loaded) are
only as safe as the directory that holds them, so spoolkit creates it, and every parent it has
to create on the way, readable and writable by the owner alone. Files inside are created
``0600`` where they are opened (chunks, metadata, lock). A directory that already exists keeps
the mode its owner gave it: a looser one is logged as a warning, never changed.
"""

from __future__ import annotations

import contextlib
import os
import stat

from spoolkit._internal.log import get_logger

__all__ = ["DIR_MODE", "FILE_MODE", "make_private_dir"]

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(path: str) -> None:
    """Create ``path`` and any missing parents with mode ``0700``; warn if it exists looser.

    The mode is set with ``chmod`` after ``mkdir``, so the umask cannot widen or narrow it.
    Parents that already exist are left alone.

    Args:
        path: an absolute directory path.

    Raises:
        OSError: a directory could not be created.
    """
    if os.path.isdir(path):
        _warn_if_loose(path)
        return
    missing: list[str] = []
    head = path
    while head and not os.path.isdir(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            os.mkdir(directory, DIR_MODE)
            os.chmod(directory, DIR_MODE)


def _warn_if_loose(path: str) -> None:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        get_logger(path=path).warning(
            "spool_dir_permissions_loose",
            mode=oct(mode),
            hint=f"other users may read its records{_WRITABLE if mode & 0o022 else ''}; "
            f"run chmod 700 {path!r} unless this is deliberate",
        )


_WRITABLE = " and, being able to write, forge them (pickle: run code as this user)"
