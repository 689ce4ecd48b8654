"""At-least-once for real: kill -9 a process running a Spool at random moments, reopen, check."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from spoolkit import Spool
from tests.helpers.spool_child import LogSink

ROOT = Path(__file__).resolve().parent.parent


def _parse(segment: bytes) -> list[tuple[str, list[tuple[str, int]]]]:
    """Complete batch lines of one cycle: (worker, [(record id, number)])."""
    batches = []
    for line in segment.split(b"\n")[:-1]:  # a torn last line was never acknowledged
        _b, worker, *pairs = line.decode().split(" ")
        batches.append((worker, [(p.split("=")[0], int(p.split("=")[1])) for p in pairs]))
    return batches


def _run_cycles(tmp_path: Path, cycles: int, seed: int) -> None:
    rng = random.Random(seed)
    spool_dir = tmp_path / "spool"
    log = tmp_path / "sink.log"
    put_returned: set[int] = set()
    cuts = [0]
    for cycle in range(cycles):
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.helpers.spool_child",
                str(spool_dir),
                str(log),
                str(cycle * 10_000_000),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None
        target = rng.randint(1, 3000)
        for seen, line in enumerate(child.stdout, 1):
            put_returned.add(int(line.split()[1]))
            if seen >= target:
                break
        os.kill(child.pid, signal.SIGKILL)
        for line in child.stdout.read().splitlines():  # written before the kill: still counts
            put_returned.add(int(line.split()[1]))
        child.stdout.close()
        child.wait()
        assert child.returncode == -signal.SIGKILL
        cuts.append(log.stat().st_size if log.exists() else 0)

    with Spool(spool_dir, LogSink(str(log)), batch_interval=0) as spool:
        assert spool.flush(30)
    data = log.read_bytes()
    cuts.append(len(data))

    sightings: dict[int, list[tuple[int, str, int, str]]] = defaultdict(list)
    last_batch: dict[tuple[int, str], int] = {}
    for cycle in range(len(cuts) - 1):
        segment = data[cuts[cycle] : cuts[cycle + 1]]
        for b, (worker, pairs) in enumerate(_parse(segment)):
            last_batch[cycle, worker] = b
            for rid, n in pairs:
                sightings[n].append((cycle, worker, b, rid))

    lost = put_returned - sightings.keys()
    assert not lost, f"{len(lost)} record(s) put before a kill were never delivered"
    final = len(cuts) - 2
    duplicated = 0
    for n, seen_at in sightings.items():
        assert len({rid for *_, rid in seen_at}) == 1, f"record {n} changed id"
        for cycle, worker, b, _rid in seen_at[:-1]:
            duplicated += 1
            assert cycle != final, f"record {n} delivered twice without a crash"
            assert b == last_batch[cycle, worker], (
                f"record {n} delivered again though its batch was not in flight at the kill"
            )
    assert put_returned, "the children never put anything: the test proved nothing"


def test_kill_9_delivers_every_record_at_least_once(tmp_path: Path) -> None:
    """20 kill -9 cycles: everything put is delivered; duplicates only from in-flight batches."""
    _run_cycles(tmp_path, cycles=20, seed=5)


@pytest.mark.slow
def test_kill_9_many_cycles(tmp_path: Path) -> None:
    """The same invariants over 150 cycles."""
    _run_cycles(tmp_path, cycles=150, seed=17)
