"""What a record costs an asyncio producer: ``await spool.aput`` against the alternatives.

In one run, per record, on one event loop (the producer coroutine's wall time divided by the
records put; the spool is producer-only, ``consume=False``, so that no worker competes for
the CPU):

- ``await spool.aput(item)`` (disk lanes, ``fsync="interval"``: the put runs on the loop);
- ``await spool.aput_many(batch)`` in batches of 100;
- ``await asyncio.to_thread(spool.put, item)``: what an asyncio app does without ``aput``
  to keep a possibly blocking put off the loop (a thread hop per record);
- ``spool.put(item)`` called on the loop (no hop; may block it: the reference);
- ``await queue.put(item)`` on an unbounded ``asyncio.Queue`` (memory only, not durable);
- ``await spool.aput(item)`` with ``fsync="always"`` (an fsync per record, off the loop).

Ratios are against ``asyncio.Queue``. Each case runs ``--rounds`` times, interleaved; the best
round counts. When ``benchmarks/_async_sink_bench.py`` is there (the async HTTP sink against
the sync one), its rows are printed too.

    .venv/bin/python benchmarks/async_bench.py [--records 20000] [--rounds 3] [--no-sinks]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import ITEM, save, table

from spoolkit import Spool

Case = Callable[[int], Awaitable[float]]


async def _timed(n: int, body: Callable[[], Awaitable[None]]) -> float:
    """Seconds per record of ``await body()`` (which puts ``n`` records)."""
    t0 = time.perf_counter()
    await body()
    return (time.perf_counter() - t0) / n


def _spool(d: str, **options: object) -> Spool:
    return Spool(d, None, consume=False, serializer="json", **options)  # type: ignore[arg-type]


async def aput(n: int, fsync: str = "interval") -> float:
    with tempfile.TemporaryDirectory() as d:
        spool = _spool(d, fsync=fsync)

        async def body() -> None:
            put = spool.aput
            for _ in range(n):
                await put(ITEM)

        try:
            return await _timed(n, body)
        finally:
            await spool.astop(drain=False)


async def aput_many(n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        spool = _spool(d)
        batch = [ITEM] * 100

        async def body() -> None:
            for _ in range(n // 100):
                await spool.aput_many(batch)

        try:
            return await _timed(n // 100 * 100, body)
        finally:
            await spool.astop(drain=False)


async def to_thread(n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        spool = _spool(d)

        async def body() -> None:
            for _ in range(n):
                await asyncio.to_thread(spool.put, ITEM)

        try:
            return await _timed(n, body)
        finally:
            await spool.astop(drain=False)


async def put_on_loop(n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        spool = _spool(d)

        async def body() -> None:
            put = spool.put
            for _ in range(n):
                put(ITEM)

        try:
            return await _timed(n, body)
        finally:
            await spool.astop(drain=False)


async def asyncio_queue(n: int) -> float:
    q: asyncio.Queue[object] = asyncio.Queue()

    async def body() -> None:
        put = q.put
        for _ in range(n):
            await put(ITEM)

    return await _timed(n, body)


async def aput_always(n: int) -> float:
    return await aput(n, fsync="always")


CASES: list[tuple[str, Case, int]] = [  # label, case, share of --records it puts
    ("`await spool.aput(item)`", aput, 1),
    ("`await spool.aput_many(batch of 100)`", aput_many, 1),
    ("`await asyncio.to_thread(spool.put, item)`", to_thread, 1),
    ("`spool.put(item)` on the loop (blocks it when it waits)", put_on_loop, 1),
    ("`await asyncio.Queue.put(item)` (memory only)", asyncio_queue, 1),
    ('`await spool.aput(item)`, `fsync="always"`', aput_always, 20),  # 1/20 of the records
]


async def measure(records: int, rounds: int) -> dict[str, float]:
    best: dict[str, float] = {}
    for _ in range(rounds):
        for label, case, share in CASES:
            per = await case(max(100, records // share))
            best[label] = min(best.get(label, float("inf")), per)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-sinks", action="store_true", help="skip the async sink rows")
    args = parser.parse_args()
    best = asyncio.run(measure(args.records, args.rounds))
    base = best["`await asyncio.Queue.put(item)` (memory only)"]
    aput_cost = best["`await spool.aput(item)`"]
    rows = [
        [label, f"{per * 1e6:.2f}", f"{per / base:.1f}x", f"{per / aput_cost:.2f}x"]
        for label, per in best.items()
    ]
    print(
        table(
            f"Producer cost per record ({args.records} records, best of {args.rounds})",
            ["call", "µs per record", "vs asyncio.Queue", "vs aput"],
            rows,
        )
    )
    sink_rows: list[tuple[str, float]] = []
    if not args.no_sinks:
        try:
            from _async_sink_bench import run
        except ImportError:
            run = None
        if run is not None:
            sink_rows = run()
            print(table("Sinks", ["sink", "records/s"], [[k, f"{v:,.0f}"] for k, v in sink_rows]))
    path = save(
        "async_bench",
        {
            "records": args.records,
            "rounds": args.rounds,
            "us_per_record": {k: v * 1e6 for k, v in best.items()},
            "sinks_records_per_s": dict(sink_rows),
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
