"""Shared helpers for the Spool tests: a factory that stops every spool it made."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from spoolkit import Spool
from spoolkit.typing import Record


class BlockingSink:
    """A sink whose ``write`` waits for :attr:`release`; :attr:`entered` is set on each call."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[list[Record]] = []

    def write(self, batch: Sequence[Record]) -> None:
        """Record the batch, signal, and wait for the release."""
        self.batches.append(list(batch))
        self.entered.set()
        assert self.release.wait(30), "the test never released the sink"


def spool_factory(tmp_path: Path) -> Iterator[Any]:
    """``make_spool(sink, **options)`` opens a Spool under tmp_path; all are stopped after.

    Use as ``make_spool = pytest.fixture(name="make_spool")(spool_factory)`` in a test module.
    """
    made: list[Spool] = []

    def make(sink: Any, path: Path | None = None, **options: Any) -> Spool:
        options.setdefault("batch_interval", 0)
        spool = Spool(path or tmp_path / "spool", sink, **options)
        made.append(spool)
        return spool

    yield make
    for spool in made:
        spool.stop(drain=False, timeout=5)
