"""The crash loop: 50 real kill -9 cycles, the long mode's CLI, and a checker that can fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from spoolkit._torture.child import make_item
from spoolkit._torture.ledger import Ledger
from spoolkit.torture import run_crash_loop


def test_fifty_kill_cycles_lose_nothing(tmp_path: Path) -> None:
    """50 SIGKILLs spread over every phase: nothing lost, nothing corrupted or invented."""
    report = run_crash_loop(tmp_path, cycles=50, seed=7)
    assert report.ok, "\n".join([report.line(), *report.problems])
    assert report.cycles == 50
    assert report.records > 1000, "the children put too little for the test to mean much"
    assert report.lost == 0
    assert report.dead_lettered > 0, "no poison record was ever dead-lettered"
    aimed = {k for k in report.kills if k.startswith("@")}
    assert aimed == {"@put", "@write", "@ack", "@roll", "@cleanup", "@dead"}


def test_long_mode_prints_one_final_line(tmp_path: Path) -> None:
    """`python -m spoolkit.torture --cycles 3` prints exactly the summary line and exits 0."""
    out = subprocess.run(
        [sys.executable, "-m", "spoolkit.torture", "--cycles", "3", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1
    fields = dict(f.split("=") for f in lines[0].split())
    assert list(fields) == ["cycles", "records", "duplicates", "lost"]
    assert fields["cycles"] == "3"
    assert fields["lost"] == "0"
    assert int(fields["records"]) > 0


def _line(worker: str, *numbers: int, pad: str | None = None) -> bytes:
    fields = []
    for n in numbers:
        item = make_item(n)
        fields.append(f"u-{n},{n},{pad or item['pad']},{item['sum']}")
    return (" ".join(["B", worker, *fields]) + "\n").encode()


def _ledger() -> Ledger:
    ledger = Ledger()
    ledger.child_line(b"@put 1 6")
    ledger.child_line(b"P 1 6")
    return ledger


def test_checker_passes_a_clean_log() -> None:
    """All six records delivered once, intact: no problem, nothing missing."""
    ledger = _ledger()
    ledger.sink_lines(0, _line("w0", 1, 2, 3) + _line("w1", 4, 5, 6))
    assert not ledger.check_kept(0, [], [], final=True)
    assert ledger.problems == []


def test_checker_detects_loss() -> None:
    """A record whose put returned and that is nowhere is reported missing."""
    ledger = _ledger()
    ledger.sink_lines(0, _line("w0", 1, 2, 3) + _line("w1", 4, 6))
    assert ledger.check_kept(0, [], [], final=True) == {5}
    assert any("neither delivered" in p for p in ledger.problems)


def test_checker_counts_waiting_and_dead_records_as_kept() -> None:
    """Records still in the spool or in the dead letters are not lost (mid-loop)."""
    ledger = _ledger()
    ledger.sink_lines(0, _line("w0", 1, 2, 3))
    assert not ledger.check_kept(0, [4, 5], [6], final=False)
    assert ledger.problems == []


def test_checker_detects_corruption_and_invented_records() -> None:
    """A changed pad is corruption; a number never put is an invented record."""
    ledger = _ledger()
    ledger.sink_lines(0, _line("w0", 1, pad="00ff") + _line("w0", 99))
    assert any("delivered corrupted" in p for p in ledger.problems)
    assert any("99" in p and "never put" in p for p in ledger.problems)


def test_checker_allows_redelivery_only_of_the_batch_in_flight() -> None:
    """After a kill, the worker's last batch may come again; an earlier batch may not."""
    ledger = _ledger()
    ledger.sink_lines(0, _line("w0", 1, 2) + _line("w0", 3, 4))
    ledger.killed.add(0)
    ledger.sink_lines(1, _line("w0", 3, 4))  # the batch in flight at the kill
    assert ledger.problems == []
    assert ledger.duplicates == 2
    ledger.sink_lines(1, _line("w1", 1))  # acknowledged long before the kill
    assert any("not in flight" in p for p in ledger.problems)


def test_checker_rejects_redelivery_without_a_crash() -> None:
    """A record delivered twice by one process (no kill in between) is a problem."""
    ledger = _ledger()
    ledger.sink_lines(0, _line("w0", 1) + _line("w1", 1))
    assert any("without a crash" in p for p in ledger.problems)
