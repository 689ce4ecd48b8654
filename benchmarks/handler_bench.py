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
from typing import Any

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


# A case builds its target in a fresh directory and returns (log one record, finish, close).
Case = Callable[[str], tuple[Callable[[int], None], Callable[[], None], Callable[[], None]]]


def _stdlib(handler: logging.Handler) -> Callable[[int], None]:
    log = logging.getLogger(f"bench.{id(handler)}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.handlers[:] = [handler]
    return lambda i: log.info("user %s did %d things", "alice", i)


def null_handler(_d: str) -> Any:
    return _stdlib(logging.NullHandler()), lambda: None, lambda: None


def file_handler(d: str) -> Any:
    h = logging.FileHandler(os.path.join(d, "app.log"))
    h.setFormatter(logging.Formatter(FORMAT))
    return _stdlib(h), h.flush, h.close


def queue_handler(d: str) -> Any:
    q: queue.Queue[Any] = queue.Queue()
    target = logging.FileHandler(os.path.join(d, "app.log"))
    target.setFormatter(logging.Formatter(FORMAT))
    listener = logging.handlers.QueueListener(q, target)
    listener.start()

    def close() -> None:
        listener.stop()
        target.close()

    return _stdlib(logging.handlers.QueueHandler(q)), q.join, close


def spool_handler(d: str) -> Any:
    spool = spoolkit.Spool(os.path.join(d, "spool"), JsonLinesSink(os.path.join(d, "app.jsonl")))
    spool.start()
    h = SpoolHandler(spool)

    def finish() -> None:
        assert spool.flush(120), "spool did not drain"

    return _stdlib(h), finish, spool.stop


def _structlog(processors: list[Any], path: str) -> Any:
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


def structlog_json(d: str) -> Any:
    call, f = _structlog([*_PRE, structlog.processors.JSONRenderer()], os.path.join(d, "a.log"))
    return call, f.flush, f.close


def _processor_case(d: str, *, drop: bool) -> Any:
    spool = spoolkit.Spool(os.path.join(d, "spool"), JsonLinesSink(os.path.join(d, "s.jsonl")))
    spool.start()
    tail = [] if drop else [structlog.processors.JSONRenderer()]
    call, f = _structlog([*_PRE, SpoolProcessor(spool, drop=drop), *tail], os.path.join(d, "a"))

    def finish() -> None:
        f.flush()
        assert spool.flush(120), "spool did not drain"

    def close() -> None:
        spool.stop()
        f.close()

    return call, finish, close


def spool_processor(d: str) -> Any:
    return _processor_case(d, drop=True)


def spool_processor_and_file(d: str) -> Any:
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


def run_case(case: Case, n: int) -> tuple[float, float]:
    """Return (producer µs per record, end-to-end µs per record)."""
    d = tempfile.mkdtemp(prefix="spoolkit-hbench-")
    try:
        call, finish, close = case(d)
        for i in range(200):  # warm up
            call(i)
        finish()
        t0 = time.perf_counter()
        for i in range(n):
            call(i)
        t1 = time.perf_counter()
        finish()
        t2 = time.perf_counter()
        close()
        return (t1 - t0) / n * 1e6, (t2 - t0) / n * 1e6
    finally:
        shutil.rmtree(d, ignore_errors=True)


def measure(cases: dict[str, Case], n: int, rounds: int) -> dict[str, dict[str, float]]:
    best: dict[str, list[float]] = {name: [float("inf"), float("inf")] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            per, e2e = run_case(case, n)
            best[name][0] = min(best[name][0], per)
            best[name][1] = min(best[name][1], e2e)
    return {k: {"per_record_us": v[0], "end_to_end_us": v[1]} for k, v in best.items()}


def report(title: str, results: dict[str, dict[str, float]], base: str) -> str:
    b = results[base]["per_record_us"]
    rows = [
        [
            name,
            f"{r['per_record_us']:.2f}",
            f"{r['per_record_us'] / b:.2f}x",
            f"{r['end_to_end_us']:.2f}",
        ]
        for name, r in results.items()
    ]
    header = ["target", "µs/record (producer)", f"vs {base}", "µs/record (end to end)"]
    return table(title, header, rows)


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
