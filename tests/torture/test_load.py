"""Load: 8 producers, 4 workers, a sink failing 20% of batches, 30 s; memory stays flat."""

from __future__ import annotations

from pathlib import Path

from spoolkit._torture.load import run_load


def test_sustained_load_loses_nothing_and_memory_stays_flat(tmp_path: Path) -> None:
    """30 s of load: nothing lost, the backlog drains, the second half's RSS peak stays put."""
    report = run_load(tmp_path / "spool", seconds=30.0, producers=8, workers=4, fail_rate=0.2)
    print(report.line())  # the figures, for the docs (pytest -s)
    assert report.records > 10_000
    assert report.failed_writes > 0, "the sink never failed: the test proved nothing"
    assert report.lost == 0
    assert report.drained
    assert report.memory_flat, report.line()
