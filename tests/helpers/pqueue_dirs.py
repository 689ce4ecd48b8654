"""Directories written by the real ``pqueue`` 0.1.7, kept under ``tests/data/pqueue-0.1.7/``.

The migration tests open what pqueue itself wrote, without needing pqueue installed (it is a
benchmark competitor, in the ``bench`` extra, not in ``dev``). Each directory is one entry of
:data:`SCENARIOS`: the items put, how many were then taken (``get`` + ``task_done``), and the
chunk size. To write them again (the files must not change while pqueue stays at 0.1.7)::

    pip install -e '.[bench]' && python -m tests.helpers.pqueue_dirs
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "data" / "pqueue-0.1.7"

# A module whose class pickles by reference; the migration test removes it again, so that the
# class cannot be imported while the spool migrates.
GONE_MODEL = (
    "class Order:\n"
    "    def __init__(self, n):\n        self.n = n\n"
    "    def __eq__(self, other):\n        return self.n == other.n\n"
)


def _orders() -> list[Any]:
    gone_model = importlib.import_module("gone_model")  # written by main() into sys.path
    return ["a", gone_model.Order(1), "b", gone_model.Order(2), "c"]


# name: (the items put, how many are then taken, the chunk size)
SCENARIOS: dict[str, tuple[Callable[[], list[Any]], int, int]] = {
    "dicts-23-taken-7": (lambda: [{"n": i} for i in range(23)], 7, 5),
    "ints-12-taken-2": (lambda: list(range(12)), 2, 5),
    "ints-12-taken-4": (lambda: list(range(12)), 4, 5),
    "a-b": (lambda: ["a", "b"], 0, 5),
    "gone-model": (_orders, 0, 5),
    "long-strings-chunksize-10": (lambda: ["x" * 50, "y" * 50, "z" * 50], 0, 10),
    "ints-5-chunksize-3": (lambda: list(range(5)), 0, 3),
}


def pqueue_dir(name: str, dest: Path) -> Path:
    """Copy the pqueue directory ``name`` to ``dest`` (which must not exist); return ``dest``."""
    shutil.copytree(DATA / name, dest)
    return dest


def _write(name: str, dest: Path, scratch: Path) -> None:
    import pqueue  # the bench extra

    items, taken, chunksize = SCENARIOS[name]
    dest.mkdir(parents=True)
    q = pqueue.Queue(str(dest), chunksize=chunksize, tempdir=str(scratch))
    for item in items():
        q.put(item)
    for _ in range(taken):
        q.get()
        q.task_done()
    q.headf.close()  # pqueue never closes its files itself
    q.tailf.close()


def main() -> None:
    """Write every scenario's directory again with the installed pqueue."""
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "gone_model.py").write_text(GONE_MODEL)
        sys.path.insert(0, scratch)
        shutil.rmtree(DATA, ignore_errors=True)
        for name in SCENARIOS:
            _write(name, DATA / name, Path(scratch))
    print(f"wrote {len(SCENARIOS)} pqueue directories under {DATA}")


if __name__ == "__main__":
    main()
