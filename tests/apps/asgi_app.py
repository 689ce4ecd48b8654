"""A Starlette app for a real uvicorn: each request stores a record with ``await spool.aput``.

Environment: ``SPOOLKIT_TEST_SPOOL`` (the spool directory), ``SPOOLKIT_TEST_SINK`` (the
collector's URL), ``SPOOLKIT_TEST_MAX_BYTES`` (the spool's cap; ``when_full="block"``) and,
for a test's control run only, ``SPOOLKIT_TEST_SYNC_PUT=1`` (the endpoint calls the blocking
``spool.put`` instead, which stops the loop while the spool is full).

Routes: ``POST /put?rid=R`` stores ``{"rid": R, "pad": ...}`` and answers ``R``;
``GET /state`` answers JSON: ``waiting`` (requests inside their put now), ``answered``;
``POST /lag/start`` clears and starts the loop-lag samples, ``GET /lag`` answers them
(seconds, JSON list). A monitor task sleeps 1 ms in a loop and records how late it woke:
the time the loop spent on anything else than waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from spoolkit import RetryPolicy, Spool
from spoolkit.sinks import from_url

PAD = "p" * 300
_state: dict[str, Any] = {"waiting": 0, "answered": 0, "lag": [], "measure": False}


async def _monitor() -> None:
    """Sleep 1 ms at a time; while measuring, keep how late each wake-up was."""
    perf = time.perf_counter
    while True:
        start = perf()
        await asyncio.sleep(0.001)
        if _state["measure"]:
            _state["lag"].append(perf() - start - 0.001)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """The spool lives as long as the app: ``async with`` starts it and stops it, draining."""
    spool = Spool(
        os.environ["SPOOLKIT_TEST_SPOOL"],
        from_url(os.environ["SPOOLKIT_TEST_SINK"]),
        max_bytes=int(os.environ["SPOOLKIT_TEST_MAX_BYTES"]),
        when_full="block",
        serializer="json",
        batch_interval=0,
        batch_size=20,
        retry=RetryPolicy(initial_wait=0.05, max_wait=0.2, jitter=0.05),
    )
    async with spool:
        app.state.spool = spool
        monitor = asyncio.create_task(_monitor())
        try:
            yield
        finally:
            monitor.cancel()
    print(f"asgi_app: spool stopped, backlog {spool.stats().backlog}", flush=True)


async def put(request: Request) -> PlainTextResponse:
    """Store one record for the request, then answer its id."""
    rid = request.query_params["rid"]
    spool: Spool = request.app.state.spool
    _state["waiting"] += 1
    try:
        if os.environ.get("SPOOLKIT_TEST_SYNC_PUT") == "1":
            spool.put({"rid": rid, "pad": PAD})
        else:
            await spool.aput({"rid": rid, "pad": PAD})
    finally:
        _state["waiting"] -= 1
    _state["answered"] += 1
    return PlainTextResponse(rid)


async def state(request: Request) -> JSONResponse:
    """How many requests wait inside their put, and how many were answered."""
    return JSONResponse({"waiting": _state["waiting"], "answered": _state["answered"]})


async def lag_start(request: Request) -> JSONResponse:
    """Start (again) recording loop-lag samples."""
    _state["lag"] = []
    _state["measure"] = True
    return JSONResponse({})


async def lag(request: Request) -> JSONResponse:
    """The loop-lag samples so far, in seconds."""
    return JSONResponse(list(_state["lag"]))


app = Starlette(
    routes=[
        Route("/put", put, methods=["POST"]),
        Route("/state", state),
        Route("/lag/start", lag_start, methods=["POST"]),
        Route("/lag", lag),
    ],
    lifespan=lifespan,
)
