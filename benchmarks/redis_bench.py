"""Spool throughput on the disk backend beside the Redis Streams backend.

Records/s end to end, from the first put until ``flush()`` says every record reached a no-op
sink, for each backend and producer style. The Redis backend talks to a throwaway
redis-server on a free loopback port (no persistence), started here.

Usage: python benchmarks/redis_bench.py [--quick]

Writes benchmarks/results/redis_bench.json and prints a Markdown table.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import BATCH, end_to_end, save, table


@contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server on a free loopback port; yields its URL."""
    try:
        from tests.services._common import running
        from tests.services.redis_server import start_redis
    except ImportError:  # benchmarks copied without the test helpers: start it here
        yield from _inline_redis()
        return
    with running(start_redis) as server:
        yield server.url


def _inline_redis() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (make services)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    """Run and report."""
    quick = "--quick" in sys.argv
    n = 20_000 if quick else 100_000
    cases: list[tuple[str, Callable[[str | None], float]]] = []
    for workers in (1, 4):
        for many in (False, True):
            label = f"{'put_many' if many else 'put'}, {workers} worker(s)"

            def run(backend: str | None, w: int = workers, m: bool = many) -> float:
                return end_to_end(n, w, m, backend)

            cases.append((label, run))
    results: dict[str, dict[str, float]] = {"disk": {}, "redis": {}}
    with redis_server() as url:
        for i, (label, run) in enumerate(cases):
            results["disk"][label] = run(None)
            results["redis"][label] = run(f"{url}?stream=bench{i}&group=g")
    rows = [
        [label, f"{results['disk'][label]:,.0f}", f"{results['redis'][label]:,.0f}"]
        for label, _ in cases
    ]
    print(
        table(
            f"End to end, no-op sink, batch_size {BATCH}, {n:,} records",
            ["producer", "disk records/s", "redis records/s"],
            rows,
        )
    )
    info: dict[str, Any] = {
        "command": "python benchmarks/redis_bench.py" + (" --quick" if quick else ""),
        "records": n,
        "batch_size": BATCH,
        "redis": "local redis-server on loopback, no persistence",
        "end_to_end_records_per_s": results,
    }
    print(f"saved {save('redis_bench', info)}")


if __name__ == "__main__":
    main()
