"""The crash demo: a real app process killed with SIGKILL, restarted, nothing lost."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from spoolkit.cli import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, cli
from spoolkit.cli.common import command_name
from spoolkit.cli.demo_cmd import EXIT_INTERRUPTED
from spoolkit.tools import demo as _demo
from spoolkit.tools import inspect as insp
from spoolkit.tools.demo_app import read_counter


def _post(url: str, records: list[dict[str, object]]) -> int:
    return httpx.post(url, content=json.dumps(records), timeout=5).status_code


def _record(seq: object) -> dict[str, object]:
    return {"id": f"x-{seq}", "enqueued_at": 0.0, "item": {"extra": {"seq": seq}}}


def test_collector_counts_unique_duplicates_and_unexpected() -> None:
    """The collector counts each record number once, extra copies as duplicates."""
    collector = _demo.Collector(expected=5, failure_rate=0.0)
    collector.start()
    try:
        assert _post(collector.url, [_record(0), _record(1)]) == 200
        assert _post(collector.url, [_record(1), _record(2), _record(99), _record("x")]) == 200
        assert _post(collector.url, [{"not": "a record"}]) == 200
    finally:
        collector.stop()
    assert (collector.unique, collector.duplicates, collector.unexpected) == (3, 1, 3)
    assert collector.missing(5) == [3, 4]
    assert collector.requests == 3


def test_collector_refuses_its_share_with_503() -> None:
    """With failure_rate=1 every request gets 503 and its records count as retried."""
    collector = _demo.Collector(expected=5, failure_rate=1.0)
    collector.start()
    try:
        assert _post(collector.url, [_record(0), _record(1)]) == 503
    finally:
        collector.stop()
    assert (collector.rejected, collector.retried_records, collector.unique) == (1, 2, 0)


def test_demo_loses_nothing_across_a_sigkill(tmp_path: Path) -> None:
    """2,000 records, a fifth of requests refused, the app killed half-way: none lost."""
    seen: list[_demo.DemoProgress] = []
    options = _demo.DemoOptions(records=2000, directory=str(tmp_path / "demo"), seed=3)
    result = _demo.run(options, seen.append)
    assert result.ok
    assert result.lost == 0
    assert result.produced == 2000
    assert result.delivered == 2000
    assert result.logged_at_kill >= 1000
    assert result.backlog_at_kill > 0  # the kill left records on disk, not yet delivered
    assert result.left_in_spool == 0
    assert result.dead_letters == 0
    assert result.requests > result.rejected
    assert result.records_per_second > 0
    assert [p.phase for p in seen][-1] == "done"
    assert seen[-1].delivered == 2000
    assert insp.inspect_spool(result.spool).backlog == 0


def test_demo_command_prints_json_and_exits_0(tmp_path: Path) -> None:
    """`spoolkit demo --records 1000 --json` reports no loss and exits 0."""
    args = ["demo", "--records", "1000", "--dir", str(tmp_path), "--json", "--seed", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == EXIT_OK, result.output
    data = json.loads(result.stdout)
    assert data["lost"] == 0
    assert data["produced"] == data["delivered_unique"] == 1000


def test_demo_command_exits_1_when_records_are_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any lost record makes the demo exit 1 with the count in the error."""
    fake = _demo.DemoResult(
        produced=10, delivered=9, duplicates=0, lost=1, requests=3, rejected=1,
        retried_records=5, killed_pid=1, logged_at_kill=5, backlog_at_kill=5, dead_letters=0,
        left_in_spool=0, unexpected=0, seconds=1.0, spool=str(tmp_path),
    )  # fmt: skip
    monkeypatch.setattr(_demo, "run", lambda options, on_progress: fake)
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["demo", "--dir", str(tmp_path)])
    assert result.exit_code == EXIT_PROBLEM
    assert "lost" in result.output
    assert "Error: 1 record(s) were lost" in result.output
    assert dataclasses.replace(fake, lost=0, delivered=10).ok


def test_demo_refuses_a_directory_holding_something_else(tmp_path: Path) -> None:
    """--dir whose spool/ is not a demo spool is a usage error, and is left alone."""
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "precious.txt").write_text("keep me")
    result = CliRunner().invoke(cli, ["demo", "--records", "10", "--dir", str(tmp_path)])
    assert result.exit_code == EXIT_USAGE
    assert "not a spool left by the demo" in result.output
    assert (tmp_path / "spool" / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "args", [["--records", "0"], ["--failure-rate", "1.5"], ["--kill-at", "0"]]
)
def test_demo_rejects_bad_options(args: list[str]) -> None:
    """Out-of-range options exit 2."""
    assert CliRunner().invoke(cli, ["demo", *args]).exit_code == EXIT_USAGE


def test_an_interrupted_demo_says_what_is_on_disk_and_how_to_go_on(tmp_path: Path) -> None:
    """SIGINT to `spoolkit demo` in a real process once the app has logged records: exit 130,
    the records waiting and dead letters on disk, the spool path and the commands to go on; no
    traceback, no bare "Aborted!"."""
    directory = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "spoolkit", "demo", "--records", "2000000", "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        # the progress marker: the app's counter of records logged
        while read_counter(str(directory / "counter")) < 1000:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the demo app logged nothing in 60 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_INTERRUPTED, err
    spool = directory / "spool"
    waiting = insp.inspect_spool(spool).backlog
    assert "interrupted" in err
    assert f"on disk in {spool}: {waiting:,} record(s) waiting, 0 dead letter(s)" in err
    assert f"inspect {spool}" in err
    assert f"drain {spool} --to" in err
    assert "Traceback" not in err
    assert "Aborted!" not in err


def test_the_hint_names_a_spoolkit_that_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command the demo suggests is `spoolkit` when that is on PATH, else the path of
    this installation's script (a .venv/bin/spoolkit that is not on PATH)."""
    script = Path(sys.executable).parent / "spoolkit"
    assert os.access(script, os.X_OK)
    monkeypatch.chdir(script.parent.parent.parent)
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    shown = command_name()
    assert shown == os.path.relpath(script)
    done = subprocess.run([shown, "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv("PATH", str(script.parent))
    assert command_name() == "spoolkit"
