"""What spoolkit runs on: Linux, or a POSIX system with the same calls; checked on import.

The disk queue locks its directory with POSIX record locks (``fcntl``), reserves chunk space with
``os.posix_fallocate`` and writes with ``os.pwrite``; it opens directories (``O_DIRECTORY``) to
fsync them. Windows lacks ``fcntl``, macOS ``os.posix_fallocate``. Importing this module (the
first thing ``import spoolkit`` does) raises :class:`~spoolkit.errors.UnsupportedPlatformError`
where one of them is missing, instead of an ``AttributeError`` from deep inside a put.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from spoolkit.errors import UnsupportedPlatformError

__all__ = ["NEEDED", "missing_calls"]

NEEDED = ("fcntl", "os.posix_fallocate", "os.pwrite", "os.O_DIRECTORY", "os.O_CLOEXEC")


def missing_calls() -> list[str]:
    """The names of :data:`NEEDED` this platform lacks."""
    missing = []
    for name in NEEDED:
        module, _, attr = name.partition(".")
        if attr:
            if not hasattr(os, attr):
                missing.append(name)
        elif importlib.util.find_spec(module) is None:
            missing.append(name)
    return missing


_missing = missing_calls()
if _missing:
    raise UnsupportedPlatformError(
        "spoolkit runs on Linux/POSIX only (needs fcntl and os.posix_fallocate); this platform "
        f"is {sys.platform!r}, which lacks {', '.join(_missing)}"
    )
