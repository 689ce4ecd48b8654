"""An application whose only log handler is a SpoolHandler, with a collector that stays down.

Usage: python tests/apps_exit/last_resort.py SPOOL MODE

MODE ``bare``: the root logger has only the SpoolHandler; ``app-handler``: the app also logs
to stdout with a StreamHandler (which shows spoolkit's warnings). The sink fails every call with
TransientError; the script waits for 6 calls (5 retries, 0.05 s apart), prints
``CALLS <n>`` and ends normally (the handler's close gives up after 0.5 s).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence

from spoolkit import Record, RetryPolicy, SpoolHandler
from spoolkit.errors import TransientError


class Down:
    """A collector that is down."""

    calls = 0

    def write(self, batch: Sequence[Record]) -> None:
        """Fail."""
        Down.calls += 1
        raise TransientError("collector down")


def main() -> None:
    """Log one record and let the spool retry."""
    path, mode = sys.argv[1], sys.argv[2]
    retry = RetryPolicy(initial_wait=0.05, multiplier=1, jitter=0)
    handler = SpoolHandler(
        path,
        sink=Down(),
        close_timeout=0.5,
        spool_options={"retry": retry, "batch_interval": 0, "workers": 1},
    )
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    if mode == "app-handler":
        root.addHandler(logging.StreamHandler(sys.stdout))
    logging.getLogger("app").info("hello")
    deadline = time.monotonic() + 60
    while Down.calls < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    print("CALLS", Down.calls, flush=True)


if __name__ == "__main__":
    main()
