"""Spool.stats() figures that come from the lanes' files: records found lost on open."""

from __future__ import annotations

from pathlib import Path

from spoolkit import Queue, Spool
from spoolkit.testing import MemorySink


def test_records_lost_in_a_lane_reach_the_spool_stats(tmp_path: Path) -> None:
    """A middle chunk file deleted before the spool opens: stats().lost_records counts it."""
    with Queue(str(tmp_path), chunksize=10, serializer="raw") as q:
        q.put_many([b"item-%d" % i for i in range(45)])
    (tmp_path / "q00002").unlink()  # records 20..29
    spool = Spool(tmp_path, MemorySink(), serializer="raw")
    try:
        assert spool.stats().lost_records == 10
        spool.start()
        assert spool.flush(10)
        assert spool.stats().delivered == 35
    finally:
        spool.stop(timeout=5)
    assert spool.stats().lost_records == 10
