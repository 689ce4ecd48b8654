"""Async HTTP sink throughput against the sync one, through a Spool, against one local server.

The server (asyncio, HTTP/1.1 keep-alive, on 127.0.0.1) answers every POST with 200 after
5 ms, serving any number of requests at once, so the sink side decides the rate. Each run
puts ``N`` records (``put_many``) and times until ``flush()`` says all were delivered:

- ``HttpSink``, 2 workers (the spool's default): 2 requests in flight.
- ``HttpSink``, 8 workers: 8 requests in flight, one thread each.
- ``AsyncHttpSink(concurrency=8)``, 8 workers: 8 requests in flight on the pool's one loop.
- the same, with httpcore's per-request ``import sniffio`` failing at once (only when sniffio
  is not installed: httpcore 1.0 looks for it on every request, and a failed import is slow).

Run alone: ``python benchmarks/_async_sink_bench.py`` (``--quick`` for a short run);
``benchmarks/async_bench.py`` imports :func:`run` and prints its rows.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
import tempfile
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spoolkit import Spool
from spoolkit.sinks import AsyncHttpSink, HttpSink

DELAY = 0.005  # the server's answer time, seconds
BATCH = 10  # small batches: the 5 ms answer, not encoding, bounds the rate
ITEM = {"level": "info", "msg": "user logged in", "user": 12345, "ok": True}
_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class SlowServer:
    """An asyncio HTTP/1.1 server in a thread: every POST is answered 200 after ``delay``."""

    def __init__(self, delay: float = DELAY) -> None:
        self.delay = delay
        self.requests = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", 0), self.loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                await asyncio.sleep(self.delay)
                self.requests += 1
                writer.write(_OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        """Stop serving, end the connections, stop and close the loop."""

        async def shutdown() -> None:
            self._server.close()
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def through_spool(sink: Any, n: int, workers: int) -> float:
    """Records/s from the first put of ``n`` records until flush() says all were delivered."""
    with tempfile.TemporaryDirectory() as d:
        spool = Spool(d, sink, workers=workers, batch_size=BATCH, batch_interval=0)
        spool.start()
        try:
            t0 = time.perf_counter()
            spool.put_many([ITEM] * n)
            if not spool.flush(120):
                raise RuntimeError(f"{sink!r}: not delivered within 120 s")
            elapsed = time.perf_counter() - t0
            if spool.stats().delivered != n:
                raise RuntimeError(f"{sink!r}: delivered {spool.stats().delivered} of {n}")
        finally:
            spool.stop()
    return n / elapsed


def run(n: int = 6_000, repeat: int = 3) -> list[tuple[str, float]]:
    """``(label, records/s)`` for the sync and async HTTP sinks; the best of ``repeat`` runs.

    The last row repeats the async sink with httpcore's per-request ``import sniffio``
    answered at once (what an installed ``sniffio`` gives; see docs/benchmarks.md): it is
    measured last because it changes ``sys.modules`` for the rest of the process.
    """
    server = SlowServer()
    try:
        cases: list[tuple[str, Any, int]] = [
            ("HttpSink, 2 workers (default)", lambda: HttpSink(server.url), 2),
            ("HttpSink, 8 workers", lambda: HttpSink(server.url), 8),
            ("AsyncHttpSink(concurrency=8), 8 workers", lambda: _async(server), 8),
        ]
        rows = [
            (label, max(through_spool(make(), n, workers) for _ in range(repeat)))
            for label, make, workers in cases
        ]
        if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
            sys.modules["sniffio"] = None  # type: ignore[assignment]  # a failed import, at once
            label = "AsyncHttpSink(concurrency=8), 8 workers, no sniffio lookup"
            rows.append((label, max(through_spool(_async(server), n, 8) for _ in range(repeat))))
        return rows
    finally:
        server.close()


def _async(server: SlowServer) -> AsyncHttpSink:
    return AsyncHttpSink(server.url, concurrency=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer records, one run each")
    args = parser.parse_args()
    rows = run(2_000, 1) if args.quick else run()
    base = rows[0][1]
    print(f"HTTP sinks through a Spool, server answering after {DELAY * 1000:g} ms, batch {BATCH}")
    for label, rate in rows:
        print(f"  {label:<42} {rate:>10,.0f} records/s  ({rate / base:.1f}x)")


if __name__ == "__main__":
    main()
