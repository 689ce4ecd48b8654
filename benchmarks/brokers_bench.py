"""Broker sinks against real local servers, side by side with the HTTP sink (issue 20).

Delivered records/s through a Spool (``put_many``, then wait until the *server* holds every
record) for:

- HttpSink (NDJSON, gzip) -> a local Python http.server that parses each body,
- AmqpSink -> a real rabbitmq-server (publisher confirms, persistent messages, one durable
  classic queue; the clock stops when the queue holds every message),
- NatsSink -> a real ``nats-server -js`` (one file-backed stream, ``Nats-Msg-Id`` per
  message; the clock stops when the stream holds every message).

And the two distributed backends side by side: records/s through a Spool to a no-op sink with
the queue in a Redis stream (redis-server, no persistence) and in a JetStream stream
(nats-server, file storage), ``put`` one by one and ``put_many`` (``--backends``).

The runs are interleaved and the median reported. Run:
``python benchmarks/brokers_bench.py`` (``--quick`` for a short run). Needs rabbitmq-server and
nats-server (``make services``). Writes benchmarks/results/brokers_bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nats
import pika

from benchmarks._common import LOG_RECORD, Counter, end_to_end, save, table
from spoolkit import Spool
from spoolkit.sinks.amqp import AmqpSink
from spoolkit.sinks.http import HttpSink
from spoolkit.sinks.nats import NatsSink
from tests.services._common import destroy
from tests.services.nats_server import start_nats
from tests.services.rabbitmq_server import start_rabbitmq
from tests.services.redis_server import start_redis


def __init__(self) -> None:
    self.records = 0
    self.lock = threading.Lock()


def _http_server(counter: Counter) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            n = sum(1 for line in body.splitlines() if json.loads(line))
            with counter.lock:
                counter.records += n
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _through_spool(sink: Any, n: int, delivered: Callable[[], int], workers: int) -> float:
    """Records/s from the first put until the server has all ``n`` records."""
    items = [dict(LOG_RECORD, message=f"user logged in {i}") for i in range(n)]
    with tempfile.TemporaryDirectory() as d:
        spool = Spool(
            d, sink, workers=workers, batch_size=500, batch_interval=0.05, serializer="json"
        )
        with spool:
            start = time.perf_counter()
            spool.put_many(items)
            assert spool.flush(timeout=600)
            while delivered() < n:
                time.sleep(0.005)
            return n / (time.perf_counter() - start)


def _rabbit_queue(url: str) -> tuple[str, Callable[[], int]]:
    """A fresh durable queue, and a function counting the messages it holds."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel = conn.channel()
    channel.queue_declare(name, durable=True)

    def count() -> int:
        return int(channel.queue_declare(name, passive=True).method.message_count)

    return name, count


def _nats_stream(url: str) -> tuple[str, str, Callable[[], int]]:
    """A fresh file-backed stream, and a function counting the messages it holds."""
    tag = uuid.uuid4().hex[:8]
    stream, subject = f"B{tag}", f"bench.{tag}"

    async def run(work: Callable[[Any], Any]) -> Any:
        nc = await nats.connect(url)
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    asyncio.run(run(lambda js: js.add_stream(name=stream, subjects=[subject], storage="file")))

    async def messages(js: Any) -> int:
        return int((await js.stream_info(stream)).state.messages)

    return stream, subject, lambda: int(asyncio.run(run(messages)))


def sinks(n: int, runs: int, workers: int) -> dict[str, float]:
    counter = Counter()
    http = _http_server(counter)
    rabbit = start_rabbitmq()
    nats_server = start_nats()
    try:
        results: dict[str, list[float]] = {"http": [], "amqp": [], "nats": []}
        for _ in range(runs):  # interleaved, medians reported
            counter.records = 0
            sink: Any = HttpSink(
                f"http://127.0.0.1:{http.server_address[1]}/ingest", format="ndjson", gzip=True
            )
            results["http"].append(_through_spool(sink, n, lambda: counter.records, workers))
            queue, count = _rabbit_queue(rabbit.url)
            sink = AmqpSink(rabbit.url, routing_key=queue)
            results["amqp"].append(_through_spool(sink, n, count, workers))
            stream, subject, stored = _nats_stream(nats_server.url)
            sink = NatsSink(nats_server.url, subject, stream=stream)
            results["nats"].append(_through_spool(sink, n, stored, workers))
        return {k: statistics.median(v) for k, v in results.items()}
    finally:
        http.shutdown()
        http.server_close()
        rabbit.stop_all()
        destroy(rabbit)
        destroy(nats_server)


def backends(n: int, runs: int) -> dict[str, float]:
    """Records/s to a no-op sink, 1 worker, on each distributed backend."""
    redis = start_redis()
    nats_server = start_nats()
    try:
        results: dict[str, list[float]] = {}
        for _ in range(runs):
            for name, url in (
                ("redis", f"{redis.url}?stream=b{uuid.uuid4().hex[:8]}&group=g"),
                ("nats", f"{nats_server.url}?stream=B{uuid.uuid4().hex[:8]}"),
            ):
                for mode, many in (("put", False), ("put_many", True)):
                    rate = end_to_end(n, 1, many, backend=url)
                    results.setdefault(f"{name} {mode}", []).append(rate)
        return {k: statistics.median(v) for k, v in results.items()}
    finally:
        destroy(redis)
        destroy(nats_server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--workers", type=int, default=2, help="spool workers (default 2)")
    parser.add_argument("--backends", action="store_true", help="also the backends' figures")
    args = parser.parse_args()
    n, runs = (5_000, 1) if args.quick else (20_000, 3)
    rates = sinks(n, runs, args.workers)
    print(
        table(
            f"Broker sinks against local servers ({n:,} records, median of {runs}, "
            f"workers={args.workers})",
            ["sink", "server", "records/s", "vs HttpSink"],
            [
                [
                    "HttpSink (NDJSON, gzip)",
                    "Python http.server, parses JSON",
                    f"{rates['http']:,.0f}",
                    "1.00",
                ],
                [
                    "AmqpSink (confirms, persistent)",
                    "rabbitmq-server 3.10, durable classic queue",
                    f"{rates['amqp']:,.0f}",
                    f"{rates['amqp'] / rates['http']:.2f}",
                ],
                [
                    "NatsSink (JetStream, Nats-Msg-Id)",
                    "nats-server 2.9 -js, file stream",
                    f"{rates['nats']:,.0f}",
                    f"{rates['nats'] / rates['http']:.2f}",
                ],
            ],
        )
    )
    data: dict[str, Any] = {
        "records": n,
        "runs": runs,
        "workers": args.workers,
        "records_per_s": {k: round(v) for k, v in rates.items()},
    }
    if args.backends:
        per_backend = backends(n, runs)
        print(
            table(
                f"Distributed backends to a no-op sink ({n:,} records, 1 worker)",
                ["backend", "put records/s", "put_many records/s"],
                [
                    [
                        name,
                        f"{per_backend[name + ' put']:,.0f}",
                        f"{per_backend[name + ' put_many']:,.0f}",
                    ]
                    for name in ("redis", "nats")
                ],
            )
        )
        data["backend_records_per_s"] = {k: round(v) for k, v in per_backend.items()}
    path = save("brokers_bench", data)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
