"""kill -9 of a real process at random moments during put, get, ack, rollover and cleanup."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from spoolkit import Queue
from tests._queue_child import item

ROOT = Path(__file__).resolve().parent.parent


def _cut_torn_tail(log: Path) -> None:
    """Drop a line the killed child was writing to its log: a write of several pages can be
    cut short by kill -9, and the records of that write were never acknowledged (the child
    acks after the write returns), so they come back and are logged again."""
    if not log.exists():
        return
    with open(log, "r+b") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            f.truncate(end)


def _run_cycles(tmp_path: Path, cycles: int, fsync: str, seed: int) -> None:
    rng = random.Random(seed)
    spool = tmp_path / "spool"
    log = tmp_path / "processed.log"
    put_returned: set[int] = set()
    ack_returned: set[int] = set()
    started: list[int] = []
    for cycle in range(cycles):
        first = cycle * 1_000_000
        started.append(first)
        child = subprocess.Popen(
            [sys.executable, "-m", "tests._queue_child", str(spool), str(first), str(log), fsync],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None
        target = rng.randint(1, 600)
        for seen, line in enumerate(child.stdout, 1):
            kind, n = line.split()
            (put_returned if kind == b"P" else ack_returned).add(int(n))
            if seen >= target:
                break
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read()  # lines written before the kill still count
        for line in rest.splitlines():
            kind, n = line.split()
            (put_returned if kind == b"P" else ack_returned).add(int(n))
        child.stdout.close()
        child.wait()
        assert child.returncode == -signal.SIGKILL
        _cut_torn_tail(log)

    processed = log.read_text().split() if log.exists() else []
    with Queue(spool, chunksize=16) as q:
        remaining = [d.item for d in q.get_batch(10**9, timeout=0)]
    everything = processed + remaining
    valid = {item(int(s.split(":")[0])) for s in everything}
    corrupted = [s for s in everything if s not in valid]
    assert corrupted == [], "a record came back different from what was put"
    seen_numbers = {int(s.split(":")[0]) for s in everything}
    assert all(any(f <= n < f + 1_000_000 for f in started) for n in seen_numbers)
    lost = put_returned - seen_numbers
    assert lost == set(), f"{len(lost)} record(s) whose put returned were lost"
    redelivered_after_ack = ack_returned & {int(s.split(":")[0]) for s in remaining}
    assert redelivered_after_ack == set(), "acknowledged records were delivered again"
    assert put_returned, "the children never got to put anything: the test proved nothing"


def test_kill_9_loses_nothing_put_or_acked(tmp_path: Path) -> None:
    """30 kill -9 cycles: nothing put is lost, nothing acked returns, nothing is corrupted."""
    _run_cycles(tmp_path, cycles=30, fsync="interval", seed=7)


def test_kill_9_with_fsync_always(tmp_path: Path) -> None:
    """The same invariants hold with fsync="always" (group commit on the put path)."""
    _run_cycles(tmp_path, cycles=10, fsync="always", seed=11)


@pytest.mark.slow
def test_kill_9_many_cycles(tmp_path: Path) -> None:
    """300 kill -9 cycles (long version)."""
    _run_cycles(tmp_path, cycles=300, fsync="interval", seed=3)
