"""Small helpers shared by the benchmark scripts: timing, tables, result files."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


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
