"""An asyncio web app that spools an event per request with ``await spool.aput``.

Each ``POST /orders/{id}`` stores an event in a durable spool and answers at once; the spool's
workers deliver the events to an analytics endpoint in the background, retrying while it is
down. ``aput`` never blocks the event loop: with room in the spool it is a few microseconds on
the loop; when the spool is full (``max_bytes``, ``when_full="block"``) the wait happens on a
spool thread while the loop serves other requests.

The app is FastAPI when it is installed, else plain Starlette (FastAPI's base): the spool code
is the same. The spool lives in the app's lifespan: ``async with Spool(...)`` starts it and, at
shutdown, stops it after delivering what it holds.

To run it yourself: ``uvicorn examples.fastapi_app:app``. Run as a script, it starts an
analytics collector and the app under uvicorn on local ports, sends 200 concurrent requests
with httpx, shuts the app down and checks that the collector got every event.

    python examples/fastapi_app.py
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import tempfile
import threading
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import uvicorn

import spoolkit
from spoolkit.sinks import HttpSink

SPOOL_DIR = os.environ.get("ORDERS_SPOOL", os.path.join(tempfile.mkdtemp(), "orders-spool"))
ANALYTICS_URL = os.environ.get("ANALYTICS_URL", "http://127.0.0.1:9/events")


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """One spool for the app's life: started off the loop, drained and stopped at shutdown."""
    async with spoolkit.Spool(
        SPOOL_DIR,
        HttpSink(ANALYTICS_URL),
        serializer="json",
        max_bytes=8 << 20,  # at the cap, aput waits for room (off the loop)
        retry=spoolkit.RetryPolicy(initial_wait=0.1, max_wait=1.0),
    ) as spool:
        app.state.spool = spool
        yield


try:  # FastAPI when installed; Starlette otherwise (the spool code is the same)
    from fastapi import FastAPI, Request  # type: ignore[import-not-found, unused-ignore]

    app = FastAPI(lifespan=lifespan)

    @app.post("/orders/{order_id}")
    async def order_placed(order_id: str, request: Request) -> dict[str, str]:
        """Spool the event, answer at once: delivery happens in the background."""
        await request.app.state.spool.aput({"event": "order_placed", "order": order_id})
        return {"order": order_id, "status": "accepted"}

except ImportError:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def order_placed(request: Request) -> JSONResponse:  # type: ignore[misc]
        """Spool the event, answer at once: delivery happens in the background."""
        order_id = request.path_params["order_id"]
        await request.app.state.spool.aput({"event": "order_placed", "order": order_id})
        return JSONResponse({"order": order_id, "status": "accepted"})

    app = Starlette(routes=[Route("/orders/{order_id}", order_placed, methods=["POST"])])
    app.router.lifespan_context = lifespan


# -- the demonstration: a collector, the app under uvicorn, concurrent requests --------------


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            self.received.extend(r["item"] for r in body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _demo(port: int, n: int) -> list[int]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        answers = await asyncio.gather(*(client.post(f"/orders/o{i}") for i in range(n)))
    server.should_exit = True  # the lifespan's `async with` delivers what is left, then stops
    await serving
    return [a.status_code for a in answers]


def main() -> int:
    global ANALYTICS_URL
    collector = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    ANALYTICS_URL = f"http://127.0.0.1:{collector.server_port}/events"
    n = 200
    codes = asyncio.run(_demo(_free_port(), n))
    collector.shutdown()
    got = {e["order"] for e in _Collector.received}
    print(f"{codes.count(200)} requests accepted, {len(got)} events delivered")
    if codes.count(200) != n or got != {f"o{i}" for i in range(n)}:
        print("FAILED: some events are missing")
        return 1
    print("ok: every accepted order's event reached the analytics endpoint")
    return 0


if __name__ == "__main__":
    sys.exit(main())
