"""The application process of ``spoolkit demo`` (run as ``python -m spoolkit.tools.demo_app``).

It logs records ``0 .. N-1`` through a :class:`spoolkit.SpoolHandler` whose spool delivers
them to the demo's HTTP collector. Each record carries its number in ``extra={"seq": n}``.

After each logging call returns, the number of records logged so far is stored in an 8-byte
counter file shared with the parent through a memory map: it survives ``SIGKILL`` (it is in
the page cache), so a restarted app resumes where the killed one stopped. A kill between a
logging call and the counter update logs that one record again: a duplicate, never a gap.

With ``--kill-at K`` the app prints ``checkpoint`` once ``K`` records are logged, keeps
logging, and after the last record waits for its stdin to close: it never exits by itself, the
parent kills it. Without it, the app logs what is left, waits until the spool has delivered
everything, and prints one JSON line with its counters.
"""

from __future__ import annotations

import argparse
import json
import logging
import mmap
import os
import struct
import sys
from typing import Any

from spoolkit import RetryPolicy, SpoolHandler

COUNTER = struct.Struct("<Q")


class Counter:
    """An 8-byte counter in a file, updated through a shared memory map."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size < COUNTER.size:
                os.ftruncate(fd, COUNTER.size)
            self._map = mmap.mmap(fd, COUNTER.size)
        finally:
            os.close(fd)

    @property
    def value(self) -> int:
        """The stored count."""
        return int(COUNTER.unpack_from(self._map)[0])

    @value.setter
    def value(self, n: int) -> None:
        COUNTER.pack_into(self._map, 0, n)

    def close(self) -> None:
        """Unmap the file."""
        self._map.close()


def read_counter(path: str) -> int:
    """The count in a counter file (0 when it does not exist yet)."""
    try:
        with open(path, "rb") as f:
            data = f.read(COUNTER.size)
    except FileNotFoundError:
        return 0
    return int(COUNTER.unpack(data)[0]) if len(data) == COUNTER.size else 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m spoolkit.tools.demo_app")
    parser.add_argument("--spool", required=True, help="the spool directory")
    parser.add_argument("--url", required=True, help="the collector's URL")
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--counter", required=True, help="the shared counter file")
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=300.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the app; returns its exit status."""
    args = _parse(argv)
    handler = SpoolHandler(
        args.spool,
        sink=args.url,
        spool_options={
            "workers": 2,
            "batch_size": 500,
            "batch_interval": 0.05,
            "serializer": "json",
            # the collector refuses a share of requests on purpose: retry, quickly, for ever
            "retry": RetryPolicy(max_attempts=100_000, initial_wait=0.02, max_wait=0.2),
        },
        close_timeout=args.timeout,
    )
    log = logging.getLogger("demo.app")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    counter = Counter(args.counter)
    start = counter.value
    for seq in range(start, args.records):
        log.info("order %d processed", seq, extra={"seq": seq, "amount": seq % 1000})
        counter.value = seq + 1
        if seq + 1 == args.kill_at:
            print("checkpoint", flush=True)
    if args.kill_at is not None:
        if args.kill_at > args.records:
            print("checkpoint", flush=True)
        sys.stdin.read()  # the parent kills this process; it never gets past this line
    delivered = handler.spool.flush(args.timeout)
    stats = handler.spool.stats()
    log.removeHandler(handler)
    handler.close()
    summary: dict[str, Any] = {
        "resumed_from": start,
        "flushed": delivered,
        "dropped": handler.dropped,
        "errors": handler.errors,
        "retried": stats.retried,
        "dead_lettered": stats.dead_lettered,
        "backlog": stats.backlog,
    }
    print(json.dumps(summary), flush=True)
    counter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
