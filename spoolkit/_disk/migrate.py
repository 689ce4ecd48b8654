"""Opening a directory written by ``pqueue`` 0.1.x: its pending items become spoolkit records.

Crash-safe in steps: pqueue's files are first moved (one atomic rename each) into the
``pqueue-0.1/`` subdirectory; the pending items are read from there and written as spoolkit
chunks; only once those are fsynced is the subdirectory removed. A crash before that point
starts the migration again from the moved files on the next open.
"""

from __future__ import annotations

import os
import pickle
import shutil

from spoolkit._disk.meta import read_meta
from spoolkit._disk.perms import make_private_dir
from spoolkit._disk.segment import parse_chunk_name

BACKUP = "pqueue-0.1"
INFO = "info"


def pending_pqueue_items(path: str) -> list[bytes] | None:
    """Move pqueue's files aside and return its pending items re-pickled, or None if none."""
    backup = os.path.join(path, BACKUP)
    top_info = os.path.join(path, INFO)
    if os.path.exists(top_info) and not os.path.exists(os.path.join(path, "meta.json")):
        make_private_dir(backup)
        for name in sorted(os.listdir(path)):
            if parse_chunk_name(name) is not None:
                os.replace(os.path.join(path, name), os.path.join(backup, name))
        os.replace(top_info, os.path.join(backup, INFO))
    if not os.path.isdir(backup):
        return None
    info = read_meta(path)
    if info is not None and info.get("migrated_from_pqueue"):
        finish(path)  # the items were stored before a crash cut the clean-up short
        return None
    return [pickle.dumps(item, 5) for item in _read_pending(backup)]


def _read_pending(backup: str) -> list[object]:
    try:
        with open(os.path.join(backup, INFO), "rb") as f:
            info = pickle.load(f)  # written by pqueue itself in this directory
        tnum, _tcnt, toffset = info["tail"]
        size = int(info["size"])
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError):
        return []
    items: list[object] = []
    num, offset = tnum, toffset
    while len(items) < size:
        chunk = os.path.join(backup, f"q{num:05d}")
        if not os.path.exists(chunk):
            break
        with open(chunk, "rb") as f:
            f.seek(offset)
            while len(items) < size:
                try:
                    items.append(pickle.load(f))
                except EOFError:
                    break
                except (pickle.UnpicklingError, ValueError, AttributeError, ImportError):
                    break  # a torn last write, as pqueue itself would drop
        num, offset = num + 1, 0
    return items


def finish(path: str) -> None:
    """Remove pqueue's moved files once their items are stored durably."""
    shutil.rmtree(os.path.join(path, BACKUP), ignore_errors=True)
