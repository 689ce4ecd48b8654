"""Small helpers shared by the benchmark scripts: timing, tables, result files, and the
end-to-end Spool run of spool_bench and redis_bench."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from spoolkit import Record, Spool

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

ITEM = {"level": "info", "msg": "user logged in", "user": 12345, "ok": True}
BATCH = 500

LOG_RECORD = {
    "timestamp": "2024-05-01T12:00:00.123456Z",
    "level": "INFO",
    "logger": "app.payments",
    "message": "user logged in",
    "module": "views",
    "function": "login",
    "line": 42,
    "process": 1234,
    "thread": 5678,
    "exception": None,
    "stack": None,
    "extra": {"user": 12345, "ok": True},
}
"""A log record as SpoolHandler stores it: what the sink benchmarks send."""


class Counter:
    """Records a test server received, counted from its handler threads."""

    def __init__(self) -> None:
        self.records = 0
        self.lock = threading.Lock()


def rate(n: int, fn: Callable[[], Any]) -> float:
    """Run ``fn`` once and return ``n`` divided by the seconds it took."""
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def save(name: str, data: dict[str, Any]) -> str:
    """Write ``benchmarks/results/<name>.json`` with machine facts; return its path."""
    os.makedirs(RESULTS, exist_ok=True)
    data = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        **data,
    }
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    return path


def noop(batch: Sequence[Record]) -> None:
    """The fastest sink there is."""


def end_to_end(n: int, workers: int, use_put_many: bool, backend: str | None = None) -> float:
    """Records/s from the first put of ``n`` records until flush() says all were delivered."""
    with tempfile.TemporaryDirectory() as d:
        spool = Spool(d, noop, workers=workers, batch_size=BATCH, batch_interval=0, backend=backend)
        spool.start()
        t0 = time.perf_counter()
        if use_put_many:
            for i in range(0, n, BATCH):
                spool.put_many([ITEM] * min(BATCH, n - i))
        else:
            put = spool.put
            for _ in range(n):
                put(ITEM)
        assert spool.flush(600)
        elapsed = time.perf_counter() - t0
        assert spool.stats().delivered == n
        spool.stop()
    return n / elapsed
