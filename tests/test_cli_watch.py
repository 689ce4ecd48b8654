"""`spoolkit inspect --watch`: a view refreshed until Ctrl-C, which ends it quietly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from spoolkit import Queue
from spoolkit.cli import EXIT_OK, cli, watch
from spoolkit.cli.inspect_cmd import _show


def _spool(path: Path, n: int) -> Path:
    with Queue(path, serializer="json") as q:
        q.put_many([{"n": i} for i in range(n)])
    return path


def test_inspect_watch_prints_one_json_line_per_refresh(tmp_path: Path) -> None:
    """--watch --json with a bounded number of refreshes prints that many JSON lines."""
    path = _spool(tmp_path / "s", 10)
    args = ["inspect", str(path), "--watch", "0.1", "--refreshes", "3", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == EXIT_OK, result.output
    views = [json.loads(line) for line in result.stdout.splitlines()]
    assert [v["backlog"] for v in views] == [10, 10, 10]
    assert result.stderr.count("Ctrl-C to stop") == 3


def test_each_refresh_reads_the_spool_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record put between two views shows in the next one (the wait is where it is put)."""
    path = _spool(tmp_path / "s", 2)
    puts = iter(range(100))

    def put_one(_seconds: float) -> None:
        with Queue(path, serializer="json") as q:
            q.put({"n": 100 + next(puts)})

    watch.run(lambda: _show(str(path), True, pretty=False), 5.0, 3, str(path), sleep=put_one)
    out = capsys.readouterr().out
    assert [json.loads(line)["backlog"] for line in out.splitlines()] == [2, 3, 4]


def test_ctrl_c_ends_a_watch_quietly(tmp_path: Path) -> None:
    """SIGINT to `spoolkit inspect --watch` in a real process: exit 0, no traceback, no
    "Aborted!"."""
    path = _spool(tmp_path / "s", 5)
    proc = subprocess.Popen(
        [sys.executable, "-m", "spoolkit", "inspect", str(path), "--watch", "0.2", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the first view is out
        assert json.loads(first)["backlog"] == 5
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_OK, err
    assert "Traceback" not in err
    assert "Aborted" not in err
