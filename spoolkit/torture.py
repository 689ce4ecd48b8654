"""Crash-loop torture: kill -9 a process running a Spool at chosen moments, restart, check.

``python -m spoolkit.torture --cycles 300`` runs the loop and prints one final line,
``cycles=N records=N duplicates=N lost=N``, exiting 1 if anything was lost or an invariant
broke. ``python -m spoolkit.torture load --seconds 300`` runs the load test instead, and
``python -m spoolkit.torture procs --writers 4 --cycles 20`` the multi-process crash loop
(several writer processes and a consumer on one spool: :mod:`spoolkit._torture.procs`).

Each cycle starts a child process (:mod:`spoolkit._torture.child`): producer threads put
numbered records into a :class:`~spoolkit.Spool` with small chunk files while workers deliver
them to a sink that logs every accepted batch, fsynced, and refuses a share of records for good
(so they are dead-lettered). The child announces every event on its stdout; the parent picks a
phase (put, sink write, ack, chunk rollover, chunk cleanup, dead-lettering, or any time), waits
for a random occurrence of it, then sends a real SIGKILL at once or within two milliseconds.
After each kill the invariants of :class:`~spoolkit._torture.ledger.Ledger` are checked against
the sink log and a lock-free read of the spool; a last cycle, never killed, drains everything.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

from spoolkit._torture.child import item_is_intact
from spoolkit._torture.ledger import CrashLoopReport, Ledger
from spoolkit.tools.inspect import dead_letters, peek

__all__ = ["PHASES", "CrashLoopReport", "check_sink_under_crash_loop", "main", "run_crash_loop"]

PHASES = ("@put", "@write", "@ack", "@roll", "@cleanup", "@dead", "anytime")
_STALL = 60.0  # seconds without a word from the child before it counts as hung


def _numbers(items: list[Any]) -> set[int]:
    return {int(i["n"]) for i in items if isinstance(i, dict) and "n" in i}


class _Loop:
    def __init__(self, directory: str, seed: int, config: dict[str, Any]) -> None:
        self.dir = directory
        self.rng = random.Random(seed)  # noqa: S311 - kill timing, not cryptography
        self.ledger = Ledger()
        self.kills: dict[str, int] = {}
        self.spool = os.path.join(directory, "spool")
        self.log = os.path.join(directory, "sink.log")
        sink_dir = os.path.join(directory, "sink")
        os.makedirs(sink_dir, exist_ok=True)
        self.config = {"spool": self.spool, "log": self.log, "sink_dir": sink_dir, **config}
        self.cut = os.path.getsize(self.log) if os.path.exists(self.log) else 0
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))

    def _most(self, phase: str) -> int:
        c = self.config
        per = max(1, int(c["records"]))
        most: dict[str, int] = {
            "@put": per // 2,
            "@write": per // 4,
            "@ack": per // 4,
            "@roll": per // c["chunksize"],
            "@cleanup": per // c["chunksize"],
            "@dead": per // max(1, c["poison_every"]) // 3,
        }
        return most.get(phase, 1)

    def cycle(self, cycle: int, *, drain: bool = False) -> None:
        rng = self.rng
        phase = PHASES[cycle % len(PHASES)]
        target = rng.randint(1, max(1, self._most(phase)))
        config = dict(self.config, first=cycle * 10_000_000, seed=cycle, drain=drain)
        if drain:
            config["records"] = 0
        with open(os.path.join(self.dir, "child-stderr.txt"), "wb") as err:
            child = subprocess.Popen(  # noqa: S603 - our own module, no shell
                [sys.executable, "-m", "spoolkit._torture.child", json.dumps(config)],
                stdout=subprocess.PIPE,
                stderr=err,
                env=self.env,
            )
        assert child.stdout is not None
        fd = child.stdout.fileno()
        buf, seen, kill_at, landed, done = b"", 0, None, "", False
        while True:
            now = time.monotonic()
            if kill_at is not None and now >= kill_at:
                os.kill(child.pid, signal.SIGKILL)
                break
            wait = _STALL if kill_at is None else kill_at - now
            if not select.select([fd], [], [], wait)[0]:
                if kill_at is None:
                    self.ledger.problem(f"cycle {cycle}: child silent for {_STALL:.0f} s")
                    kill_at, landed = now, "stalled"
                continue
            data = os.read(fd, 65536)
            if not data:
                break
            *lines, buf = (buf + data).split(b"\n")
            for line in lines:
                kind = self.ledger.child_line(line)
                if kill_at is not None or drain:
                    done = done or kind == "@done"
                    continue
                if phase == "anytime":
                    kill_at, landed = now + rng.uniform(0, 0.2), phase
                elif kind == phase:
                    seen += 1
                    if seen >= target:
                        delay = 0.0 if rng.random() < 0.5 else rng.uniform(0, 0.002)
                        kill_at, landed = now + delay, phase
                elif kind == "@idle":
                    kill_at, landed = now, "idle"
        for line in (buf + child.stdout.read()).split(b"\n"):
            if line:  # written before the kill landed: still counts
                self.ledger.child_line(line)
                done = done or line == b"@done"
        child.stdout.close()
        code = child.wait()
        if drain:
            if code != 0 or not done:
                self.ledger.problem(f"drain cycle: child exited {code}: {self._stderr()}")
        elif code != -signal.SIGKILL:
            self.ledger.problem(f"cycle {cycle}: child exited {code} by itself: {self._stderr()}")
            self.ledger.killed.discard(cycle)
        else:
            self.ledger.killed.add(cycle)
            self.kills[landed] = self.kills.get(landed, 0) + 1
        self._read_log(cycle)

    def _stderr(self) -> str:
        with open(os.path.join(self.dir, "child-stderr.txt"), "rb") as f:
            return f.read()[-2000:].decode(errors="replace")

    def _read_log(self, cycle: int) -> None:
        if not os.path.exists(self.log):
            return
        with open(self.log, "r+b") as f:
            f.seek(self.cut)
            section = f.read()
            end = section.rfind(b"\n") + 1
            if end < len(section):  # a torn last line: never acknowledged, cut it off
                f.truncate(self.cut + end)
        self.cut += end
        self.ledger.sink_lines(cycle, section[:end])

    def check(self, cycle: int, *, final: bool) -> set[int]:
        pending = _numbers([r.item for r in peek(self.spool, 1 << 40)])
        dead = _numbers([d.item for d in dead_letters(self.spool)])
        return self.ledger.check_kept(cycle, pending, dead, final=final)


def run_crash_loop(
    directory: str | os.PathLike[str],
    *,
    cycles: int,
    seed: int = 0,
    records_per_cycle: int = 200,
    producers: int = 2,
    workers: int = 2,
    batch_size: int = 16,
    chunksize: int = 16,
    poison_every: int = 29,
    transient_every: int = 13,
    sink_factory: str | None = None,
) -> CrashLoopReport:
    """Run ``cycles`` kill cycles and a final drain in ``directory``; check after each.

    Args:
        directory: where the spool (``spool/``), the sink log (``sink.log``) and the user
            sink's own directory (``sink/``) live. Kept afterwards for inspection.
        cycles: how many times the child is killed.
        seed: seeds the choice of kill instants (each child's data is seeded by its cycle).
        records_per_cycle: records each child puts before it waits to be killed.
        producers: producer threads per child.
        workers: the spool's workers.
        batch_size: the spool's batch size.
        chunksize: records per chunk file (small: frequent rollover and cleanup).
        poison_every: records whose number is a multiple of it are refused for good by the
            sink (dead-lettered); 0 for none.
        transient_every: the first attempt of a batch starting with a multiple of it fails
            transiently (retried); 0 for none.
        sink_factory: ``"module:callable"`` building the sink the records go to (see
            :func:`check_sink_under_crash_loop`); None delivers to the log alone.

    Returns:
        The report; :attr:`CrashLoopReport.ok` says whether every invariant held.
    """
    loop = _Loop(
        os.fspath(directory),
        seed,
        {
            "records": records_per_cycle,
            "producers": producers,
            "workers": workers,
            "batch_size": batch_size,
            "chunksize": chunksize,
            "poison_every": poison_every,
            "transient_every": transient_every,
            "factory": sink_factory,
        },
    )
    for cycle in range(cycles):
        loop.cycle(cycle)
        loop.check(cycle, final=False)
    loop.cycle(cycles, drain=True)
    lost = loop.check(cycles, final=True)
    return loop.ledger.report(cycles, len(lost), loop.kills, loop.dir)


def check_sink_under_crash_loop(
    sink_factory: str,
    *,
    cycles: int = 20,
    directory: str | os.PathLike[str] | None = None,
    seed: int = 0,
    records_per_cycle: int = 100,
    workers: int = 2,
    batch_size: int = 16,
    read_back: Callable[[str], Iterable[Any]] | None = None,
    allow_duplicates: bool = True,
) -> CrashLoopReport:
    """Run your sink under the crash loop: SIGKILL mid-put, mid-write, mid-ack, and so on.

    The sink is built in each child process by calling ``sink_factory`` (an importable
    ``"package.module:callable"``) with one argument: a directory that survives the kills
    (``<directory>/sink``), where a file-based sink can keep its output. Items are dicts
    ``{"n": int, "pad": str, "sum": str}``, JSON-safe.

    To know what your sink accepted, the helper wraps it: after your ``write(batch)`` returns
    (and only then), the wrapper logs the batch's record ids to ``<directory>/sink.log``,
    fsynced; for a :class:`~spoolkit.errors.PartialFailure` it logs the records that were not
    refused. A kill between your ``write`` returning and that log line only means the batch is
    delivered again, which is what at-least-once promises anyway: your sink must cope with
    redelivery (use ``record.id`` as an idempotency key).

    That log proves the spool handed every record to your sink; ``read_back`` proves your sink
    kept them: called in this process with the sink directory once the final drain is over, it
    returns the items your destination holds (e.g. the ``item`` of each line of a JSONL file).
    Every record whose ``put`` returned must be among them, intact; with
    ``allow_duplicates=False`` each only once (an idempotent sink).

    Args:
        sink_factory: ``"module:callable"``, called as ``callable(sink_dir)`` in the child.
        cycles: kills before the final drain.
        directory: where everything lives (pass pytest's ``tmp_path`` to look at your sink's
            output afterwards); None uses a temporary directory, removed before returning.
        seed: seeds the kill instants.
        records_per_cycle: records put per cycle.
        workers: the spool's workers.
        batch_size: the spool's batch size.
        read_back: ``read_back(sink_dir)`` returns the items found in your destination.
        allow_duplicates: with ``read_back``, whether an item may be there more than once.

    Returns:
        The report (no problem in it).

    Raises:
        AssertionError: a record was lost, delivered corrupted or never put, or redelivered
            without a crash; the message lists what went wrong.
    """
    temp = None if directory is not None else tempfile.mkdtemp(prefix="spoolkit-crash-")
    try:
        report = run_crash_loop(
            directory if directory is not None else str(temp),
            cycles=cycles,
            seed=seed,
            records_per_cycle=records_per_cycle,
            workers=workers,
            batch_size=batch_size,
            poison_every=0,
            transient_every=0,
            sink_factory=sink_factory,
        )
        if read_back is not None:
            _check_destination(report, read_back(os.path.join(report.directory, "sink")))
            if not allow_duplicates and report.duplicates_kept:
                report.problems.append(
                    f"the destination holds {report.duplicates_kept} duplicate item(s)"
                )
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    if not report.ok:
        raise AssertionError(
            f"{sink_factory} under the crash loop: {report.line()}\n" + "\n".join(report.problems)
        )
    return report


def _check_destination(report: CrashLoopReport, items: Iterable[Any]) -> None:
    counts: dict[int, int] = {}
    for item in items:
        n = int(item["n"]) if isinstance(item, dict) and "n" in item else -1
        if n < 0 or not item_is_intact(n, str(item.get("pad")), str(item.get("sum"))):
            report.problems.append(f"the destination holds a corrupted or foreign item: {item!r}")
            continue
        counts[n] = counts.get(n, 0) + 1
    missing = report.returned - counts.keys()
    if missing:
        report.problems.append(
            f"{len(missing)} record(s) missing from the destination, e.g. {sorted(missing)[:5]}"
        )
    report.lost = max(report.lost, len(missing))
    report.duplicates_kept = sum(c - 1 for c in counts.values())


def main(argv: list[str] | None = None) -> int:
    """The command line: the crash loop, ``load`` for the load test, ``procs`` for the
    multi-process crash loop. Returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["load"]:
        from spoolkit._torture.load import main as load_main  # noqa: PLC0415 - subcommand

        return load_main(args[1:])
    if args[:1] == ["procs"]:
        from spoolkit._torture.procs import main as procs_main  # noqa: PLC0415 - subcommand

        return procs_main(args[1:])
    parser = argparse.ArgumentParser(prog="python -m spoolkit.torture", description=__doc__)
    parser.add_argument("--cycles", type=int, default=50, help="kill cycles (default 50)")
    parser.add_argument("--dir", help="working directory (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill instants")
    parser.add_argument("--records-per-cycle", type=int, default=200)
    opts = parser.parse_args(args)
    with tempfile.TemporaryDirectory(prefix="spoolkit-torture-") as temp:
        report = run_crash_loop(
            opts.dir or temp,
            cycles=opts.cycles,
            seed=opts.seed,
            records_per_cycle=opts.records_per_cycle,
        )
    for text in report.problems:
        print(text, file=sys.stderr)
    print(report.line())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
