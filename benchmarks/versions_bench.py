"""spoolkit against another version of itself, side by side in one run: the spoolkit figures
of queue_bench, spool_bench and handler_bench, for a change that must not cost speed (a
refactor, a dependency upgrade).

    git worktree add /tmp/before COMMIT
    .venv/bin/python benchmarks/versions_bench.py --before /tmp/before [--rounds 7] [--quick]

Each round runs every case once per version, alternating which version goes first, each run in
a fresh child process that imports ``spoolkit`` from that version's tree (and the case itself
from this tree's benchmarks, which use only the public API). Printed per case: the median of
the rounds for each version, and after/before (under 1: the current tree is faster). Wall
figures on a shared machine swing by 20% and more (file creation, threads waiting for a core);
the CPU figures (``time.thread_time`` of the calling thread) are the ones to compare, to a few
percent. ``--rounds`` more tightens both.

Writes benchmarks/results/versions_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _queue_put_get(n: int) -> tuple[float, ...]:
    """queue_bench's batch case (chunks of 1000): put, then get_batch(500) + ack; wall and
    CPU (``time.thread_time``: leaves out waiting for a core) per record."""
    import spoolkit

    items = [os.urandom(100) for _ in range(n)]
    with tempfile.TemporaryDirectory() as d:
        q = spoolkit.Queue(d, chunksize=1000)
        w0, c0 = time.perf_counter(), time.thread_time()
        for x in items:
            q.put(x)
        w1, c1 = time.perf_counter(), time.thread_time()
        got = 0
        while got < n:
            batch = q.get_batch(500)
            q.ack(*batch)
            got += len(batch)
        w2, c2 = time.perf_counter(), time.thread_time()
        q.close()
    per = 1e6 / n
    return (w1 - w0) * per, (c1 - c0) * per, (w2 - w1) * per, (c2 - c1) * per


def _queue_stdlib(n: int) -> tuple[float, ...]:
    """queue_bench's stdlib-style case (pqueue's 100 records per chunk): put, then get +
    task_done, one record at a time; wall and CPU per record."""
    import spoolkit

    items = [os.urandom(100) for _ in range(n)]
    with tempfile.TemporaryDirectory() as d:
        q = spoolkit.Queue(d)
        w0, c0 = time.perf_counter(), time.thread_time()
        for x in items:
            q.put(x)
        w1, c1 = time.perf_counter(), time.thread_time()
        for _ in items:
            q.get()
            q.task_done()
        w2, c2 = time.perf_counter(), time.thread_time()
        q.close()
    per = 1e6 / n
    return (w1 - w0) * per, (c1 - c0) * per, (w2 - w1) * per, (c2 - c1) * per


def _spool_end_to_end(n: int) -> tuple[float, ...]:
    from _common import end_to_end

    return (1e6 / end_to_end(n, workers=2, use_put_many=False),)


def _spool_put_sink_down(n: int) -> tuple[float, ...]:
    import spool_bench

    return (spool_bench.put_cost_sink_down(n),)


def _handler(case_name: str) -> Callable[[int], tuple[float, ...]]:
    def run(n: int) -> tuple[float, ...]:
        import handler_bench

        cases = {**handler_bench.STDLIB, **handler_bench.STRUCTLOG}
        steady, _end, burst, cpu, cpu_burst = handler_bench.run_case(cases[case_name], n)
        return steady, cpu, burst, cpu_burst

    return run


_WALL_CPU = ("put", "put (CPU)", "take+ack", "take+ack (CPU)")
_LOGGING = ("steady", "steady (CPU)", "burst", "burst (CPU)")

# name -> (function of n, names of the figures it returns, all in µs per record)
CASES: dict[str, tuple[Callable[[int], tuple[float, ...]], tuple[str, ...]]] = {
    "Queue get_batch(500)": (_queue_put_get, _WALL_CPU),
    "Queue get/task_done": (_queue_stdlib, _WALL_CPU),
    "Spool put -> flush": (_spool_end_to_end, ("end to end",)),
    "Spool put, sink down": (_spool_put_sink_down, ("put",)),
    "SpoolHandler": (_handler("SpoolHandler"), _LOGGING),
    "SpoolHandler(path)": (_handler("SpoolHandler(path)"), _LOGGING),
    "SpoolProcessor(drop=True)": (_handler("SpoolProcessor(drop=True)"), _LOGGING),
}


def child(tree: str, case: str, n: int) -> None:
    """In a child process: run ``case`` against the spoolkit in ``tree`` and print figures."""
    sys.path[:0] = [tree, HERE]
    fn, _names = CASES[case]
    print(json.dumps(fn(n)))


def run(tree: str, case: str, n: int) -> tuple[float, ...]:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", tree, case, str(n)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),  # not the repository: its spoolkit must not come first
        env={**os.environ, "PYTHONPATH": ""},
    )
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", help="the other version's source tree (required)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--quick", action="store_true", help="2,000 records, 2 rounds")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    if not args.before:
        ap.error("--before is required")
    n, rounds = (2000, 2) if args.quick else (args.records, args.rounds)
    trees = {"before": os.path.abspath(args.before), "after": ROOT}
    figures: dict[str, dict[str, list[tuple[float, ...]]]] = {
        case: {"before": [], "after": []} for case in CASES
    }
    for r in range(rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for case in CASES:
            for version in order:
                figures[case][version].append(run(trees[version], case, n))
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    results = {}
    lines = [
        f"### spoolkit before ({args.before}) and after, µs per record, median of {rounds}",
        "",
        "| case | figure | before | after | after/before |",
        "|---|---|---|---|---|",
    ]
    for case, (_fn, names) in CASES.items():
        for i, name in enumerate(names):
            b = statistics.median(f[i] for f in figures[case]["before"])
            a = statistics.median(f[i] for f in figures[case]["after"])
            results[f"{case}: {name}"] = {"before": b, "after": a, "ratio": a / b}
            lines.append(f"| {case} | {name} | {b:.2f} | {a:.2f} | {a / b:.2f} |")
    print("\n".join(lines))
    sys.path.insert(0, HERE)
    from _common import save

    print(save("versions_bench", {"records": n, "rounds": rounds, "results": results}))


if __name__ == "__main__":
    main()
