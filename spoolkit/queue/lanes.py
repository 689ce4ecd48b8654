"""Lanes: the queue directories of one spool, one per writing process.

A spool directory is itself a queue directory, lane 0 (so a spool written before lanes existed
opens as its first lane, unchanged). Further lanes are ordinary queue directories under
``<spool>/lanes/<n>`` (``n`` from 1), each with its own lock. A process writes to a lane it
holds; a lane whose lock is free is nobody's, and any process may take it.

Lanes are never removed: a free lane is taken again by the next process that needs one, so
their number stays at the most processes that wrote at once (twice that with producer-only
processes, which hand full lanes over). This module only names and creates them.
"""

from __future__ import annotations

import os

from spoolkit.queue.perms import DIR_MODE, make_private_dir
from spoolkit.queue.safe_open import check_not_symlink, symlink_error

__all__ = ["LANES", "lane_paths", "new_lane"]

LANES = "lanes"


def lane_paths(root: str) -> list[str]:
    """Every lane of the spool at ``root``: ``root`` itself first, then ``lanes/1``, ``2``...

    Raises:
        PathError: ``lanes`` or a lane in it is a symlink (spoolkit never follows one inside
            a spool: a planted link would send a lane's files elsewhere).
    """
    parent = os.path.join(root, LANES)
    check_not_symlink(parent)
    try:
        with os.scandir(parent) as entries:
            found = [(e.name, e.is_symlink(), e.path) for e in entries]
    except FileNotFoundError:
        found = []
    numbers = []
    for name, link, path in found:
        if name.isdigit() and name[0] != "0":
            if link:
                raise symlink_error(path)
            numbers.append(int(name))
    numbers.sort()
    return [root, *(os.path.join(root, LANES, str(n)) for n in numbers)]


def new_lane(root: str) -> str:
    """Create a lane directory no other process has created, and return its path.

    ``mkdir`` is atomic: two processes creating one at once get different numbers.
    """
    parent = os.path.join(root, LANES)
    check_not_symlink(parent)
    make_private_dir(parent)
    n = len(lane_paths(root))
    while True:
        path = os.path.join(parent, str(n))
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            n += 1
            continue
        os.chmod(path, DIR_MODE)  # whatever the umask
        return path
