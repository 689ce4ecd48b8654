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
directory: the same work with nothing shared, the ideal that lanes aim at. Each configuration
runs ``--rounds`` times, interleaved; the best round counts (other work on the machine only
ever slows a round down). Beside the rates: the CPU time each record cost its process
(``time.process_time``, all its threads), which shows whether sharing one spool costs work
rather than only waiting, and how many CPUs other work on the machine kept busy during the
round (from ``/proc/stat``, less this benchmark's processes): with 2 CPUs, a round during
which others used one of them cannot show 2 processes at 2x. ``--patience S`` waits, before
each run, up to S seconds for other work to keep fewer than ``--quiet`` CPUs busy.

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
        shutil.rmtree(root, ignore_errors=True)


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
    best: dict[str, dict[str, dict[str, dict[str, float]]]] = {how: {} for how in counts}
    try:
        for _ in range(args.rounds):
            for how, n in counts.items():
                for procs in PROCESSES:
                    for layout in LAYOUTS:
                        key = f"{procs} process{'es' if procs > 1 else ''}"
                        wait_for_quiet(args.quiet, args.patience)
                        kind = "handler" if how == "SpoolHandler" else "put"
                        got = run(kind, procs, layout, n, scratch)
                        row = best[how].setdefault(key, {})
                        if got["aggregate"] > row.get(layout, {}).get("aggregate", 0.0):
                            row[layout] = got
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results: dict[str, Any] = {
        "command": "python benchmarks/procs_bench.py"
        + (" --quick" if args.quick else f" --rounds {args.rounds}")
        + (f" --patience {args.patience:g}" if args.patience else ""),
        "rounds": args.rounds,
    }
    for how, rows in best.items():
        one = rows["1 process"]
        body = []
        for key, row in rows.items():
            cells = [key]
            for lay in LAYOUTS:
                got = row[lay]
                ratio = got["aggregate"] / one[lay]["aggregate"]
                cells.append(f"{got['aggregate']:,.0f} ({ratio:.2f}x)")
            cells.append(" / ".join(f"{row[lay]['cpu_us']:.2f}" for lay in LAYOUTS))
            cells.append(" / ".join(f"{row[lay]['others']:.2f}" for lay in LAYOUTS))
            body.append(cells)
        title = f"{how}: records/s put by all processes together, {counts[how]:,} each"
        header = [
            "processes",
            *(f"{lay} (x 1 process)" for lay in LAYOUTS),
            "CPU µs per record (one / separate)",
            "CPUs busy with other work (one / separate)",
        ]
        print(table(f"{title}, best of {args.rounds}", header, body))
        results[f"{how} records/s"] = {
            key: {lay: row[lay]["aggregate"] for lay in LAYOUTS} for key, row in rows.items()
        }
        results[f"{how} x 1 process"] = {
            key: {lay: row[lay]["aggregate"] / one[lay]["aggregate"] for lay in LAYOUTS}
            for key, row in rows.items()
        }
        results[f"{how} CPU µs per record"] = {
            key: {lay: row[lay]["cpu_us"] for lay in LAYOUTS} for key, row in rows.items()
        }
        results[f"{how} CPUs busy with other work"] = {
            key: {lay: row[lay]["others"] for lay in LAYOUTS} for key, row in rows.items()
        }
    if not args.quick:
        print(f"saved {save('procs_bench', results)}")


if __name__ == "__main__":
    main()
