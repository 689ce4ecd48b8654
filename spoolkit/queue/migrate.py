"""Opening a directory written by ``pqueue`` 0.1.x: its pending items become spoolkit records.

Crash-safe in steps: pqueue's files are first moved (one atomic rename each) into the
``pqueue-0.1/`` subdirectory; the pending items are read from there and written as spoolkit
chunks; only once those are fsynced is the subdirectory removed. A crash before that point
starts the migration again from the moved files on the next open.

Items are never unpickled: each one's pickle is cut out of pqueue's stream by walking its
opcodes (``pickletools.genops``, which runs nothing) and stored as it is, so an item whose class
cannot be imported here is kept for a process that can. A pqueue directory therefore needs the
``pickle`` serializer. If pqueue's ``info`` file cannot be read, every item in its chunk files
is kept (some may have been consumed already: at-least-once).
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import shutil

from spoolkit._internal.log import get_logger
from spoolkit.errors import ConfigError, PathError
from spoolkit.queue.chunk import parse_chunk_name
from spoolkit.queue.meta import read_meta
from spoolkit.queue.perms import make_private_dir
from spoolkit.queue.safe_open import check_not_symlink, open_nofollow

BACKUP = "pqueue-0.1"
INFO = "info"


def pending_pqueue_items(path: str, serializer_name: str) -> list[bytes] | None:
    """Move pqueue's files aside and return its pending items' pickles, or None if none.

    Raises:
        ConfigError: the directory holds pqueue items and the serializer is not pickle.
    """
    backup = os.path.join(path, BACKUP)
    top_info = os.path.join(path, INFO)
    check_not_symlink(backup)  # a planted link would send pqueue's files elsewhere
    fresh = os.path.exists(top_info) and not os.path.exists(os.path.join(path, "meta.json"))
    if not fresh and not os.path.isdir(backup):
        return None
    info = read_meta(path)
    if info is not None and info.get("migrated_from_pqueue"):
        finish(path)  # the items were stored before a crash cut the clean-up short
        return None
    if serializer_name != "pickle":
        raise ConfigError(
            f"{path!r} holds pqueue items, which are pickles; open it with "
            f"serializer='pickle' (not {serializer_name!r}) to migrate them"
        )
    if fresh:
        make_private_dir(backup)
        for name in sorted(os.listdir(path)):
            if parse_chunk_name(name) is not None:
                os.replace(os.path.join(path, name), os.path.join(backup, name))
        os.replace(top_info, os.path.join(backup, INFO))
    return _read_pending(backup)


def _read_pending(backup: str) -> list[bytes]:
    chunks = sorted(n for n in map(parse_chunk_name, os.listdir(backup)) if n is not None)
    try:
        with open(open_nofollow(os.path.join(backup, INFO), os.O_RDONLY), "rb") as f:
            info = pickle.load(f)  # written by pqueue itself in this directory
        num, _tcnt, offset = info["tail"]
        size: float = int(info["size"])
    except PathError:
        raise
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
        get_logger(path=os.path.dirname(backup)).warning(
            "pqueue_info_unreadable", error=repr(exc), kept="every item in its chunk files"
        )
        num, offset, size = (chunks[0] if chunks else 0), 0, math.inf
    items: list[bytes] = []
    while len(items) < size and chunks and num <= chunks[-1]:
        chunk = os.path.join(backup, f"q{num:05d}")
        if os.path.exists(chunk):
            with open(open_nofollow(chunk, os.O_RDONLY), "rb") as f:
                f.seek(offset)
                data = f.read()
            items += _split_pickles(data, size - len(items))
        num, offset = num + 1, 0
    return items


def _split_pickles(data: bytes, most: float) -> list[bytes]:
    """The consecutive pickles at the start of ``data``, up to ``most``, each as its bytes.

    Stops at the first one that is torn or damaged, as pqueue itself would.
    """
    out: list[bytes] = []
    f = io.BytesIO(data)
    while len(out) < most and f.tell() < len(data):
        start = f.tell()
        try:
            for _ in pickletools.genops(f):  # walks the opcodes up to STOP, runs nothing
                pass
        except ValueError:
            break
        out.append(data[start : f.tell()])
    return out


def finish(path: str) -> None:
    """Remove pqueue's moved files once their items are stored durably."""
    shutil.rmtree(os.path.join(path, BACKUP), ignore_errors=True)
