"""Per-record cost of spoolkit's log producers side by side with the standard ones, in one run.

stdlib: ``logger.info("user %s did %d things", ...)`` through ``logging.NullHandler``,
``logging.FileHandler``, ``logging.handlers.QueueHandler`` (a ``QueueListener`` writing to a
``FileHandler``) and ``spoolkit.SpoolHandler`` (default ``fsync="interval"``, a sink writing JSON
lines to a file). structlog: ``log.info("user_did_things", user=..., n=...)`` through
``JSONRenderer`` writing to a file, against ``SpoolProcessor(drop=True)`` (spool only) and
``SpoolProcessor(drop=False)`` followed by the same renderer (file and spool).

"per record" is the producer's wall time divided by the records logged, background threads
(the listener, the spool's workers) running as they do in production; "end to end" also waits
until the background side has written everything. Each case runs ``--rounds`` times,
interleaved; the best round counts.

    .venv/bin/python benchmarks/handler_bench.py [--records 20000] [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import queue
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import structlog

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import save, table

import spoolkit
from spoolkit.producers import SpoolHandler, SpoolProcessor

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonLinesSink:
    """Appends each record's item as one JSON line (what a file sink does)."""

    def __init__(self, path: str) -> None:
        self.f = open(path, "a")  # noqa: SIM115 - closed by close()

    def write(self, batch: Sequence[spoolkit.Record]) -> None:
        self.f.write("".join(json.dumps(r.item) + "\n" for r in batch))
        self.f.flush()

    def close(self) -> None:
        self.f.close()


@dataclass
class Target:
    """One thing to log through: ``call(i)`` logs record ``i``; ``start`` starts its
    background side (listener, spool workers); ``finish`` waits until everything is written."""

    call: Callable[[int], None]
    start: Callable[[], None] = lambda: None
    finish: Callable[[], None] = lambda: None
    close: Callable[[], None] = lambda: None


Case = Callable[[str], Target]


def _stdlib(handler: logging.Handler) -> Callable[[int], None]:
    log = logging.getLogger(f"bench.{id(handler)}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.handlers[:] = [handler]
    return lambda i: log.info("user %s did %d things", "alice", i)


def null_handler(_d: str) -> Target:
    return Target(_stdlib(logging.NullHandler()))


def file_handler(d: str) -> Target:
    h = logging.FileHandler(os.path.join(d, "app.log"))
    h.setFormatter(logging.Formatter(FORMAT))
    return Target(_stdlib(h), finish=h.flush, close=h.close)


def queue_handler(d: str) -> Target:
    q: queue.Queue[Any] = queue.Queue()
    target = logging.FileHandler(os.path.join(d, "app.log"))
    target.setFormatter(logging.Formatter(FORMAT))
    listener = logging.handlers.QueueListener(q, target)

    def close() -> None:
        listener.stop()
        target.close()

    return Target(_stdlib(logging.handlers.QueueHandler(q)), listener.start, q.join, close)


def _spool(d: str) -> spoolkit.Spool:
    return spoolkit.Spool(os.path.join(d, "spool"), JsonLinesSink(os.path.join(d, "s.jsonl")))


def _drain(spool: spoolkit.Spool) -> Callable[[], None]:
    def finish() -> None:
        assert spool.flush(300), "spool did not drain"

    return finish


def spool_handler(d: str) -> Target:
    spool = _spool(d)
    return Target(_stdlib(SpoolHandler(spool)), spool.start, _drain(spool), spool.stop)


def _structlog(processors: list[Any], path: str) -> tuple[Callable[[int], None], IO[str]]:
    f = open(path, "a")  # noqa: SIM115 - closed by the case
    log = structlog.wrap_logger(
        structlog.WriteLogger(f),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    return (lambda i: log.info("user_did_things", user="alice", n=i)), f


_PRE: list[Any] = [
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def structlog_json(d: str) -> Target:
    call, f = _structlog([*_PRE, structlog.processors.JSONRenderer()], os.path.join(d, "a.log"))
    return Target(call, finish=f.flush, close=f.close)


def _processor_case(d: str, *, drop: bool) -> Target:
    spool = _spool(d)
    tail = [] if drop else [structlog.processors.JSONRenderer()]
    call, f = _structlog([*_PRE, SpoolProcessor(spool, drop=drop), *tail], os.path.join(d, "a"))

    def close() -> None:
        spool.stop()
        f.close()

    return Target(call, spool.start, _drain(spool), close)


def spool_processor(d: str) -> Target:
    return _processor_case(d, drop=True)


def spool_processor_and_file(d: str) -> Target:
    return _processor_case(d, drop=False)


STDLIB: dict[str, Case] = {
    "NullHandler": null_handler,
    "FileHandler": file_handler,
    "QueueHandler + listener": queue_handler,
    "SpoolHandler": spool_handler,
}
STRUCTLOG: dict[str, Case] = {
    "JSONRenderer to file": structlog_json,
    "SpoolProcessor(drop=True)": spool_processor,
    "SpoolProcessor + JSONRenderer to file": spool_processor_and_file,
}


def run_case(case: Case, n: int) -> tuple[float, float, float]:
    """Return µs per record: (steady producer, end to end, burst producer).

    steady: the background side runs while the records are logged, as in production (in
    CPython its work shares the GIL with the logging thread). burst: the background side
    starts only after the records are logged: the logging call's own cost.
    """
    d = tempfile.mkdtemp(prefix="spoolkit-hbench-")
    os.mkdir(os.path.join(d, "steady"))
    os.mkdir(os.path.join(d, "burst"))
    try:
        steady = case(os.path.join(d, "steady"))
        steady.start()
        for i in range(200):  # warm up
            steady.call(i)
        steady.finish()
        t0 = time.perf_counter()
        for i in range(n):
            steady.call(i)
        t1 = time.perf_counter()
        steady.finish()
        t2 = time.perf_counter()
        steady.close()
        burst = case(os.path.join(d, "burst"))
        for i in range(200):
            burst.call(i)
        t3 = time.perf_counter()
        for i in range(n):
            burst.call(i)
        t4 = time.perf_counter()
        burst.start()
        burst.finish()
        burst.close()
        return (t1 - t0) / n * 1e6, (t2 - t0) / n * 1e6, (t4 - t3) / n * 1e6
    finally:
        shutil.rmtree(d, ignore_errors=True)


def measure(cases: dict[str, Case], n: int, rounds: int) -> dict[str, dict[str, float]]:
    """Run every case ``rounds`` times, interleaved; keep each column's best."""
    keys = ("steady_us", "end_to_end_us", "burst_us")
    best = {name: dict.fromkeys(keys, float("inf")) for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            for key, value in zip(keys, run_case(case, n), strict=True):
                best[name][key] = min(best[name][key], value)
    return best


def report(title: str, results: dict[str, dict[str, float]], base: str) -> str:
    """A table of the three columns, each with its ratio to ``base``."""
    rows = []
    for name, r in results.items():
        row = [name]
        for key in ("burst_us", "steady_us", "end_to_end_us"):
            row.append(f"{r[key]:.2f} ({r[key] / results[base][key]:.2f}x)")
        rows.append(row)
    header = ["target", "burst µs/rec", "steady µs/rec", "end-to-end µs/rec"]
    return table(f"{title} (ratios to {base})", header, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2,000 records, 1 round (smoke test)")
    args = ap.parse_args()
    n, rounds = (2000, 1) if args.quick else (args.records, args.rounds)
    stdlib = measure(STDLIB, n, rounds)
    slog = measure(STRUCTLOG, n, rounds)
    print(report(f"stdlib logging, {n} records, best of {rounds}", stdlib, "FileHandler"))
    print(report(f"structlog, {n} records, best of {rounds}", slog, "JSONRenderer to file"))
    if not args.quick:
        path = save(
            "handler_bench", {"records": n, "rounds": rounds, "stdlib": stdlib, "structlog": slog}
        )
        print(f"saved {path}")


if __name__ == "__main__":
    main()
