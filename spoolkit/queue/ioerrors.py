"""Turning the operating system's ``OSError`` into spoolkit's :class:`StorageError` family."""

from __future__ import annotations

import errno

from spoolkit.errors import DiskFullError, SpoolError, StorageError

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

NOT_STORED = "nothing of this call was stored; records stored before are kept"
NOT_SYNCED = (
    "it is stored and will be delivered, but may not survive a power loss until a later "
    "fsync succeeds"
)


def storage_error(
    exc: OSError, path: str, doing: str, outcome: str, *, stored: int | None = None
) -> OSError:
    """The typed error to raise (``from exc``) for ``exc``, met while ``doing``.

    A :class:`SpoolError` that is also an ``OSError`` (such as ``PathError``) is returned as
    it is.

    Args:
        exc: what the operating system raised.
        path: the spool directory.
        doing: what failed, e.g. ``"cannot store the record"``.
        outcome: what became of the caller's records (``NOT_STORED``, ``NOT_SYNCED``...).
        stored: for ``put_many``, how many items were stored.
    """
    if isinstance(exc, SpoolError):
        return exc
    code = exc.errno
    reason = exc.strerror or str(exc)
    if code is not None:
        reason = f"{reason} ({errno.errorcode.get(code, code)})"
    kind = DiskFullError if code in _FULL else StorageError
    hint = "; free space and try again" if kind is DiskFullError else ""
    return kind(
        f"spool {path!r}: {doing}: {reason}; {outcome}{hint}",
        path=path,
        errno=code,
        stored=stored,
    )
