"""The logs the kill -9 consumer children of the stream backend tests write: ``B id id...``
per delivered batch, ``H id id...`` for the batch a child hangs in (to be killed there)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def poll(check: Callable[[], T | None], within: float) -> T:
    """``check()``'s first result that is not None, polled every 50 ms; AssertionError after
    ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()
        if result is not None:
            return result
        time.sleep(0.05)  # polling a file or the server, not waiting for an event
    raise AssertionError(f"not done within {within}s")


def lines(log: Path) -> list[str]:
    """The complete lines of ``log`` (none if it does not exist yet)."""
    return log.read_text().split("\n")[:-1] if log.exists() else []


def hung_batch(log: Path) -> list[str] | None:
    """The ids of the batch the child hangs in, once it said so."""
    return next((line.split()[1:] for line in lines(log) if line.startswith("H ")), None)


def delivered(log: Path) -> list[str]:
    """The ids of every batch the child's sink accepted."""
    return [i for line in lines(log) if line.startswith("B ") for i in line.split()[1:]]
