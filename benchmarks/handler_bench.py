"""Per-record cost of spoolkit's log producers side by side with the standard ones, in one run.

stdlib: ``logger.info("user %s did %d things", ...)`` through ``logging.NullHandler``,
``logging.FileHandler``, ``logging.handlers.QueueHandler`` (a ``QueueListener`` writing to a
``FileHandler``) and ``spoolkit.SpoolHandler`` (default ``fsync="interval"``, a sink writing JSON
lines to a file): on a ``Spool`` made by hand (pickle), and made from a path,
``SpoolHandler(path, sink=...)``, as a logging configuration does (its serializer is the
handler's default: JSON since issue 16, pickle before). structlog:
``log.info("user_did_things", user=..., n=...)`` through ``JSONRenderer`` writing to a file,
against ``SpoolProcessor(drop=True)`` (spool only) and ``SpoolProcessor(drop=False)``
followed by the same renderer (file and spool).

"per record" is the producer's wall time divided by the records logged, background threads
(the listener, the spool's workers) running as they do in production; "end to end" also waits
until the background side has written everything; "CPU" is the logging thread's own CPU time
(``time.thread_time``) per record, which leaves out waiting for a core or the GIL: the figure
that holds on a machine other work keeps busy. Each case runs ``--rounds`` times,
interleaved; the best round counts (each column's best).

    .venv/bin/python benchmarks/handler_bench.py [--records 20000] [--rounds 5] [--quick]
        [--patience SECONDS [--quiet CPUS]]

``--patience`` waits, before each case, up to that long for other work on the machine to keep
fewer than ``--quiet`` CPUs busy (measured over half a second): on a shared machine.

``--out FILE`` writes the results there instead of ``benchmarks/results/handler_bench.json``:
to measure another version of spoolkit with this same script, e.g. the commit before a change,

    git worktree add /tmp/before COMMIT
    cd /tmp && PYTHONPATH=/tmp/before python /path/to/benchmarks/handler_bench.py --out before.json

(run it from outside the repository, so that its ``spoolkit`` is not found first).
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
from procs_bench import wait_for_quiet

import spoolkit
from spoolkit.producers import SpoolHandler, SpoolProcessor

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
PATH_SERIALIZER = "pickle"  # set in main() to what SpoolHandler(path) uses in this version


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


def _path_serializer() -> str:
    """The serializer of the spool ``SpoolHandler(path, sink=...)`` makes (the version's own
    default), found by making one in a scratch directory."""
    d = tempfile.mkdtemp(prefix="spoolkit-hbench-default-")
    try:
        handler = SpoolHandler(os.path.join(d, "spool"), sink=lambda batch: None)
        name = str(handler.spool._serializer_name)
        handler.close()
        return name
    finally:
        shutil.rmtree(d, ignore_errors=True)


def spool_handler_from_path(d: str) -> Target:
    """What ``SpoolHandler(path, sink=...)`` builds: a Spool with the handler's default
    serializer (built here by hand so that "burst" can start its workers after the calls)."""
    spool = spoolkit.Spool(
        os.path.join(d, "spool"),
        JsonLinesSink(os.path.join(d, "s.jsonl")),
        serializer=PATH_SERIALIZER,
    )
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
    "SpoolHandler(path)": spool_handler_from_path,
}
STRUCTLOG: dict[str, Case] = {
    "JSONRenderer to file": structlog_json,
    "SpoolProcessor(drop=True)": spool_processor,
    "SpoolProcessor + JSONRenderer to file": spool_processor_and_file,
}


def run_case(case: Case, n: int) -> tuple[float, float, float, float, float]:
    """Return µs per record: (steady producer, end to end, burst producer, and the logging
    thread's CPU time in steady and in burst).

    steady: the background side runs while the records are logged, as in production (in
    CPython its work shares the GIL with the logging thread). burst: the background side
    starts only after the records are logged: the logging call's own cost. The CPU times
    (``time.thread_time``) leave out the time the thread waited for a core or for the GIL:
    on a machine that other work keeps busy they still measure the call.
    """
    clock = time.thread_time
    d = tempfile.mkdtemp(prefix="spoolkit-hbench-")
    os.mkdir(os.path.join(d, "steady"))
    os.mkdir(os.path.join(d, "burst"))
    try:
        steady = case(os.path.join(d, "steady"))
        steady.start()
        for i in range(200):  # warm up
            steady.call(i)
        steady.finish()
        c0, t0 = clock(), time.perf_counter()
        for i in range(n):
            steady.call(i)
        c1, t1 = clock(), time.perf_counter()
        steady.finish()
        t2 = time.perf_counter()
        steady.close()
        burst = case(os.path.join(d, "burst"))
        for i in range(200):
            burst.call(i)
        c3, t3 = clock(), time.perf_counter()
        for i in range(n):
            burst.call(i)
        c4, t4 = clock(), time.perf_counter()
        burst.start()
        burst.finish()
        burst.close()
        per = 1e6 / n
        return (t1 - t0) * per, (t2 - t0) * per, (t4 - t3) * per, (c1 - c0) * per, (c4 - c3) * per
    finally:
        shutil.rmtree(d, ignore_errors=True)


def measure(
    cases: dict[str, Case], n: int, rounds: int, quiet: tuple[float, float] = (0.3, 0.0)
) -> dict[str, dict[str, float]]:
    """Run every case ``rounds`` times, interleaved; keep each column's best.

    Before each case, wait up to ``quiet[1]`` seconds for other work on the machine to keep
    fewer than ``quiet[0]`` CPUs busy.
    """
    keys = ("steady_us", "end_to_end_us", "burst_us", "steady_cpu_us", "burst_cpu_us")
    best = {name: dict.fromkeys(keys, float("inf")) for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            wait_for_quiet(*quiet)
            for key, value in zip(keys, run_case(case, n), strict=True):
                best[name][key] = min(best[name][key], value)
    return best


def report(title: str, results: dict[str, dict[str, float]], base: str) -> str:
    """A table of the five columns, each with its ratio to ``base``."""
    rows = []
    keys = ("burst_us", "steady_us", "end_to_end_us", "burst_cpu_us", "steady_cpu_us")
    for name, r in results.items():
        row = [name]
        for key in keys:
            row.append(f"{r[key]:.2f} ({r[key] / results[base][key]:.2f}x)")
        rows.append(row)
    header = [
        "target",
        "burst µs/rec",
        "steady µs/rec",
        "end-to-end µs/rec",
        "burst CPU µs/rec",
        "steady CPU µs/rec",
    ]
    return table(f"{title} (ratios to {base})", header, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2,000 records, 1 round (smoke test)")
    ap.add_argument("--out", help="write the results here (default: results/handler_bench.json)")
    ap.add_argument(
        "--patience",
        type=float,
        default=0.0,
        help="before each case, wait up to this many seconds for other work to keep under "
        "--quiet CPUs busy (a shared machine)",
    )
    ap.add_argument("--quiet", type=float, default=0.3, help="see --patience (default 0.3)")
    args = ap.parse_args()
    quiet = (args.quiet, args.patience)
    n, rounds = (2000, 1) if args.quick else (args.records, args.rounds)
    global PATH_SERIALIZER
    PATH_SERIALIZER = _path_serializer()
    where = os.path.dirname(os.path.dirname(os.path.abspath(spoolkit.__file__)))
    print(f"spoolkit from {where}; SpoolHandler(path) spools with {PATH_SERIALIZER}\n")
    stdlib = measure(STDLIB, n, rounds, quiet)
    slog = measure(STRUCTLOG, n, rounds, quiet)
    print(report(f"stdlib logging, {n} records, best of {rounds}", stdlib, "FileHandler"))
    print(report(f"structlog, {n} records, best of {rounds}", slog, "JSONRenderer to file"))
    data = {"records": n, "rounds": rounds, "stdlib": stdlib, "structlog": slog}
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"spoolkit": where, "path_serializer": PATH_SERIALIZER, **data}, f, indent=2)
        print(f"saved {args.out}")
    elif not args.quick:
        print(f"saved {save('handler_bench', data)}")


if __name__ == "__main__":
    main()
