"""The multi-process crash loop (issue 16): writers and a consumer on one spool, kill -9."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spoolkit._torture.child import make_item
from spoolkit._torture.procs import run_procs_loop
from spoolkit._torture.procs_ledger import ProcsLedger, ProcsReport
from spoolkit.queue.lanes import lane_paths


def _assert_clean(report: ProcsReport, cycles: int) -> None:
    assert report.ok, "\n".join([report.line(), *report.problems])
    assert report.lost == 0
    assert report.cycles == cycles
    assert report.records > 400 * cycles, "the writers put too little for the test to mean much"
    assert report.delivered + report.dead_lettered >= report.records
    assert report.dead_lettered > 0, "no poison record was dead-lettered in the shared store"
    aimed = {phase for phase in report.kills if phase not in ("end", "hung")}
    assert aimed, f"no kill landed inside a phase: {report.kills}"
    assert report.exits > 0, "no process ended by a normal exit"
    assert report.processes > (report.writers + 1) * cycles, "no killed process was replaced"


def test_writers_and_consumer_killed_at_random_lose_nothing(tmp_path: Path) -> None:
    """4 writers + a consumer, 3 cycles of random SIGKILLs and restarts: 0 lost, 0 invented."""
    report = run_procs_loop(tmp_path, writers=4, cycles=3, seed=16, linger=1.0)
    _assert_clean(report, 3)
    assert len(lane_paths(str(tmp_path / "spool"))) > 4, "the writers never wrote side by side"


@pytest.mark.slow
def test_long_multi_process_crash_loop(tmp_path: Path) -> None:
    """20 cycles of 4 writers and a consumer killed at random: 0 lost, every phase hit."""
    report = run_procs_loop(tmp_path, writers=4, cycles=20, seed=1600)
    _assert_clean(report, 20)
    aimed = set(report.kills) - {"end", "hung"}
    assert {"@put", "P", "@write", "@ack", "@open"} <= aimed, report.kills


def test_procs_mode_prints_one_final_line(tmp_path: Path) -> None:
    """`python -m spoolkit.torture procs --writers 2 --cycles 1` prints the summary line, exit 0."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "spoolkit.torture",
            "procs",
            "--writers",
            "2",
            "--cycles",
            "1",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1
    fields = dict(f.split("=") for f in lines[0].split())
    assert list(fields)[:3] == ["writers", "cycles", "processes"]
    assert fields["writers"] == "2"
    assert fields["lost"] == "0"
    assert int(fields["records"]) > 0


_UNREFERENCED = """
import sys, time
import spoolkit

class SlowFileSink:  # 20 ms a batch: delivering 200 records takes about 0.4 s
    def __init__(self, path):
        self.path = path
    def write(self, batch):
        time.sleep(0.02)
        with open(self.path, "a") as f:
            f.write("".join(f"{r.item}\\n" for r in batch))

def start(path, out):
    spool = spoolkit.Spool(path, SlowFileSink(out), workers=1, batch_size=10, batch_interval=0)
    spool.put_many(range(200))
    spool.start()  # returns, and nothing references the spool any more

start(sys.argv[1], sys.argv[2])
"""


def test_running_spool_nothing_references_delivers_at_exit(tmp_path: Path) -> None:
    """A started Spool the program dropped is still stopped at a normal exit: all delivered."""
    script = tmp_path / "app.py"
    script.write_text(_UNREFERENCED)
    out = tmp_path / "delivered.txt"
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "spool"), str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    delivered = out.read_text().split() if out.exists() else []
    assert sorted(map(int, delivered)) == list(range(200)), f"{len(delivered)} of 200 delivered"


# -- the checker, on doctored logs -------------------------------------------------------------


def _line(worker: str, *numbers: int, pad: str | None = None) -> bytes:
    fields = []
    for n in numbers:
        item = make_item(n)
        fields.append(f"u-{n},{n},{pad or item['pad']},{item['sum']}")
    return (" ".join(["B", worker, *fields]) + "\n").encode()


def _ledger() -> ProcsLedger:
    ledger = ProcsLedger()
    ledger.child_line(1, b"@put 1 6")
    ledger.child_line(1, b"P 1 6")
    return ledger


def test_checker_passes_deliveries_split_over_processes() -> None:
    """Six records delivered once each, by two processes side by side: no problem."""
    ledger = _ledger()
    ledger.sink_lines(2, _line("w0", 1, 2, 3))
    ledger.sink_lines(3, _line("w0", 4, 5, 6))
    assert not ledger.check_kept(0, [], [], final=True)
    assert ledger.duplicates() == 0
    assert ledger.problems == []


def test_checker_detects_loss() -> None:
    """A record whose put returned and that no process delivered is reported missing."""
    ledger = _ledger()
    ledger.sink_lines(2, _line("w0", 1, 2, 3) + _line("w1", 4, 6))
    assert ledger.check_kept(0, [], [], final=True) == {5}
    assert any("neither delivered" in p for p in ledger.problems)


def test_checker_allows_redelivery_of_a_killed_process_batch_in_flight() -> None:
    """A killed process's last batch may come again from another process, in any log order."""
    ledger = _ledger()
    ledger.sink_lines(3, _line("w1", 3, 4))  # the process that took over, read first
    ledger.sink_lines(2, _line("w0", 1, 2) + _line("w0", 3, 4))
    ledger.killed.add(2)
    assert ledger.duplicates() == 2
    assert ledger.problems == []


def test_checker_rejects_redelivery_outside_the_batch_in_flight() -> None:
    """An earlier batch of a killed process, or any batch of one that was not killed, may not
    come again."""
    ledger = _ledger()
    ledger.sink_lines(2, _line("w0", 1, 2) + _line("w0", 3, 4))
    ledger.sink_lines(3, _line("w0", 1))  # 2 was killed, but 1 was in an older batch
    ledger.sink_lines(4, _line("w0", 5))
    ledger.sink_lines(5, _line("w0", 5))  # 4 was never killed
    ledger.killed.add(2)
    ledger.duplicates()
    assert sum("outside a batch in flight" in p for p in ledger.problems) == 2


def test_checker_allows_redelivery_after_a_stop_that_ran_out_of_time() -> None:
    """A process whose stop at exit was cut short left its batch in flight: it may come again."""
    ledger = _ledger()
    ledger.sink_lines(2, _line("w0", 1, 2))
    ledger.sink_lines(3, _line("w0", 1, 2))
    ledger.cut_short.add(2)
    assert ledger.duplicates() == 2
    assert ledger.problems == []


def test_checker_rejects_redelivery_within_one_process() -> None:
    """One process delivering a record twice is a problem, killed or not."""
    ledger = _ledger()
    ledger.sink_lines(2, _line("w0", 1) + _line("w1", 1))
    ledger.killed.add(2)
    ledger.duplicates()
    assert any("twice by one process" in p for p in ledger.problems)


def test_checker_detects_corruption_invention_and_swallowed_puts() -> None:
    """A changed pad, a number never put, and a handler that swallowed a put are problems."""
    ledger = _ledger()
    ledger.child_line(1, b"F 7 7 errors=1,dropped=0")
    ledger.sink_lines(2, _line("w0", 1, pad="00ff") + _line("w0", 99))
    assert any("delivered corrupted" in p for p in ledger.problems)
    assert any("99" in p and "never put" in p for p in ledger.problems)
    assert any("failed to store 7" in p for p in ledger.problems)
