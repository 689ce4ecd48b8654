"""Spool throughput: end-to-end records/s from put to a no-op sink, and the cost of a put
while the sink is down.

Usage: python benchmarks/spool_bench.py [--quick] [--rounds N]

Each end-to-end figure is the median of ``--rounds`` runs (default 3), the configurations
interleaved, so that one noisy moment on a shared machine does not decide a figure.

Writes benchmarks/results/spool_bench.json and prints Markdown tables.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import ITEM, end_to_end, save, table

from spoolkit import Record, RetryPolicy, Spool
from spoolkit.errors import TransientError


def put_cost_sink_down(n: int) -> float:
    """Microseconds per put while every sink call fails and workers sit in backoff."""
    failing = threading.Event()

    def down(batch: Sequence[Record]) -> None:
        failing.set()
        raise TransientError("down")

    with tempfile.TemporaryDirectory() as d:
        retry = RetryPolicy(max_attempts=10**9, initial_wait=3600, jitter=0)
        spool = Spool(d, down, workers=4, batch_size=500, retry=retry)
        spool.start()
        spool.put(ITEM)
        failing.wait(10)
        put = spool.put
        t0 = time.perf_counter()
        for _ in range(n):
            put(ITEM)
        elapsed = time.perf_counter() - t0
        spool.stop(drain=False)
    return elapsed / n * 1e6


def main() -> None:
    """Run and report."""
    quick = "--quick" in sys.argv
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
    n = 100_000 if quick else 500_000
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        for workers in (1, 4):
            for many in (False, True):
                key = f"{'put_many' if many else 'put'}, {workers} worker(s)"
                samples.setdefault(key, []).append(end_to_end(n, workers, use_put_many=many))
    results = {k: statistics.median(v) for k, v in samples.items()}
    cost = put_cost_sink_down(n // 5)
    rows = [
        [k, f"{v:,.0f}", ", ".join(f"{x:,.0f}" for x in samples[k])] for k, v in results.items()
    ]
    print(
        table(
            f"End to end, no-op sink, batch_size 500, {n:,} records, median of {rounds}",
            ["producer", "records/s", "each run"],
            rows,
        )
    )
    print(table("put while the sink is down", ["", "µs per put"], [["put", f"{cost:.2f}"]]))
    path = save(
        "spool_bench",
        {
            "command": "python benchmarks/spool_bench.py" + (" --quick" if quick else ""),
            "records": n,
            "rounds": rounds,
            "end_to_end_records_per_s": results,
            "put_us_while_sink_down": cost,
        },
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
