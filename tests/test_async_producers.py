"""SpoolHandler and SpoolProcessor called from coroutines: the event loop is never blocked."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from spoolkit import Spool, SpoolHandler, SpoolProcessor
from spoolkit.errors import SpoolFull
from spoolkit.testing import MemorySink

LIMIT = 4096


def _full_spool(path: Path) -> Spool:
    spool = Spool(path, MemorySink(), max_bytes=LIMIT, consume=False, serializer="json")
    n = 0
    while True:
        try:
            spool.put({"fill": n, "pad": "x" * 200}, timeout=0)
        except SpoolFull:
            return spool
        n += 1


class ThreadSpool:
    """A spool-like object whose put may wait on I/O (as with fsync="always"): it notes the
    thread each put runs on."""

    cheap_puts = False

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.threads: list[str] = []

    def put(self, item: Any, timeout: float | None = None) -> None:
        self.threads.append(threading.current_thread().name)
        self.items.append(item)


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    log = logging.getLogger(name)
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    return log


def test_handler_in_a_coroutine_does_not_wait_for_room(tmp_path: Path) -> None:
    """On a loop, emit into a full spool drops at once (counted) instead of waiting the
    handler's put_timeout (5 s here) with the loop stopped."""
    spool = _full_spool(tmp_path / "s")
    handler = SpoolHandler(spool, put_timeout=5)
    log = _logger(handler, "test.async.full")

    async def main() -> float:
        start = time.monotonic()
        log.info("from a coroutine")
        return time.monotonic() - start

    try:
        assert asyncio.run(main()) < 2.5
        assert handler.dropped == 1
    finally:
        log.removeHandler(handler)
        spool.stop(drain=False)


def test_handler_hands_io_puts_off_the_loop_in_order(tmp_path: Path) -> None:
    """On a loop, a spool whose put may wait on I/O gets the records from the handler's own
    thread, in order; flush() (and close()) wait for them."""
    spool = ThreadSpool()
    handler = SpoolHandler(spool)
    log = _logger(handler, "test.async.offload")

    async def main() -> None:
        for i in range(50):
            log.info("m%d", i)

    asyncio.run(main())
    handler.flush()  # waits for the puts handed off the loop
    assert [r["message"] for r in spool.items] == [f"m{i}" for i in range(50)]
    handler.close()
    log.removeHandler(handler)
    assert set(spool.threads) == {t for t in spool.threads if t.startswith("spoolkit-producer")}
    log.info("off the loop")  # not a coroutine: the put runs on the caller's thread


def test_handler_off_the_loop_is_unchanged() -> None:
    """Off any loop, a put runs on the calling thread, as before."""
    spool = ThreadSpool()
    handler = SpoolHandler(spool)
    log = _logger(handler, "test.async.plain")
    log.info("plain")
    log.removeHandler(handler)
    assert spool.threads == [threading.current_thread().name]


def test_processor_in_a_coroutine_does_not_wait_for_room(tmp_path: Path) -> None:
    """SpoolProcessor called on a loop with a full spool drops at once (counted)."""
    spool = _full_spool(tmp_path / "s")
    proc = SpoolProcessor(spool, put_timeout=5)

    async def main() -> float:
        start = time.monotonic()
        proc(None, "info", {"event": "e", "pad": "x" * 200})
        return time.monotonic() - start

    try:
        assert asyncio.run(main()) < 2.5
        assert proc.dropped == 1
    finally:
        spool.stop(drain=False)


def test_processor_hands_io_puts_off_the_loop() -> None:
    """SpoolProcessor on a loop with an I/O-bound spool puts from its own thread."""
    spool = ThreadSpool()
    proc = SpoolProcessor(spool)

    async def main() -> None:
        for i in range(20):
            proc(None, "info", {"event": f"e{i}"})

    asyncio.run(main())
    proc.close()
    assert [e["event"] for e in spool.items] == [f"e{i}" for i in range(20)]
    assert all(t.startswith("spoolkit-producer") for t in spool.threads)


def test_structlog_ainfo_spools(tmp_path: Path) -> None:
    """structlog's `await log.ainfo(...)` spools the event (the processors run off the loop)."""
    sink = MemorySink()
    spool = Spool(tmp_path / "s", sink, serializer="json", batch_interval=0)
    spool.start()
    log = structlog.wrap_logger(
        structlog.PrintLogger(),
        processors=[SpoolProcessor(spool, drop=True)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )

    async def main() -> None:
        await log.ainfo("hello", user=7)
        await log.adebug("filtered out")
        await spool.aflush(10)

    try:
        asyncio.run(main())
    finally:
        spool.stop()
    assert sink.items == [{"event": "hello", "user": 7}]


@pytest.mark.parametrize("n", [200])
def test_handler_in_coroutines_with_room_stores_everything(tmp_path: Path, n: int) -> None:
    """With room, records logged from many coroutines are all stored (the loop path only
    skips waiting, never a record)."""
    sink = MemorySink()
    spool = Spool(tmp_path / "s", sink, serializer="json", batch_interval=0)
    spool.start()
    handler = SpoolHandler(spool)
    log = _logger(handler, "test.async.many")

    async def one(i: int) -> None:
        await asyncio.sleep(0)
        log.info("r%d", i)

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(n)))

    try:
        asyncio.run(main())
        assert spool.flush(10)
    finally:
        log.removeHandler(handler)
        spool.stop()
    assert sorted(r["message"] for r in sink.items) == sorted(f"r{i}" for i in range(n))
