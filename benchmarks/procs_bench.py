"""Aggregate put rate of 1, 2 and 4 processes putting into one spool at once (issue 16).

Each process opens ``spoolkit.Spool(path, sink, consume=False)`` (a producer-only process: it
writes a lane of its own, delivers nothing) and puts ``--puts`` records of the usual log-shaped
dict one by one; with ``--handler`` rows, it logs ``--records`` records through a
``SpoolHandler(path, sink=..., spool_options={"consume": False})`` instead. The processes are
started, open their spool, say they are ready, and start putting together when the parent
writes a line to every one of them (the barrier); each reports when it started and ended
(``time.monotonic()``, one clock for the whole machine). The aggregate rate is all the records
put divided by the time from the first start to the last end.

"one spool" puts every process on the same path; "separate spools" gives each its own
directory: the same work with nothing shared, the ideal that lanes aim at. One process alone is
the same run in both layouts, measured once. Each configuration runs ``--rounds`` times,
interleaved: rates are the best run's; the ratio to 1 process is the median over the rounds of
each run against the same round's 1-process run (see :func:`report`). Beside them: the CPU
time each record cost its process (``time.process_time``, all its threads); "CPUs putting",
the rate times that cost, which is how many CPUs the processes kept busy (2 for two processes
on 2 CPUs that never wait on each other) and does not move with the speed of the machine; and
how many CPUs other work kept busy meanwhile (``/proc/stat`` less this benchmark's
processes). ``--patience S`` waits, before each run, up to S seconds for other work to keep
fewer than ``--quiet`` CPUs busy.

    python benchmarks/procs_bench.py [--puts 200000] [--records 50000] [--rounds 5] [--quick]
        [--patience SECONDS [--quiet CPUS]]

Writes benchmarks/results/procs_bench.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ITEM, save, table

PROCESSES = (1, 2, 4)
LAYOUTS = ("one spool", "separate spools")
_KEEP: list[Any] = []  # the child's spool or handler, open until the exit hooks close it


def _noop(batch: Sequence[Any]) -> None:
    """The sink: never called (the processes are producer-only)."""


def child(spec: dict[str, Any]) -> None:
    """One putting process: open, say ready, wait for the go line, put, report."""
    import spoolkit
    from spoolkit.producers import SpoolHandler

    n = int(spec["n"])
    if spec["how"] == "handler":
        handler = SpoolHandler(spec["path"], sink=_noop, spool_options={"consume": False})
        log = logging.getLogger("bench")
        log.propagate = False
        log.setLevel(logging.INFO)
        log.addHandler(handler)

        def work() -> None:
            info = log.info
            for i in range(n):
                info("user %s did %d things", "alice", i)

        _KEEP.append(handler)
    else:
        spool = spoolkit.Spool(spec["path"], _noop, consume=False)
        spool.start()

        def work() -> None:
            put = spool.put
            for _ in range(n):
                put(ITEM)

        _KEEP.append(spool)
    print("ready", flush=True)
    sys.stdin.readline()
    c0, t0 = time.process_time(), time.monotonic()
    work()
    c1, t1 = time.process_time(), time.monotonic()
    report = {"t0": t0, "t1": t1, "n": n, "cpu": c1 - c0, "pid": os.getpid()}
    print(json.dumps(report), flush=True)


def _busy() -> tuple[float, float]:
    """(CPU seconds spent busy by the whole machine, seconds elapsed) so far, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / tick, time.monotonic()


def others_busy(seconds: float) -> float:
    """How many CPUs the machine kept busy over the next ``seconds`` (this script idle)."""
    b0, t0 = _busy()
    time.sleep(seconds)  # a measuring window, not a synchronisation
    b1, t1 = _busy()
    return (b1 - b0) / (t1 - t0)


def wait_for_quiet(limit: float, patience: float) -> float:
    """Wait up to ``patience`` seconds for other work to keep under ``limit`` CPUs busy over
    half a second; return the last measure."""
    deadline = time.monotonic() + patience
    busy = others_busy(0.5)
    while busy > limit and time.monotonic() < deadline:
        busy = others_busy(0.5)
    return busy


def run(how: str, procs: int, layout: str, n: int, scratch: str) -> dict[str, float]:
    """Start ``procs`` processes, release them together; return the aggregate rate
    (records/s), the CPU time each record cost its process, and the CPUs other work kept busy
    meanwhile."""
    root = tempfile.mkdtemp(dir=scratch)
    try:
        paths = [
            os.path.join(root, "spool" if layout == "one spool" else f"spool{i}")
            for i in range(procs)
        ]
        kids = [
            subprocess.Popen(
                [sys.executable, __file__, "--child", json.dumps({"how": how, "n": n, "path": p})],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for p in paths
        ]
        for k in kids:
            assert k.stdout is not None
            line = k.stdout.readline()
            assert line.strip() == "ready", f"child said {line!r}"
        b0, w0 = _busy()
        for k in kids:  # the barrier: every process is open and waiting
            assert k.stdin is not None
            k.stdin.write("go\n")
            k.stdin.flush()
        reports = []
        for k in kids:
            assert k.stdout is not None
            reports.append(json.loads(k.stdout.readline()))
        b1, w1 = _busy()
        for k in kids:
            k.stdin.close()  # type: ignore[union-attr]
            assert k.wait(120) == 0
        start = min(r["t0"] for r in reports)
        end = max(r["t1"] for r in reports)
        cpu = sum(r["cpu"] for r in reports)
        total = sum(r["n"] for r in reports)
        return {
            "aggregate": total / (end - start),
            "cpu_us": cpu / total * 1e6,
            "others": max(0.0, (b1 - b0) - cpu) / (w1 - w0),
        }
    finally:
        _empty(root)


def _empty(root: str) -> None:
    """Empty every file under ``root`` but remove none until the end (``main`` does).

    On ext4 without a journal (this machine's disk), a file created soon after many were
    deleted nearby costs up to 20 times more (see the queue benchmark's notes): removing each
    run's chunk files would slow the next runs' rollovers.
    """
    for folder, _dirs, files in os.walk(root):
        for name in files:
            os.truncate(os.path.join(folder, name), 0)


def main() -> None:
    """Run every configuration, interleaved; print and save the best of each."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--puts", type=int, default=200_000, help="Spool.put calls per process")
    ap.add_argument("--records", type=int, default=50_000, help="log records per process")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small counts, 1 round (smoke test)")
    ap.add_argument("--dir", help="where the spools go (default: the temporary directory)")
    ap.add_argument(
        "--patience",
        type=float,
        default=0.0,
        help="before each run, wait up to this many seconds for other work to keep under "
        "--quiet CPUs busy (a shared machine)",
    )
    ap.add_argument("--quiet", type=float, default=0.3, help="see --patience (default 0.3)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if args.quick:
        args.puts, args.records, args.rounds = 20_000, 5_000, 1
    counts = {"Spool.put": args.puts, "SpoolHandler": args.records}
    scratch = tempfile.mkdtemp(prefix="spoolkit-pbench-", dir=args.dir)
    # how -> row -> layout -> every run's figures, in round order
    runs: dict[str, dict[str, dict[str, list[dict[str, float]]]]] = {h: {} for h in counts}
    try:
        for _ in range(args.rounds):
            for how, n in counts.items():
                for procs in PROCESSES:
                    key = f"{procs} process{'es' if procs > 1 else ''}"
                    # one process alone is the same run in either layout: measured once
                    for layout in LAYOUTS if procs > 1 else LAYOUTS[:1]:
                        wait_for_quiet(args.quiet, args.patience)
                        kind = "handler" if how == "SpoolHandler" else "put"
                        got = run(kind, procs, layout, n, scratch)
                        for lay in LAYOUTS if procs == 1 else (layout,):
                            runs[how].setdefault(key, {}).setdefault(lay, []).append(got)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results: dict[str, Any] = {
        "command": "python benchmarks/procs_bench.py"
        + (" --quick" if args.quick else f" --rounds {args.rounds}")
        + (f" --patience {args.patience:g} --quiet {args.quiet:g}" if args.patience else ""),
        "rounds": args.rounds,
    }
    for how, rows in runs.items():
        report(how, counts[how], rows, results, args.rounds)
    if not args.quick:
        print(f"saved {save('procs_bench', results)}")


def report(
    how: str,
    n: int,
    rows: dict[str, dict[str, list[dict[str, float]]]],
    results: dict[str, Any],
    rounds: int,
) -> None:
    """Print the table of one way of putting and add its tables to ``results``.

    Rates are each configuration's best run. The ratio to 1 process is the median, over the
    rounds, of a run's rate over the rate of the 1-process run of the same round: this VM's
    speed drifts by a third from minute to minute, so best against best would compare
    different moments. "CPUs putting" is the best run's rate times its CPU time per record:
    how many CPUs the processes kept busy putting (1 for one process; 2 for two processes
    that never wait on each other).
    """
    one = rows["1 process"][LAYOUTS[0]]
    tables: dict[str, dict[str, dict[str, float]]] = {
        "records/s": {},
        "x 1 process": {},
        "CPUs putting": {},
        "CPU µs per record": {},
        "CPUs used by other work": {},
    }
    body = []
    for key, row in rows.items():
        cells = [key]
        for values in tables.values():
            values[key] = {}
        for lay in LAYOUTS:
            best = max(row[lay], key=lambda r: r["aggregate"])
            ratio = statistics.median(
                r["aggregate"] / o["aggregate"] for r, o in zip(row[lay], one, strict=True)
            )
            tables["records/s"][key][lay] = best["aggregate"]
            tables["x 1 process"][key][lay] = ratio
            tables["CPU µs per record"][key][lay] = best["cpu_us"]
            tables["CPUs putting"][key][lay] = best["aggregate"] * best["cpu_us"] / 1e6
            tables["CPUs used by other work"][key][lay] = best["others"]
            cells.append(f"{best['aggregate']:,.0f} ({ratio:.2f}x)")
        for name in ("CPU µs per record", "CPUs putting", "CPUs used by other work"):
            cells.append(" / ".join(f"{tables[name][key][lay]:.2f}" for lay in LAYOUTS))
        body.append(cells)
    header = [
        "processes",
        *(f"{lay}: records/s (x 1 process)" for lay in LAYOUTS),
        "CPU µs per record",
        "CPUs putting",
        "CPUs used by other work",
    ]
    title = f"{how}: records put by all processes together, {n:,} each, {rounds} rounds"
    print(table(title, header, body))
    # one table per way of putting, a row per configuration; the measures are numbered so
    # that the results file's sorted keys keep them in this order
    out: dict[str, dict[str, float]] = {}
    for key in rows:
        for lay in LAYOUTS[:1] if key == "1 process" else LAYOUTS:
            label = key if key == "1 process" else f"{key}, {lay}"
            out[label] = {
                f"{i}: {name}": values[key][lay]
                for i, (name, values) in enumerate(tables.items(), 1)
            }
    results[how] = out


if __name__ == "__main__":
    main()
