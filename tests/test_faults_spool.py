"""Faults injected into a Spool: its disk fills, and its dead letters cannot be written.

Producers get a typed error; workers keep draining; a batch is acknowledged only once its sink
took it or its dead letter is stored; when the fault clears, everything stored is delivered or
dead-lettered.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from spoolkit import Spool
from spoolkit.errors import DiskFullError, PermanentError, StorageError
from spoolkit.testing import MemorySink
from spoolkit.typing import Record
from tests.helpers.faults import (
    EIO,
    ENOSPC,
    Faults,
    LogEvents,
    fill_until_full,
    log_events,
    needs_root,
    tmpfs,
)


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Faults:
    """os calls that fail on demand under a directory."""
    return Faults(monkeypatch)


@pytest.fixture
def events() -> Iterator[LogEvents]:
    """spoolkit's log events, as they are emitted."""
    with log_events() as handler:
        yield handler


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 512 KiB tmpfs, unmounted afterwards."""
    with tmpfs(tmp_path / "small", "512k") as mnt:
        yield mnt


class GatedSink(MemorySink):
    """A MemorySink whose writes wait until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def write(self, batch: Sequence[Record]) -> None:
        assert self.gate.wait(30)
        super().write(batch)


@needs_root
@pytest.mark.parametrize("when_full", ["block", "raise", "drop_newest"])
def test_spool_on_a_full_disk_raises_drains_and_recovers(small_fs: Path, when_full: str) -> None:
    """A real full tmpfs: put raises DiskFullError; workers drain all stored; puts resume."""
    sink = GatedSink()
    with Spool(
        small_fs / "spool",
        sink,
        workers=2,
        batch_size=50,
        batch_interval=0,
        serializer="raw",
        when_full=when_full,  # type: ignore[arg-type]  # max_bytes is not set: no effect
    ) as spool:
        stored, error = fill_until_full(spool.put, lambda i: b"%06d" % i + os.urandom(1000))
        assert len(stored) > 100
        assert "No space left" in str(error)
        sink.gate.set()  # the sink comes back: the workers drain what is stored
        assert sink.wait_for(len(stored))
        assert spool.flush(30)
        spool.put(b"after the disk had room again")
        assert spool.flush(30)
        assert spool.stats().backlog == 0
    assert sorted(sink.items) == sorted([*stored, b"after the disk had room again"])


def _always_permanent(batch: Sequence[Record]) -> None:
    raise PermanentError("refused")


@pytest.mark.parametrize(
    "case",
    [
        ("pwrite", ENOSPC, DiskFullError, 200_000),  # the entry needs the chunk to grow
        ("fsync", EIO, StorageError, 10),  # the dead letters are fsynced before the ack
    ],
    ids=["enospc", "eio-fsync"],
)
def test_dead_lettering_that_fails_does_not_acknowledge_the_batch(
    tmp_path: Path, faults: Faults, events: LogEvents, case: tuple[str, int, type[Exception], int]
) -> None:
    """The dead-letter store refuses a batch: it stays in the spool until the store takes it."""
    call, code, kind, size = case
    crashed = events.expect("worker_crashed")
    items = [b"%d" % i + b"x" * size for i in range(3)]
    spool = Spool(tmp_path / "spool", _always_permanent, workers=1, batch_interval=0)
    faults.fail(call, code, tmp_path / "spool" / "dead")
    spool.start()
    try:
        spool.put_many(items)
        assert crashed.wait(10)
        crash = next(e for e in events.events if e.get("event") == "worker_crashed")
        assert kind.__name__ in str(crash["error"])
        stats = spool.stats()
        assert stats.worker_restarts >= 1
        assert stats.backlog == 3  # not acknowledged: still in the spool
        assert stats.dead_lettered == 0
        faults.clear()
        assert spool.flush(30)
        assert spool.stats().backlog == 0
        dead = {letter.record.item for letter in spool.dead_letters.list()}
        assert dead == set(items)  # each at least once (a failed fsync may leave a copy)
    finally:
        faults.clear()
        spool.stop()


@needs_root
def test_spool_takes_records_again_after_a_disk_full_episode(tmp_path: Path) -> None:
    """The issue's case: a Spool (default chunksize) on a real small tmpfs put until
    DiskFullError (one chunk grown to most of the disk), then drained by its sink; puts then
    succeed, in this Spool and in a new one."""
    record = os.urandom(8192)
    with tmpfs(tmp_path / "small", "8m") as mnt:
        sink = MemorySink()
        spool = Spool(mnt / "spool", sink, serializer="raw")  # the defaults, as in the issue
        stored, _error = fill_until_full(spool.put, lambda i: b"%06d" % i + record)
        with spool:  # the workers start once the disk is full
            assert spool.flush(30)
            assert spool.stats().backlog == 0
            after = [b"after-%d" % i + record for i in range(10)]
            for item in after:
                spool.put(item)  # DiskFullError here is the wedge
            assert spool.flush(30)
        again = MemorySink()
        with Spool(mnt / "spool", again, workers=1, batch_interval=0, serializer="raw") as spool:
            spool.put(b"after a restart" + record)
            assert spool.flush(30)
    assert sorted(sink.items) == sorted([*stored, *after])
    assert again.items == [b"after a restart" + record]
